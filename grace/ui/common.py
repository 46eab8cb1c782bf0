"""What the tabs share: the app's data folders, the model bar and the encoder cache (``encoder_for``)."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from grace.serving.engine import PUBLIC_BATCH_TOKENS, Engine
from grace.serving.tickets import CancelFlags
from grace.training.jobs import JobManager
from grace.files.paths import data_dir
from grace.model.pooling import POOLINGS
from grace.model.settings import DTYPES, EncodeSettings
from grace.model.prompts import TEMPLATES

MAX_DOCS = 50
MAX_CHARS = 20_000  # per text; longer pastes are cut with a visible note


def jobs() -> JobManager:
    return JobManager(data_dir() / "runs")


# The panel's defaults: EncodeSettings' own (the rationale length a run trains with), with a fixed
# seed for sampled rationales.
APP_DEFAULTS = EncodeSettings(seed=0, dtype="float32")

# EncodeSettings fields the panel does not show, each with its reason (tested: every other field
# has a control, so a new field cannot be forgotten here).
NOT_IN_PANEL = {
    "device": "the app runs on the machine it was started on (CUDA when present)",
    "trust_remote_code": "a public app never runs a visitor-chosen model's own code",
    "backend": "vLLM needs a GPU; a Space's CPU tier uses transformers",
    "batch_size": "the app encodes small requests; the default batch fits them",
}


def _panel_fields() -> list[str]:
    return [n for n in EncodeSettings.names() if n not in NOT_IN_PANEL]


def settings_from(*values) -> EncodeSettings:
    """The panel's component values (in ``_panel_fields()`` order) as ``EncodeSettings``.

    The adapter is chosen by run name from the app's own runs folder, never by a free path."""
    v = dict(zip(_panel_fields(), values))
    v["model"] = check_model_choice(v.get("model", "default"))
    name = v.get("adapter")
    adapter = None
    if name and name.startswith(SHIPPED_PREFIX):
        shipped = shipped_adapters()
        if name not in shipped:
            raise ValueError(f"There is no shipped adapter {name[len(SHIPPED_PREFIX):]!r}.")
        adapter = str(shipped[name])
    elif name and name != "(none)":
        if not isinstance(name, str) or name not in jobs().adapters():
            try:
                run_exists = jobs().run(name).has_config()
            except ValueError:
                run_exists = False
            if run_exists:
                raise ValueError(f"Run '{name}' has no adapter yet.")
            raise ValueError(f"There is no adapter {str(name)[:80]!r} here: choose one from the list "
                             "(shipped adapters and finished runs).")
        run = jobs().run_dir(name)
        if not (run / "adapter").is_dir():
            raise ValueError(f"Run '{name}' has no adapter yet.")
        adapter = str(run / "adapter")
    ints = ("max_new_tokens", "no_repeat_ngram", "layer", "seed")
    v = {k: (int(x) if k in ints and x is not None else x) for k, x in v.items()}
    v["adapter"] = adapter
    if not v.get("sample"):
        v["seed"] = None  # greedy rationales need no seed
    # the app offers its templates by name only: a prompt *file* is for the library and the CLI
    s = APP_DEFAULTS.with_(**v)
    if is_public():  # the page's bounds, on the server: a script may send any value
        from grace.serving.limits import check_public

        s = check_public(s)
    return s.validate(known_prompt_only=True)


def panel_values(settings: EncodeSettings = APP_DEFAULTS, adapter_run: str = "(none)") -> list:
    """The panel's values for ``settings`` (the inverse of ``settings_from``; the adapter by run name)."""
    return [adapter_run if n == "adapter" else getattr(settings, n) for n in _panel_fields()]


SHIPPED_PREFIX = "shipped: "  # run names cannot hold ':' or ' ', so a shipped name never shadows a run


def shipped_adapters() -> dict[str, Path]:
    """Adapters that come with the package (``grace/adapters/NAME``, each with a model card), by
    their label in the adapter list: a visitor compares base vs trained without training anything."""
    from grace.model.backbone import shipped_adapters as shipped

    return {SHIPPED_PREFIX + name: folder for name, folder in shipped().items()}


def adapter_choices(runs: list[dict] | None = None) -> list[str]:
    """The adapter list: none, the shipped adapters, then the app's finished runs (of ``runs``,
    ``JobManager.runs()``' listing, when the caller has one)."""
    return ["(none)"] + list(shipped_adapters()) + jobs().adapters(runs)


def adapter_name(settings: EncodeSettings) -> str | None:
    """A short name of the settings' adapter (for labels): the run's or the shipped folder's."""
    if not settings.adapter:
        return None
    p = Path(settings.adapter)
    return p.parent.name if p.name == "adapter" else p.name


