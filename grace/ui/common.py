"""What the tabs share: the app's data folders, the model bar and the encoder cache."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import gradio as gr

from grace.backbone import DEFAULT_MODEL
from grace.jobs import JobManager
from grace.paths import data_dir
from grace.pooling import POOLINGS
from grace.prompts import DEFAULT_TEMPLATE, TEMPLATES

MAX_DOCS = 50
MAX_CHARS = 20_000  # per text; longer pastes are cut with a visible note


def jobs() -> JobManager:
    return JobManager(data_dir() / "runs")


@dataclass
class ModelSettings:
    model: str = DEFAULT_MODEL
    adapter: str = "(none)"
    prompt: str = DEFAULT_TEMPLATE
    rationale: bool = True
    max_new_tokens: int = 32
    pooling: str = "mean"
    layer: int = -1
    sample: bool = False
    seed: int = 0
    dtype: str = "float32"

    def adapter_path(self) -> str | None:
        """Adapters are chosen by run name from the app's own runs folder, never by a free path."""
        if not self.adapter or self.adapter == "(none)":
            return None
        run = jobs().run_dir(self.adapter)  # validates the name
        if not (run / "adapter").is_dir():
            raise ValueError(f"Run '{self.adapter}' has no adapter yet.")
        return str(run / "adapter")

    def encoder(self, with_adapter: bool = True):
        """The shared encoder for these settings (loaded once)."""
        return get_encoder(self.model, self.adapter_path() if with_adapter else None, self.prompt,
                           None if self.dtype == "float32" else self.dtype)

    def encode_kwargs(self, **over) -> dict:
        kw = dict(rationale=self.rationale, max_new_tokens=int(self.max_new_tokens), pooling=self.pooling,
                  layer=int(self.layer), do_sample=bool(self.sample), seed=int(self.seed) if self.sample else None)
        kw.update(over)
        return kw


_ENCODERS: dict = {}
_LOCK = threading.Lock()


def get_encoder(model: str, adapter: str | None = None, prompt: str | None = None, dtype: str | None = None):
    """Encoders are loaded once per (model, adapter, dtype) and shared; the prompt is per call."""
    from grace.encoder import GraceEncoder
    from grace.models import load_encoder
    from grace.prompts import PromptBuilder

    key = (model, adapter, dtype)
    with _LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = load_encoder(model, adapter=adapter, dtype=dtype)
        enc = _ENCODERS[key]
    if isinstance(enc, GraceEncoder) and prompt and enc.prompts.template.name != prompt:
        view = GraceEncoder.__new__(GraceEncoder)
        view.__dict__.update(enc.__dict__)
        view.prompts = PromptBuilder(enc.tokenizer, prompt)
        return view
    return enc


def model_bar(default_model: str):
    """The settings row shared by every tab; returns its components in ModelSettings order."""
    with gr.Accordion("Model settings", open=False):
        with gr.Row():
            model = gr.Textbox(value=default_model, label="Backbone",
                               info="'default' = embedded Gemma 3 270M; or an HF id / local folder", scale=2)
            adapter = gr.Dropdown(choices=["(none)"] + jobs().adapters(), value="(none)", label="Adapter (finished runs)",
                                  allow_custom_value=False, scale=1)
            prompt = gr.Dropdown(choices=list(TEMPLATES), value=DEFAULT_TEMPLATE, label="Prompt template", scale=1)
        with gr.Row():
            rationale = gr.Checkbox(value=True, label="Generate a rationale")
            max_new = gr.Slider(4, 128, value=32, step=4, label="Max rationale tokens")
            pooling = gr.Dropdown(choices=list(POOLINGS), value="mean", label="Pooling")
            layer = gr.Number(value=-1, precision=0, label="Layer (-1 last)")
            sample = gr.Checkbox(value=False, label="Sample (else greedy)")
            seed = gr.Number(value=0, precision=0, label="Seed")
            dtype = gr.Dropdown(choices=["float32", "auto"], value="float32", label="Precision",
                                info="auto: bfloat16 where the CPU has native bf16 (about 2.4x faster)")
    return [model, adapter, prompt, rationale, max_new, pooling, layer, sample, seed, dtype]


def settings_from(*values) -> ModelSettings:
    return ModelSettings(*values)


def one_line(exc: BaseException) -> str:
    """A readable one-line message for the UI (never a traceback)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:400]
