"""GraceConfig: every hyper-parameter of a training run, one source for defaults, docs and CLI.

Each field's ``metadata["help"]`` is its documentation and its ``--flag`` help; the config is
saved in the run folder (``RunFolder.config``), next to the run's checkpoints. The fields that
decide the embedding (model, prompt, rationale length, pooling, layer, device, dtype) take their
defaults and choices from ``EncodeSettings``: each default has one source.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from ..files.run_folder import METRICS, SAMPLES
from ..model.pooling import POOLINGS
from ..model.settings import DTYPES, EncodeSettings
from .policy import CUT_ROLLOUT_LOSSES
from .rewards import ADVANTAGE_SCALES, TRUNCATION_RULES

E = EncodeSettings  # the encoder's defaults, which a run's embeddings share

METHODS = ("grace", "cl", "simcse")
MODES = ("supervised", "unsupervised")


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class GraceConfig:
    # -- what to train -----------------------------------------------------------------------
    method: str = _f("grace", "grace (rationale policy, contrastive reward), cl (InfoNCE on the direct "
                     "forward embedding, eq. 1-2) or simcse (unsupervised, dropout positives)", choices=METHODS)
    mode: str = _f("supervised", "supervised (query/positive/negatives) or unsupervised (raw passages)",
                   choices=MODES)
    data: str = _f("", "training data: JSONL triplets (supervised) or one passage per line / JSONL 'text'")
    output: str = _f("runs/grace", f"run folder: adapter, checkpoints, {METRICS}, {SAMPLES}")
    model: str = _f(E.model, "backbone: 'default' (Gemma 3 270M), an HF id or a local folder")
    prompt: str = _f(E.prompt, "prompt template name or file")
    # -- optimisation ------------------------------------------------------------------------
    steps: int = _f(20, "training steps: each generates and scores one batch of B examples (GRACE) and "
                    "takes B / --mini-batch-size optimizer steps on it per epoch (CL, SimCSE: one)")
    batch_size: int = _f(8, "examples per step (B); GRACE generates their anchors and B x K rollouts in one pass")
    mini_batch_size: int = _f(2, "GRACE: examples per optimizer step; each step's batch is split into "
                              "B / this mini-batches (verl's ppo_mini_batch_size)")
    lr: float = _f(1e-4, "learning rate of the LoRA weights (the paper's 1e-6 is for full fine-tuning)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping")
    seed: int = _f(0, "random seed (data order, sampling)")
    updates_per_batch: int = _f(1, "epochs over each step's rollouts (verl's ppo_epochs): 1 trains each rollout "
                                "once; more reuse them with the PPO-clipped ratio")
    clip_eps: float = _f(0.2, "PPO clip range of the probability ratio (the reference code's 0.2)")
    dual_clip: Optional[float] = _f(3.0, "dual-clip bound c of negative-advantage tokens: their loss is at most "
                                    "-c A (verl's clip_ratio_c, the reference code's 3.0); 0 = off")
    dtype: Optional[str] = _f(E.dtype, "precision: float32 (CPU default), bfloat16 (CUDA default), or auto: bfloat16 "
                              "on CPUs with native bf16; the LoRA weights and optimizer state stay float32",
                              choices=DTYPES)
    # -- GRACE rollouts and rewards (eq. 12-18) ---------------------------------------------
    rollouts: int = _f(4, "K sampled rationales per positive (the group of the advantage)")
    lambda_consistency: float = _f(0.2, "lambda1: weight of the consistency reward (eq. 14)")
    lambda_hard: float = _f(1.0, "lambda2: weight of the in-batch hard-negative reward (eq. 15); 1.0 by the "
                            "validation sweep (the released script uses 0.2, which the policy hacks here)")
    reward_temperature: float = _f(0.1, "tau: the total reward is divided by it (eq. 17)")
    length_penalty: float = _f(-1.0, "reward of a rollout that hit the length limit without ending")
    truncation: str = _f("finished-mean", "a rollout that hit the length limit: penalty (its reward is the length "
                         "penalty: the reference code), finished-mean (the advantage over finished rollouts only, a "
                         "fixed --truncated-advantage for the others; the default by the validation sweep: 73.2 "
                         "vs 72.3), mask (not trained) or none",
                         choices=TRUNCATION_RULES)
    truncated_advantage: float = _f(-0.2, "the advantage of a rollout that hit the length limit under "
                                    "--truncation finished-mean")
    advantage_scale: str = _f("none", "none (eq. 18 and the reference: reward minus the group mean) or group-std "
                              "(GRPO: also divided by the group's reward standard deviation)",
                              choices=ADVANTAGE_SCALES)
    cut_rollout_loss: str = _f("token-mean", "how a rollout cut at the length limit weighs in the loss: token-mean "
                               "(each of its tokens like any other: the reference) or sequence-mean (as much as "
                               "the mini-batch's average rollout)", choices=CUT_ROLLOUT_LOSSES)
    contrastive_weight: float = _f(0.0, "GRACE + InfoNCE, a method beside the paper's (0 = GRACE as published): "
                                   "weight of an InfoNCE loss (--cl-temperature) on the rollouts' embeddings, pooled "
                                   "from the update's hidden states, against the batch's anchors")
    max_new_tokens: int = _f(E.max_new_tokens, "rationale length limit (the same default as encoding)")
    sampling_temperature: float = _f(0.7, "temperature of the sampled rollouts (0.7 by the validation sweep: "
                                          "72.5 vs 67.4 at 1.0; closer to the greedy decoding used at inference)")
    top_p: float = _f(1.0, "nucleus mass of the sampled rollouts")
    kl_beta: float = _f(0.0, "KL coefficient against the base model (the paper uses 0)")
    log_negatives_every: int = _f(0, "every N steps also generate the negatives' rationales to log the full "
                                  "contrastive reward (eq. 13 with its negative term, which cancels in the "
                                  "advantage and is not generated otherwise); 0 = never")
    # -- embedding ---------------------------------------------------------------------------
    pooling: str = _f(E.pooling, "pooling of the embedding used by the reward", choices=POOLINGS)
    layer: int = _f(E.layer, "hidden layer pooled (-1 last)")
    cl_temperature: float = _f(0.05, "InfoNCE temperature of the cl and simcse baselines")
    # -- LoRA --------------------------------------------------------------------------------
    lora_rank: int = _f(8, "LoRA rank r")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout (simcse uses at least 0.1: its positives come from dropout)")
    lora_targets: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA")
    # -- bookkeeping -------------------------------------------------------------------------
    sample_every: int = _f(5, f"write the probe texts' rationales to {SAMPLES} every N steps")
    save_every: int = _f(10, "checkpoint every N steps (and at the end)")
    keep_adapters: int = _f(2, "adapter versions kept in adapters/step-N (0 = all: for a validation curve over "
                            "training, see benchmarks/checkpoint_curve.py)")
    max_minutes: float = _f(0.0, "stop cleanly and save after this many minutes (0 = no limit)")
    probe_texts: list[str] = _f([], "texts whose rationales are logged over training (default: the first 3 "
                           "positives or passages)")
    skip_bad: bool = _f(False, "drop bad data records instead of refusing the file")
    device: str = _f(E.device, "auto, cpu or cuda")

    def validate(self) -> None:
        """Refuse settings the method cannot run with, before anything is loaded."""
        for f in fields(self):
            value = getattr(self, f.name)
            if _is_number_field(type(self), f):
                if value is None and _annotation(type(self), f).startswith(("Optional", "typing.Optional")):
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    flag = "--" + f.name.replace("_", "-")
                    raise ValueError(f"{flag} must be a finite number, not {value!r}.")
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}: use one of {', '.join(METHODS)}.")
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}: use supervised or unsupervised.")
        if self.method == "cl" and self.mode != "supervised":
            raise ValueError("--method cl needs --mode supervised (it trains on query/positive pairs).")
        if self.method == "simcse" and self.mode != "unsupervised":
            raise ValueError("--method simcse needs --mode unsupervised (it trains on raw passages).")
        if self.truncation not in TRUNCATION_RULES:
            raise ValueError(f"Unknown --truncation {self.truncation!r}: use one of {', '.join(TRUNCATION_RULES)}.")
        if self.mini_batch_size < 1:
            raise ValueError("--mini-batch-size must be at least 1.")
        if self.steps < 1:
            raise ValueError("--steps must be at least 1.")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1.")
        if self.method == "grace":
            if self.rollouts < 2:
                raise ValueError("--rollouts must be at least 2: the advantage compares rollouts within a group.")
            if self.batch_size < 2 and self.lambda_hard > 0:
                raise ValueError("--batch-size 1 has no in-batch negatives: use B >= 2 or --lambda-hard 0.")
            if self.reward_temperature <= 0:
                raise ValueError("--reward-temperature must be above 0.")
            if self.max_new_tokens < 1:
                raise ValueError("--max-new-tokens must be at least 1.")
        elif self.batch_size < 2:
            raise ValueError(f"--method {self.method} needs --batch-size >= 2 (in-batch negatives).")
        if self.lambda_consistency < 0:
            raise ValueError("--lambda-consistency must be 0 (off) or more.")
        if self.contrastive_weight < 0:
            raise ValueError("--contrastive-weight must be 0 (GRACE as published) or more.")
        if self.contrastive_weight and self.method != "grace":
            raise ValueError("--contrastive-weight adds InfoNCE to GRACE's policy loss: it needs --method grace.")
        if self.lambda_hard < 0:
            raise ValueError("--lambda-hard must be 0 (off) or more.")
        if self.sampling_temperature <= 0:
            raise ValueError("--sampling-temperature must be above 0.")
        if not 0 < self.top_p <= 1:
            raise ValueError("--top-p must be in (0, 1].")
        if self.max_minutes < 0:
            raise ValueError("--max-minutes must be 0 (no limit) or more.")
        if self.updates_per_batch < 1:
            raise ValueError("--updates-per-batch must be at least 1.")
        if self.clip_eps <= 0:
            raise ValueError("--clip-eps must be above 0.")
        if self.dual_clip and self.dual_clip <= 1:
            raise ValueError("--dual-clip must be above 1 (verl's bound), or 0 (off).")
        if self.log_negatives_every < 0:
            raise ValueError("--log-negatives-every must be 0 (never) or more.")
        if self.lr <= 0:
            raise ValueError("--lr must be above 0.")
        if self.keep_adapters < 0:
            raise ValueError("--keep-adapters must be 0 (all) or more.")
        if self.lora_rank < 1:
            raise ValueError("--lora-rank must be at least 1.")
        if not self.data:
            raise ValueError("--data is required.")

    @property
    def method_label(self) -> str:
        return method_label(self.method, self.mode, self.contrastive_weight)

    def to_dict(self) -> dict:
        return asdict(self)

    def encode_settings(self) -> EncodeSettings:
        """The inference settings this run's embeddings use (rewards, probes, the saved adapter):
        the encoder reads the adapter with the same prompt, rationale length and pooling."""
        return EncodeSettings(model=self.model, prompt=self.prompt, max_new_tokens=self.max_new_tokens,
                              pooling=self.pooling, layer=self.layer, device=self.device, dtype=self.dtype)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "GraceConfig":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        if "penalize_truncated" in data and "truncation" not in data:  # runs saved before --truncation
            data["truncation"] = "penalty" if data["penalize_truncated"] else "none"
        if "mini_batch_size" not in data and "batch_size" in data:  # before mini-batches: one per step
            data["mini_batch_size"] = data["batch_size"]
        return cls(**{k: v for k, v in data.items() if k in known})

    # fields that may change when a run is resumed
    RESUMABLE = ("steps", "max_minutes", "save_every", "keep_adapters", "sample_every", "device", "output", "skip_bad",
                 "log_negatives_every")

    def same_run_as(self, other: "GraceConfig") -> bool:
        a = {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE}
        b = {k: v for k, v in other.to_dict().items() if k not in self.RESUMABLE}
        return a == b


def method_label(method: str | None, mode: str | None, contrastive_weight: float | None = 0.0) -> str:
    """A run's method in every table, the CLI and the Train tab: GRACE with an InfoNCE term is not
    the paper's method and never shows as plain GRACE."""
    name = {"grace": "GRACE", "cl": "CL", "simcse": "SimCSE"}.get(method or "", str(method))
    if method == "grace" and contrastive_weight:
        name = f"GRACE + InfoNCE (weight {contrastive_weight:g})"
    return f"{name} {mode}"


def _annotation(cls, f) -> str:
    """A field's annotation as written. ``f.type`` will not do: HfArgumentParser replaces it with a
    resolved type (``Optional[float]`` becomes ``float``) when it builds flags."""
    return str(cls.__annotations__.get(f.name, f.type))


def _is_number_field(cls, f) -> bool:
    """Whether a dataclass field holds a number (``Optional`` ones may also hold None)."""
    return _annotation(cls, f).replace("typing.", "") in ("int", "float", "Optional[int]", "Optional[float]")