MAX_BACKBONES = 2  # loaded causal LMs kept at once (MiniLM, small, is not counted)
PUBLIC_MODELS = ("default", "minilm")
def is_public() -> bool:
    """On a Hugging Face Space, or with GRACE_PUBLIC=1: visitors are strangers."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("GRACE_PUBLIC", "") == "1"


# All of the app's model work runs here (grace.serving); GRACE_ENGINE_TOKENS replaces the budget
ENGINE = Engine(max_backbones=MAX_BACKBONES, batch_tokens=PUBLIC_BATCH_TOKENS
                if is_public() and not os.environ.get("GRACE_ENGINE_TOKENS") else None)


def check_model_choice(model: str) -> str:
    """On a public app only the embedded models load (with the app's own runs' adapters): a free
    hub id or server folder would let a visitor fill the disk, the network and the memory.
    GRACE_ALLOW_ANY_MODEL=1, set by whoever runs the app, opens it up."""
    model = (model or "default").strip()
    if is_public() and model not in PUBLIC_MODELS and os.environ.get("GRACE_ALLOW_ANY_MODEL", "") != "1":
        raise ValueError(f"This public app serves only the embedded models ({', '.join(PUBLIC_MODELS)}); "
                         "whoever runs it can allow other models with GRACE_ALLOW_ANY_MODEL=1.")
    return model


def encoder_for(settings: EncodeSettings):
    """The app's shared encoder for these settings (``Engine.load``: loaded once per model and load
    fingerprint, the least recently used backbone out past ``MAX_BACKBONES``). Every other field,
    the prompt included, is honoured by each ``encode`` call, so pass the same settings there.
    Requests run it through ``ENGINE.encoder(encoder, ticket)``, never directly."""
    check_model_choice(settings.model)
    return ENGINE.load(settings)


def model_bar(default_model: str):
    """The settings panel shared by every tab: one control per ``EncodeSettings`` field (but those in
    ``NOT_IN_PANEL``); returns the components in ``_panel_fields()`` order."""
    d = APP_DEFAULTS
    controls = {}
    with gr.Accordion("Model settings", open=False):
        with gr.Row():
            if is_public() and os.environ.get("GRACE_ALLOW_ANY_MODEL", "") != "1":
                controls["model"] = gr.Dropdown(choices=list(PUBLIC_MODELS), value="default", label="Backbone",
                                                scale=2, info="'default' = embedded Gemma 3 270M; 'minilm' = the "
                                                "encoder baseline (this public app serves only these)")
            else:
                controls["model"] = gr.Textbox(value=default_model, label="Backbone", scale=2,
                                               info="'default' = embedded Gemma 3 270M; or an HF id / local folder")
            # a typed value reaches the server, which says why it is refused (a silent revert says nothing)
            controls["adapter"] = gr.Dropdown(choices=adapter_choices(), value="(none)",
                                              label="Adapter (shipped, or finished runs)",
                                              allow_custom_value=True, scale=1)
            controls["prompt"] = gr.Dropdown(choices=list(TEMPLATES), value=d.prompt, label="Prompt template", scale=1)
            controls["dtype"] = gr.Dropdown(choices=[x for x in DTYPES if x != "bfloat16"], value=d.dtype,
                                            label="Precision",
                                            info="auto: bfloat16 where the CPU has native bf16 (about 2.4x faster)")
        with gr.Row():
            controls["rationale"] = gr.Checkbox(value=d.rationale, label="Generate a rationale")
            controls["max_new_tokens"] = gr.Slider(4, 128, value=d.max_new_tokens, step=4, label="Max rationale tokens")
            controls["pooling"] = gr.Dropdown(choices=list(POOLINGS), value=d.pooling, label="Pooling")
            controls["layer"] = gr.Number(value=d.layer, precision=0, label="Layer (-1 last)")
        with gr.Row():
            controls["sample"] = gr.Checkbox(value=d.sample, label="Sample (else greedy)")
            controls["temperature"] = gr.Slider(0.05, 2.0, value=d.temperature, step=0.05, label="Temperature")
            controls["top_p"] = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="Top-p")
            controls["seed"] = gr.Number(value=d.seed, precision=0, label="Seed")
            controls["repetition_penalty"] = gr.Slider(1.0, 2.0, value=d.repetition_penalty, step=0.05,
                                                       label="Repetition penalty (1 = off)")
            controls["no_repeat_ngram"] = gr.Number(value=d.no_repeat_ngram, precision=0,
                                                    label="No-repeat n-gram (0 = off)")
    return [controls[name] for name in _panel_fields()]


MAX_UPLOAD_MB = 20  # every upload on a public Space (training data, map corpus, annotation import); the server's limit
LOCAL_MAX_UPLOAD_MB = 2000  # on one's own machine: a grace encode file of 100,000 texts is about 650 MB


def max_upload_mb() -> int:
    """The upload limit: MAX_UPLOAD_MB on a public Space, LOCAL_MAX_UPLOAD_MB on one's own machine."""
    return MAX_UPLOAD_MB if is_public() else LOCAL_MAX_UPLOAD_MB


