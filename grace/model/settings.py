"""EncodeSettings: everything that decides an embedding, in one dataclass.

It is the single source of the embedding options: the CLI flags of every command that embeds
(through ``transformers.HfArgumentParser``), ``GraceEncoder.encode``'s keyword arguments, the
evaluation wrapper, the app's settings panel, the rationale cache key and the settings saved
with evaluation results and training runs. A new field is picked up by all of them; the tests
check that each field given on each command line reaches the encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

from .backbone import resolve_adapter
from .pooling import POOLINGS
from .prompts import DEFAULT_TEMPLATE, TEMPLATES, PromptTemplate

DTYPES = ("float32", "bfloat16", "auto")


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class EncodeSettings:
    # -- which encoder (chosen when it is loaded; the prompt is chosen per call) ----------------
    model: str = _opt("default", "'default' (embedded Gemma 3 270M), 'minilm' (all-MiniLM-L6-v2 baseline), "
                      "a Hugging Face id or a local folder")
    adapter: Optional[str] = _opt(None, "folder of a PEFT adapter (a training run's output), or the name of an "
                                  "adapter shipped with GRACE Studio (grace-wordnet-sup)")
    prompt: str = _opt(DEFAULT_TEMPLATE, "prompt template: fewshot, paper, think, keywords, or a .json/.txt template file")
    dtype: Optional[str] = _opt(None, "float32 (CPU default, exact), bfloat16 (CUDA default), or auto: bfloat16 "
                                "where the CPU has native bf16 matmuls (see benchmarks/RESULTS.md)", choices=DTYPES)
    device: str = _opt("auto", "auto (CUDA when present), cpu or cuda")
    trust_remote_code: bool = _opt(False, "allow a hub model's own code to run")
    backend: str = _opt("transformers", "rationale generation backend: transformers, or vllm (CUDA with vLLM "
                        "installed)", choices=("transformers", "vllm"))
    # -- the rationale -----------------------------------------------------------------------
    rationale: bool = _opt(True, "generate a rationale (--no-rationale: direct forward, the paper's 'Base')")
    max_new_tokens: int = _opt(48, "rationale length limit in tokens (training uses the same default)")
    sample: bool = _opt(False, "sample rationales instead of greedy decoding")
    temperature: float = _opt(0.7, "sampling temperature")
    top_p: float = _opt(0.95, "nucleus sampling mass")
    repetition_penalty: float = _opt(1.2, "penalty on tokens already in the rationale, 1 = off")
    no_repeat_ngram: int = _opt(0, "forbid repeating n-grams of this size in the rationale, 0 = off")
    seed: Optional[int] = _opt(None, "random seed for sampled rationales")
    # -- the embedding -----------------------------------------------------------------------
    pooling: str = _opt("mean", "mean over text+rationale (paper), rationale-mean, text-mean, last token, or max",
                        choices=POOLINGS)
    layer: int = _opt(-1, "hidden layer to pool: -1 last, -2 penultimate, ...")
    batch_size: int = _opt(32, "texts generated and embedded together")

    # What each field decides: the encoder that is loaded, the rationale that is generated, the
    # pooling of its states, or only the speed. Every field is in exactly one group (tested).
    # LOAD fields are honoured when an encoder is loaded (``load_encoder``); the others by each
    # ``encode`` call, so one loaded encoder serves every prompt, length and pooling.
    LOAD = ("model", "adapter", "dtype", "device", "trust_remote_code", "backend")
    RATIONALE = ("prompt", "rationale", "max_new_tokens", "sample", "temperature", "top_p", "repetition_penalty",
                 "no_repeat_ngram", "seed")
    EMBEDDING = ("pooling", "layer")
    SPEED = ("batch_size",)

    def validate(self, known_prompt_only: bool = False) -> "EncodeSettings":
        """Refuse settings no encoder can run with; one sentence naming the option.

        ``known_prompt_only`` also refuses a template file for the prompt (where the settings come
        from strangers, e.g. a public app, only the registered template names are allowed)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if _is_number_field(type(self), f) and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    flag = "--" + f.name.replace("_", "-")
                    raise ValueError(f"{flag} must be a finite number, not {value!r}.")
        # a registered template, or a template file's path (read, or refused, when it is first used);
        # in the library also a ``PromptTemplate`` itself
        prompt = self.prompt if isinstance(self.prompt, str) else None
        is_file = prompt is not None and (prompt == "" or Path(prompt).suffix in (".json", ".txt"))
        is_template = isinstance(self.prompt, PromptTemplate)
        if prompt not in TEMPLATES and (known_prompt_only or not (is_file or is_template)):
            files = "" if known_prompt_only else " or a .json/.txt template file"
            raise ValueError(f"Unknown prompt {self.prompt!r}: use one of {', '.join(TEMPLATES)}{files}.")
        if not 1 <= self.max_new_tokens <= 512:
            raise ValueError("--max-new-tokens must be between 1 and 512.")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1.")
        if self.sample and self.temperature <= 0:
            raise ValueError("Sampling needs --temperature above 0.")
        if not 0 < self.top_p <= 1:
            raise ValueError("--top-p must be in (0, 1].")
        if self.repetition_penalty <= 0:
            raise ValueError("--repetition-penalty must be above 0 (1 = off).")
        if self.no_repeat_ngram < 0:
            raise ValueError("--no-repeat-ngram must be 0 (off) or more.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}: use one of {', '.join(POOLINGS)}.")
        if not self.rationale and self.pooling == "rationale-mean":
            raise ValueError("Pooling 'rationale-mean' needs a rationale; drop --no-rationale or pick another pooling.")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")
        return self

    def with_(self, **changes) -> "EncodeSettings":
        """A copy with some fields changed; an unknown name is refused with the valid ones."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"Unknown encode setting(s) {', '.join(unknown)}; valid: {', '.join(self.names())}.")
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncodeSettings":
        known = set(cls.names())
        return cls(**{k: v for k, v in data.items() if k in known})

    def rationale_key(self) -> dict:
        """The fields that decide a generated rationale (part of the rationale cache key)."""
        return {k: getattr(self, k) for k in self.RATIONALE}

    def label(self) -> str:
        """A row name for comparison tables."""
        if self.model == "minilm":
            return "MiniLM (all-MiniLM-L6-v2)"
        name = "Base" if self.model == "default" else self.model
        if self.adapter:
            p = Path(self.adapter)
            # the run's name (RUN/adapter), never the link's target (RUN/adapters/step-N: "adapters")
            name += f" + {p.parent.name if p.name == 'adapter' else p.name}"
        name += " w/ reasoning" if self.rationale else " (direct forward)"
        return name + (f" [{', '.join(self.differences())}]" if self.differences() else "")

    def fingerprint(self) -> str:
        """Everything that decides an embedding, the adapter by its weights' hash (not its path)."""
        return settings_key(**{**self.to_dict(), "adapter": file_fingerprint(self.adapter)})

    def texts_fingerprint(self, texts) -> str:
        """``fingerprint`` and every text: what a corpus's embeddings are made from (the Map's cache
        key, the manifest of a resumable ``grace encode``)."""
        h = hashlib.sha256(self.fingerprint().encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()

    def load_fingerprint(self) -> str:
        """The ``LOAD`` fields alone, the adapter by its weights' hash: two settings with the same
        load fingerprint are served by the same loaded encoder (the app's encoder cache key).
        The MiniLM baseline is chosen by its device only."""
        names = ("model", "device") if self.model == "minilm" else self.LOAD
        load = {k: getattr(self, k) for k in names}
        if "adapter" in load:
            load["adapter"] = file_fingerprint(self.adapter)
        return settings_key(**load)

    def direct(self) -> "EncodeSettings":
        """These settings' direct forward pass (no rationale; the paper's 'Base'): the same pooling of
        the text's states, ``text-mean`` where the pooling was the rationale's alone. Explore's
        'direct forward' column, the Map's direct panel and the contrastive baselines' embedding."""
        return self.with_(rationale=False, pooling="text-mean" if self.pooling == "rationale-mean" else self.pooling)

    def differences(self) -> list[str]:
        """The settings that decide an embedding and differ from the defaults, shortly (prompt, length,
        decoding, pooling, layer, precision): what tells two rows of one model apart."""
        d = type(self)()
        out = []
        if self.rationale:
            if self.prompt != d.prompt:
                name = self.prompt.name if isinstance(self.prompt, PromptTemplate) else Path(self.prompt).name
                out.append(f"prompt {name}")
            if self.max_new_tokens != d.max_new_tokens:
                out.append(f"{self.max_new_tokens} tokens")
            if self.sample:
                out.append(f"sampled T={self.temperature:g} p={self.top_p:g} seed {self.seed}")
            if self.repetition_penalty != d.repetition_penalty:
                out.append(f"repetition {self.repetition_penalty:g}")
            if self.no_repeat_ngram:
                out.append(f"no-repeat {self.no_repeat_ngram}-gram")
        if self.pooling != d.pooling:
            out.append(f"pooling {self.pooling}")
        if self.layer != d.layer:
            out.append(f"layer {self.layer}")
        if self.dtype not in (None, "float32"):
            out.append(self.dtype)
        return out


def settings_key(**settings) -> str:
    """A stable fingerprint of everything that decides a rationale (but the text)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_fingerprint(path: str | Path | None) -> str:
    """Content hash of an adapter's weights (so a retrained adapter does not reuse old rationales)."""
    if not path:
        return ""
    p = resolve_adapter(path)
    weights = p / "adapter_model.safetensors" if p.is_dir() else p
    if not weights.exists():
        return str(p)
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def _annotation(cls, f) -> str:
    """A field's annotation as written. ``f.type`` will not do: HfArgumentParser replaces it with a
    resolved type (``Optional[float]`` becomes ``float``) when it builds flags."""
    return str(cls.__annotations__.get(f.name, f.type))


def _is_number_field(cls, f) -> bool:
    """Whether a dataclass field holds a number (``Optional`` ones may also hold None)."""
    return _annotation(cls, f).replace("typing.", "") in ("int", "float", "Optional[int]", "Optional[float]")
