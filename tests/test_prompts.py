import pytest

from grace.model.prompts import TEMPLATES, PromptBuilder, get_template


def test_plain_template_spans_hold_exactly_the_text(tiny_encoder):
    tok = tiny_encoder.tokenizer
    for name in TEMPLATES:
        b = PromptBuilder(tok, name)
        assert not b.use_chat
        p = b.build("Machu Picchu is in Peru.")
        assert tok.decode(p.ids[p.text_start:p.text_end]).strip() == "Machu Picchu is in Peru."
        assert p.ids[0] == tok.bos_token_id
        assert tok.decode(p.ids[p.text_end:]).strip() == TEMPLATES[name].cue
        assert p.segments.count("text") == p.text_end - p.text_start
        assert set(p.segments[:p.text_start]) == {"instruction"}


def test_chat_template_spans(tiny_chat_dir):
    from grace.model.encoder import GraceEncoder

    enc = GraceEncoder.from_pretrained(str(tiny_chat_dir), device="cpu", prompt="paper")
    assert enc.prompts.use_chat
    p = enc.prompts.build("hello world")
    tok = enc.tokenizer
    assert tok.decode(p.ids[p.text_start:p.text_end]) == "hello world"
    before, after = tok.decode(p.ids[:p.text_start]), tok.decode(p.ids[p.text_end:])
    assert "<|user|>" in before and TEMPLATES["paper"].instruction in before
    assert after.startswith("<|end|>") and "<|assistant|>" in after and after.endswith("Analysis:")
    # the chat template's own <bos> is the only one
    assert p.ids.count(tok.bos_token_id) == 1


def test_long_text_is_truncated_with_a_warning(tiny_encoder):
    b = PromptBuilder(tiny_encoder.tokenizer, "paper")
    with pytest.warns(UserWarning, match="truncated to 5 tokens"):
        p = b.build("word " * 200, max_text_tokens=5)
    assert p.truncated and p.text_end - p.text_start == 5


def test_template_files(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("Summarise:\n{text}\nSummary:", encoding="utf-8")
    t = get_template(str(f))
    assert t.instruction == "Summarise:\n" and t.cue == "\nSummary:"
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder", encoding="utf-8")
    with pytest.raises(ValueError, match="placeholder"):
        get_template(str(bad))
    with pytest.raises(ValueError, match="Unknown prompt 'nope'"):
        get_template("nope")