def upload_path(upload) -> str:
    """The local path of an uploaded file, refused above ``max_upload_mb()`` with its size."""

    path = upload if isinstance(upload, str) else getattr(upload, "name", None)
    if not isinstance(path, str) or not Path(path).is_file():
        raise ValueError("The upload did not arrive: choose the file again.")
    if is_public() and not _in_upload_cache(path):  # a script may name any server path
        raise ValueError("Upload the file through the page.")
    size = Path(path).stat().st_size
    limit = max_upload_mb()
    if size > limit * 1_000_000:
        raise ValueError(f"The file is {size / 1e6:.1f} MB; uploads are limited to {limit} MB.")
    return path


def _in_upload_cache(path: str) -> bool:
    """Whether ``path`` lies in Gradio's folder of uploaded files."""
    import tempfile

    cache = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    return Path(path).resolve().is_relative_to(cache)


def one_line(exc: BaseException) -> str:
    """A readable one-line message for the UI (never a traceback), with no server path or hash on
    a public app (``for_visitors``): the one place every tab's error messages pass through."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return for_visitors(msg)[:400]


def for_visitors(text: str) -> str:
    """``text`` as the page may show it: on a public app without server paths or hashes
    (``text.no_server_paths``); on one's own machine as it is (the paths are the user's own)."""
    from .text import no_server_paths

    return no_server_paths(text) if is_public() else text


CANCELS = CancelFlags()


class SessionStore:
    """Heavy per-page results (an Explore comparison with every token's hidden states, a Map's
    embeddings) kept on the server under a random key, least recently used out and dropped after
    ``ttl`` seconds: what a page's gr.State holds is the key, so sessions that pile up (closed
    tabs, scripts) hold bytes, not gigabytes."""

    def __init__(self, capacity: int, ttl: float = 1800.0) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._items: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, value, key: str | None = None) -> str:
        import secrets

        key = key or secrets.token_hex(16)
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (time.monotonic(), value)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key):
        if not isinstance(key, str):
            return None
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if time.monotonic() - hit[0] > self.ttl:
                del self._items[key]
                return None
            self._items[key] = (time.monotonic(), hit[1])
            self._items.move_to_end(key)
            return hit[1]

    def drop(self, key) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def session_token() -> gr.State:
    """A State holding a random id, made anew for every page load (one per visitor session)."""
    import uuid

    return gr.State(lambda: uuid.uuid4().hex)


class Warmup:
    """The app loads its backbone (and MiniLM) in the background as it starts, so the first click
    does not pay for it; the page shows how far it is, and a click that comes earlier waits, saying why."""

    def __init__(self) -> None:
        self.state = "idle"  # idle, loading, ready, failed
        self.message = ""
        self.done = threading.Event()

    def start(self, model: str, load=None) -> None:
        from grace.model.backbone import CONVERSION_TIME, default_model_converted

        load = load or (lambda m: (encoder_for(APP_DEFAULTS.with_(model=m)),
                                   encoder_for(APP_DEFAULTS.with_(model="minilm"))))
        self.state, self.done = "loading", threading.Event()
        self.message = (f"Converting the embedded Gemma 3 270M to safetensors: {CONVERSION_TIME}, once."
                        if model == "default" and not default_model_converted() else f"Loading the model {model}…")

        def work() -> None:
            import time

            from grace.serving.engine import background_priority

            background_priority()  # torch's worker threads start here, and inherit it
            t0 = time.perf_counter()
            try:
                load(model)
                self.state, self.message = "ready", f"Model ready (loaded in {time.perf_counter() - t0:.0f} s)."
            except Exception as exc:  # shown on the page; a click then reports its own error
                self.state, self.message = "failed", f"⚠️ The model did not load: {one_line(exc)}"
            finally:
                self.done.set()

        threading.Thread(target=work, daemon=True, name="grace-warmup").start()

    def waiting(self) -> str | None:
        """While loading: the sentence a click shows before it waits; else None."""
        return f"⏳ {self.message} Your request starts as soon as it is ready." if self.state == "loading" else None

    def wait(self) -> None:
        if self.state == "loading":
            self.done.wait()


WARMUP = Warmup()
