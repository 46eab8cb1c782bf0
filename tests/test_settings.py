"""One settings object: every EncodeSettings field reaches the encoder from every command line,
the app's panel and the rationale cache key, each at load (``EncodeSettings.LOAD``, through the one
``load_encoder``) or on every ``encode`` call (the rest, the prompt included); the package layout
keeps its import rules."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from grace.model.settings import EncodeSettings

ROOT = Path(__file__).resolve().parents[1]


def _changed(tmp_path) -> EncodeSettings:
    """A value other than the default for every field (built from the fields, so a new field is
    covered without editing this test)."""
    special = {"model": "some-org/some-model", "adapter": str(tmp_path), "prompt": "paper", "dtype": "auto",
               "device": "cpu", "backend": "vllm", "pooling": "max", "seed": 7, "layer": -2}
    d = EncodeSettings()
    values = {}
    for f in dataclasses.fields(EncodeSettings):
        old = getattr(d, f.name)
        if f.name in special:
            values[f.name] = special[f.name]
        elif isinstance(old, bool):
            values[f.name] = not old
        elif isinstance(old, int):
            values[f.name] = old + 3
        elif isinstance(old, float):
            values[f.name] = round(old * 0.9, 4)
        else:
            raise AssertionError(f"test_settings: give field {f.name!r} a non-default value")
    s = EncodeSettings(**values)
    assert all(getattr(s, n) != getattr(d, n) for n in EncodeSettings.names())
    return s


def _argv(s: EncodeSettings) -> list[str]:
    d, argv = EncodeSettings(), []
    for name in EncodeSettings.names():
        v, flag = getattr(s, name), "--" + name.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + name.replace("_", "-"))
        elif v != getattr(d, name):
            argv += [flag, str(v)]
    return argv


class RecordingEncoder:
    """Stands in for a loaded encoder: records the settings each call gets."""

    embedding_dim = 8
    model = None

    def __init__(self, settings):
        self.loaded_with, self.calls = settings, []

    def encode(self, texts, settings=None, *, return_details=False, **kw):
        self.calls.append(settings)
        rng = np.random.default_rng(len(texts))
        embs = rng.normal(size=(len(texts), 8)).astype(np.float32)
        embs /= np.linalg.norm(embs, axis=1, keepdims=True)
        if not return_details:
            return embs
        from grace.model.embedding import EncodeResult

        return [EncodeResult(text=t, rationale="r", tokens=["t"], segments=["text"], embedding=e,
                             token_ids=[1], token_states=e[None, :], pooled_mask=np.ones(1, bool), pooled=e)
                for t, e in zip(texts, embs)]


@pytest.mark.parametrize("command", ["encode", "similarity", "eval"])
def test_every_field_on_the_command_line_reaches_the_encoder(command, tmp_path, monkeypatch):
    from grace.cli import main
    from grace.model import loading

    made = []
    monkeypatch.setattr(loading, "load_encoder", lambda s: made.append(RecordingEncoder(s)) or made[-1])
    if command == "eval":
        from mteb.mocks.mock_tasks.sts import MockSTSTask

        from grace.evaluation import mteb_adapter

        monkeypatch.setattr(mteb_adapter, "resolve_tasks", lambda *a, **k: [MockSTSTask()])
    want = _changed(tmp_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\nanother text\n")
    extra = {"encode": ["--input", str(texts), "--output", str(tmp_path / "o.jsonl")],
             "similarity": ["--query", "q", "--doc", "d1", "--doc", "d2"],
             "eval": ["--output", str(tmp_path / "r.json")]}[command]
    assert main([command, *extra, *_argv(want)]) == 0
    enc = made[0]
    assert enc.loaded_with == want  # the load-time fields chose the encoder
    assert enc.calls and all(c == want for c in enc.calls)  # and every field reached each encode call


@pytest.mark.parametrize("prompt", ["paper", "think"])
def test_every_field_in_the_app_reaches_the_encoder_from_each_tab(prompt, tmp_path, monkeypatch):
    """Explore, Map and Evaluate: one shared encoder per load fingerprint, loaded with the panel's
    load-time fields; every other field, the prompt included, reaches each of its encode calls."""
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    from grace.model import loading
    from grace.ui import common
    from grace.ui.evaluate_tab import run_eval
    from grace.ui.explore import run_compare
    from grace.ui.map_tab import MODES, SOURCES, make_map

    made = []
    monkeypatch.setattr(loading, "load_encoder", lambda s: made.append(RecordingEncoder(s)) or made[-1])
    monkeypatch.setattr(common.ENGINE, "_encoders", common.OrderedDict())
    changed = _changed(tmp_path).with_(prompt=prompt)
    fields = [n for n in common._panel_fields() if n != "adapter"]
    want = common.APP_DEFAULTS.with_(**{n: getattr(changed, n) for n in fields})
    values = common.panel_values(want)
    for _ in run_compare(None, "a query", "one document\nanother document", "raw cosine", *values):
        pass
    assert make_map(None, SOURCES[1], None, MODES[0], "PCA", "", *values, progress=lambda *a, **k: None
                    )[0].startswith("100 texts mapped. Click a point for its neighbours")
    assert "average" in run_eval(None, "quick", ["WordNetRetrieval"], *values, progress=lambda *a, **k: None)[0]
    grace = [e for e in made if e.loaded_with.model != "minilm"]
    assert len(grace) == 1 and grace[0].loaded_with == want  # one load, for all three tabs
    assert len(grace[0].calls) > 3 and all(c == want for c in grace[0].calls)


def test_the_prompt_is_chosen_per_call(tiny_model_dir):
    """One loaded encoder serves every prompt: a call's prompt gives what an encoder loaded with
    that prompt gives, and its rationale cache key follows it."""
    from grace.model.loading import load_encoder

    s = EncodeSettings(model=str(tiny_model_dir), device="cpu", max_new_tokens=5)
    texts = ["Machu Picchu is in Peru.", "Stocks fell sharply."]
    enc = load_encoder(s)
    default = enc.encode(texts, s, return_details=True)
    per_call = enc.encode(texts, s.with_(prompt="paper"), return_details=True)
    loaded = load_encoder(s.with_(prompt="paper")).encode(texts, return_details=True)  # its own prompt
    assert [r.tokens for r in per_call] == [r.tokens for r in loaded] != [r.tokens for r in default]
    assert [r.rationale for r in per_call] == [r.rationale for r in loaded]
    assert np.allclose([r.embedding for r in per_call], [r.embedding for r in loaded], atol=1e-5)
    assert np.allclose(enc.encode(texts, prompt="paper"), [r.embedding for r in per_call], atol=1e-5)  # as an override
    assert enc.cache_key(s.with_(prompt="paper")) != enc.cache_key(s)
    with pytest.raises(TypeError, match="adapter chose the encoder when it was loaded"):
        enc.encode(texts, adapter="grace-wordnet-sup")


def test_the_prompt_reaches_the_encoder_from_the_command_line(tiny_model_dir, tmp_path):
    import json

    from grace.cli import main
    from grace.model.loading import load_encoder

    f, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    f.write_text("Machu Picchu is in Peru.\n")
    argv = ["encode", "--input", str(f), "--output", str(out), "--model", str(tiny_model_dir), "--device", "cpu",
            "--max-new-tokens", "5", "--prompt", "keywords"]
    assert main(argv) == 0
    row = json.loads(out.read_text())
    want = load_encoder(model=str(tiny_model_dir), device="cpu").encode(
        [row["text"]], prompt="keywords", max_new_tokens=5, return_details=True)[0]
    assert row["rationale"] == want.rationale
    assert np.allclose(row["embedding"], want.embedding, atol=1e-5)
    assert not np.allclose(row["embedding"], load_encoder(model=str(tiny_model_dir), device="cpu").encode(
        row["text"], max_new_tokens=5), atol=1e-4)  # not the default prompt's embedding


def test_direct_forward_settings_follow_one_rule():
    s = EncodeSettings(pooling="max", max_new_tokens=16)
    assert s.direct() == s.with_(rationale=False)
    assert EncodeSettings(pooling="rationale-mean").direct().pooling == "text-mean"


def test_the_load_fingerprint_holds_the_load_fields_alone(tmp_path):
    base = EncodeSettings()
    changed = _changed(tmp_path)
    for name in EncodeSettings.names():
        other = base.with_(**{name: getattr(changed, name)})
        assert (other.load_fingerprint() != base.load_fingerprint()) == (name in EncodeSettings.LOAD), name
    minilm = EncodeSettings(model="minilm")
    assert minilm.with_(dtype="auto", prompt="paper").load_fingerprint() == minilm.load_fingerprint()


def test_every_field_has_one_role():
    roles = EncodeSettings.LOAD + EncodeSettings.RATIONALE + EncodeSettings.EMBEDDING + EncodeSettings.SPEED
    assert sorted(roles) == sorted(EncodeSettings.names())


def test_the_app_panel_covers_every_field(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path))
    from grace.ui.common import APP_DEFAULTS, NOT_IN_PANEL, _panel_fields, panel_values, settings_from

    assert sorted(_panel_fields() + list(NOT_IN_PANEL)) == sorted(EncodeSettings.names())
    changed = _changed(tmp_path)
    want = APP_DEFAULTS.with_(**{n: getattr(changed, n) for n in _panel_fields() if n not in ("adapter", "backend")})
    assert settings_from(*panel_values(want)) == want


def test_cache_key_follows_the_rationale_fields(tiny_encoder, tmp_path):
    base = EncodeSettings()
    key = tiny_encoder.cache_key(base)
    changed = _changed(tmp_path)
    for name in EncodeSettings.RATIONALE:
        assert tiny_encoder.cache_key(base.with_(**{name: getattr(changed, name)})) != key, name
    for name in EncodeSettings.EMBEDDING + EncodeSettings.SPEED:
        assert tiny_encoder.cache_key(base.with_(**{name: getattr(changed, name)})) == key, name


def test_encode_refuses_an_unknown_setting(tiny_encoder):
    with pytest.raises(TypeError, match="Unknown encode setting.*do_sample"):
        tiny_encoder.encode("a text", do_sample=True)


def test_training_run_embeds_with_the_shared_defaults():
    from grace.training.config import GraceConfig

    s = GraceConfig(data="x").encode_settings()
    d = EncodeSettings()
    assert (s.repetition_penalty, s.no_repeat_ngram, s.pooling, s.layer) == \
        (d.repetition_penalty, d.no_repeat_ngram, d.pooling, d.layer)


# -- layout -----------------------------------------------------------------------------------
def _imports() -> dict[str, set[str]]:
    """Every module of grace/ and analysis/ with the project modules it imports (anywhere in it)."""
    graph = {}
    for path in list((ROOT / "grace").rglob("*.py")) + list((ROOT / "analysis").rglob("*.py")):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [f"{target}.{a.name}" for a in node.names]
                found.update(n for n in [target] + names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[mod] = found
    modules = set(graph)
    return {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}


def test_the_method_imports_no_interface_and_no_analysis():
    graph = _imports()
    method = ("grace.model", "grace.training", "grace.evaluation", "grace.files")
    banned = ("grace.cli", "grace.ui", "analysis")
    bad = {m: sorted(t for t in ts if t.startswith(banned)) for m, ts in graph.items() if m.startswith(method)}
    assert not {m: b for m, b in bad.items() if b}
    model_bad = {m: sorted(t for t in ts if t.startswith(("grace.training", "grace.evaluation")))
                 for m, ts in graph.items() if m.startswith("grace.model")}
    assert not {m: b for m, b in model_bad.items() if b}


def test_no_import_cycles_between_modules():
    graph = _imports()
    # packages' __init__ files re-export; a module importing its own package is not a cycle of code
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in edges.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if not state.get(t):
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [m])


def test_pyproject_and_requirements_pin_the_same_packages():
    """requirements.txt (Spaces, the README) and pyproject.toml (pip install .) must not drift."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    reqs = {line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().split("\n")}
    assert pins == reqs - {""}
