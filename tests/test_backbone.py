import threading

import pytest
import torch

from grace.model.backbone import BackboneError, load_backbone, publish_dir


def test_offline_unknown_model_gives_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as exc:
        load_backbone("no-such-org/no-such-model", device="cpu")
    msg = str(exc.value)
    assert "no-such-org/no-such-model" in msg and "HF_HUB_OFFLINE" in msg and "\n" not in msg


def test_missing_adapter_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(BackboneError, match="Adapter folder not found"):
        load_backbone(str(tiny_model_dir), adapter=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no PEFT adapter"):
        load_backbone(str(tiny_model_dir), adapter=str(tmp_path / "empty"))


def _save_lora(model_dir, out, seed=0):
    from peft import LoraConfig, get_peft_model

    b = load_backbone(str(model_dir), device="cpu")
    peft = get_peft_model(b.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    peft.save_pretrained(out)
    return out


def test_adapter_changes_embeddings(tiny_model_dir, tmp_path):
    from grace.model.encoder import GraceEncoder

    adapter = _save_lora(tiny_model_dir, tmp_path / "adapter")
    base = GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    tuned = GraceEncoder.from_pretrained(str(tiny_model_dir), adapter=str(adapter), device="cpu")
    x = ["Machu Picchu is in Peru."]
    assert not torch.allclose(torch.tensor(base.encode(x, rationale=False)),
                              torch.tensor(tuned.encode(x, rationale=False)), atol=1e-4)


def test_an_adapter_is_merged_for_inference_and_encodes_as_the_unmerged_one(tiny_model_dir, tmp_path):
    """load_backbone folds a float32 adapter into the weights (no PeftModel: decoding runs no LoRA
    matmuls); rationales and embeddings equal the unmerged PeftModel's."""
    from peft import PeftModel

    from grace.model.encoder import GraceEncoder
    from grace.model.settings import EncodeSettings

    adapter = _save_lora(tiny_model_dir, tmp_path / "adapter")
    merged = load_backbone(str(tiny_model_dir), adapter=str(adapter), device="cpu")
    unmerged = load_backbone(str(tiny_model_dir), adapter=str(adapter), device="cpu", merge=False)
    assert not isinstance(merged.model, PeftModel) and isinstance(unmerged.model, PeftModel)
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    s = EncodeSettings(model=str(tiny_model_dir), adapter=str(adapter), device="cpu", max_new_tokens=8)
    texts = ["Machu Picchu is in Peru.", "Stocks fell sharply."]
    a, b = GraceEncoder(merged, s), GraceEncoder(unmerged, s)
    ra, rb = a.encode(texts, return_details=True), b.encode(texts, return_details=True)
    assert [x.rationale for x in ra] == [x.rationale for x in rb] and any(x.rationale for x in ra)
    for x, y in zip(ra, rb):
        assert torch.allclose(torch.tensor(x.embedding), torch.tensor(y.embedding), atol=1e-5)


def test_adapter_for_another_model_is_refused(tiny_model_dir, tmp_path):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "wide", hidden_size=48)
    adapter = _save_lora(other, tmp_path / "adapter")
    with pytest.raises(BackboneError, match="does not fit this model"):
        load_backbone(str(tiny_model_dir), adapter=str(adapter))


def test_concurrent_publishers_leave_one_complete_folder(tmp_path):
    target = tmp_path / "cache" / "model"
    errors = []

    def write(folder):
        for i in range(20):
            (folder / f"part{i}").write_text(str(i) * 1000)

    def run():
        try:
            publish_dir(target, write)
        except Exception as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert sorted(p.name for p in target.iterdir()) == sorted(f"part{i}" for i in range(20))
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no temp folders left
