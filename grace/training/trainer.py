"""GRACE training: contrastive similarity as a reward for a rationale policy (eq. 12-19),
with the CL (InfoNCE, eq. 1-2) and SimCSE baselines on the same data, LoRA and budget.

One step of GRACE, supervised (eq. 12): the current policy writes one greedy rationale for each
query (the fixed anchor) and K sampled rationales for each positive; the texts are embedded
through the encoder's own pooling path (generation yields the states, ``grace.model.fastgen``);
``grace_rewards`` scores the K rollouts and takes the advantage (reward minus its group mean);
then ``updates_per_batch`` optimizer steps use the same rollouts with a PPO-style clipped ratio
and token-mean aggregation over every response token, the ending token included (eq. 19 and the
reference code). Unsupervised (eq. 20-21): an anchor rationale and K rollouts of the same passage.

Every forward pass with gradients runs the prompt prefix shared by the batch once
(``forward_states(share_prefix=True)``). Under ``accelerate launch`` each process takes its share
of the batch; gradients are averaged across processes before every optimizer step.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..files.textio import atomic_output
from ..model.backbone import cpu_has_native_bf16, load_backbone, publish_dir
from ..model.embedding import embed_ids, forward_states, lm_logits
from ..model.generation import generate_rationales
from ..model.prompts import PromptBuilder, PromptIds
from ..model.settings import EncodeSettings
from .config import GraceConfig
from .data import load_passages, load_triplets
from .rewards import contrastive_reward, grace_rewards

MAX_TEXT_TOKENS = 512  # training texts are cut like the encoder cuts them


class RunExistsError(ValueError):
    """The output folder holds a different run."""


class TrainingCancelled(Exception):
    pass


@dataclass
class RunResult:
    output: Path
    steps_done: int
    stopped_early: bool
    adapter: Path


def _lora(model, cfg: GraceConfig):
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.lora_targets)
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not modules of this model.")
    dropout = max(cfg.lora_dropout, 0.1) if cfg.method == "simcse" else cfg.lora_dropout
    # autocast_adapter_dtype keeps the LoRA weights (and so the optimizer state) in float32 when
    # the frozen base model runs in bfloat16
    return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=dropout,
                                            target_modules=targets, task_type="CAUSAL_LM"),
                          autocast_adapter_dtype=True)


def rollout_logprobs(model, prompts: list[PromptIds], responses: list[list[int]], pad_id: int,
                     temperature: float = 1.0, share_prefix: bool = True) -> list[torch.Tensor]:
    """Per-token log pi(r_t | P(x), r_<t) of each response (eq. 19), with gradients.

    A response is the rationale plus the token(s) that ended it (EOS or the stop string), so the
    decision to stop is scored too. Logits are computed only at the positions that predict
    response tokens: the 262k-way output layer never runs over the prompt.
    """
    device = next(model.parameters()).device
    fs = forward_states(model, prompts, responses, pad_id=pad_id, share_prefix=share_prefix)
    width = fs.ids.shape[1]
    rows, cols, targets, lengths = [], [], [], []
    for i, r in enumerate(responses):
        n = len(r)
        rows += [i] * n
        cols += list(range(width - n - 1, width - 1))  # position t-1 predicts token t
        targets += list(r)
        lengths.append(n)
    if not targets:
        return [fs.last.sum() * 0.0 for _ in responses]
    logp = torch.log_softmax(lm_logits(model, fs.last[rows, cols]) / temperature, dim=-1)
    tok = logp.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).squeeze(1)
    return list(torch.split(tok, lengths))


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO-clipped surrogate (eq. 19 with the reference code's clipping):
    - min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = pi / pi_old; and which tokens were clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


def training_dtype(requested: str | None, device: torch.device) -> str | None:
    """The dtype the backbone loads in; a bfloat16 request on a CPU without native bf16 falls back
    to float32 with one warning (it would be several times slower there, not faster)."""
    if requested == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("This CPU has no native bfloat16 matmuls: training in float32 instead.")
        return "float32"
    return requested


class Trainer:
    """Runs one training job; ``callback(event)`` sees every step, ``should_stop()`` cancels."""

    def __init__(self, cfg: GraceConfig, *, overwrite: bool = False,
                 callback: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        cfg.validate()
        self.cfg = cfg
        self.callback = callback or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > cfg.batch_size:
            raise ValueError(f"{world} processes need --batch-size {world} or more (each process takes a share "
                             f"of every batch; got {cfg.batch_size}).")
        # data first: a bad file is refused before any model is loaded
        if cfg.mode == "supervised":
            self.report = load_triplets(cfg.data, skip_bad=cfg.skip_bad)
        else:
            self.report = load_passages(cfg.data, skip_bad=cfg.skip_bad)
        if len(self.report.records) < cfg.batch_size:
            raise ValueError(f"{cfg.data} has {len(self.report.records)} records, fewer than --batch-size "
                             f"{cfg.batch_size}.")
        self.out = Path(cfg.output)
        self.start_step = self._prepare_output(overwrite)

    # -- run folder ------------------------------------------------------------------------
    def _prepare_output(self, overwrite: bool) -> int:
        cfg_path = self.out / "grace_config.json"
        main = os.environ.get("RANK", "0") == "0"  # under accelerate launch only the main process writes
        if main:
            if self.out.exists() and any(self.out.iterdir()):
                if not cfg_path.exists() or not GraceConfig.load(cfg_path).same_run_as(self.cfg):
                    if not overwrite:
                        raise RunExistsError(f"{self.out} already holds a different run; pass --overwrite to "
                                             "replace it or choose another --output.")
                    shutil.rmtree(self.out)
                elif overwrite:
                    shutil.rmtree(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.save(cfg_path)
        ckpt = latest_checkpoint(self.out)
        return json.loads((ckpt / "state.json").read_text())["step"] if ckpt else 0

    # -- model -----------------------------------------------------------------------------
    def _setup(self) -> None:
        from accelerate import Accelerator

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.accelerator = Accelerator(cpu=cfg.device == "cpu")
        dev = self.accelerator.device
        # SimCSE's positives differ only by dropout: it must be set when the model is built
        overrides = {"attention_dropout": 0.1} if cfg.method == "simcse" else None
        backbone = load_backbone(cfg.model, device=dev, dtype=training_dtype(cfg.dtype, dev),
                                 config_overrides=overrides)
        self.tokenizer = backbone.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.prompts = PromptBuilder(self.tokenizer, cfg.prompt)
        model = _lora(backbone.model, cfg)
        ckpt = latest_checkpoint(self.out)
        if ckpt is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if ckpt is not None and (ckpt / "optimizer.pt").exists():
            optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.params = params
        self.tokenizer_info = {"model": cfg.model, "vocab_size": len(self.tokenizer),
                               "pad_token_id": self.pad_id, "eos_token_id": self.tokenizer.eos_token_id,
                               "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
                               "prompt": self.prompts.template.to_dict()}

    @property
    def policy(self):
        """The PEFT model itself. Forward passes go through it (not through a DDP wrapper, which
        could not reach the decoder body); ``_optimizer_step`` averages the gradients across
        processes instead."""
        return self.accelerator.unwrap_model(self.model)

    def _batch(self, step: int) -> list:
        """Examples of step ``step`` (1-based): a fresh seeded permutation each epoch; under several
        processes each takes its share."""
        n, b = len(self.report.records), self.cfg.batch_size
        per_epoch = n // b
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(n))
        random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        idx = order[k * b:(k + 1) * b]
        return [self.report.records[i] for i in idx[rank::world]]

    def _build(self, text: str) -> PromptIds:
        return self.prompts.build(text, MAX_TEXT_TOKENS)

    def _optimizer_step(self, backward: Callable[[], None]) -> None:
        """Run ``backward`` (one or more ``.backward()`` calls) without DDP's hooks, average the
        gradients across processes, clip, step."""
        with self.accelerator.no_sync(self.model):
            backward()
        if self.accelerator.num_processes > 1:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
            pos = 0
            for p, g in zip(self.params, grads):
                p.grad = flat[pos:pos + g.numel()].view_as(p).clone()
                pos += g.numel()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # -- generation (the policy's rollouts and anchors) -------------------------------------
    def _settings(self, n: int, *, sample: bool, seed: int) -> EncodeSettings:
        """Rollouts sample from the policy itself (no repetition penalty: the policy gradient needs
        samples of pi_theta); anchors and probes decode greedily with the encoder's settings."""
        cfg = self.cfg
        s = cfg.encode_settings().with_(seed=seed, batch_size=max(n, 1))
        if sample:
            s = s.with_(sample=True, temperature=cfg.sampling_temperature, top_p=cfg.top_p, repetition_penalty=1.0)
        return s

    def _rollouts(self, prompts: list[PromptIds], *, sample: bool, seed: int):
        """(rationales, responses, finished, embeddings [N, d] float32) from one generation pass."""
        from ..model.fastgen import generate_and_embed, supports

        policy = self.policy
        s = self._settings(len(prompts), sample=sample, seed=seed)
        if supports(policy, prompts, s):
            r = generate_and_embed(policy, self.tokenizer, prompts, s, stop_strings=self.prompts.stop_strings())
            return r.rationales, r.responses, r.finished, r.embed.embeddings.float()
        finished: list[bool] = []
        responses: list[list[int]] = []
        rats = generate_rationales(policy, self.tokenizer, prompts, s, stop_strings=self.prompts.stop_strings(),
                                   finished=finished, responses=responses)
        emb = embed_ids(policy, prompts, rats, pad_id=self.pad_id, pooling=s.pooling, layer=s.layer).embeddings
        return rats, responses, finished, emb.float()

    # -- one step of each method -----------------------------------------------------------
    def _grace_step(self, batch: list, step: int) -> dict:
        cfg, k = self.cfg, self.cfg.rollouts
        b = len(batch)
        dev = self.accelerator.device
        t0 = time.perf_counter()
        policy = self.policy
        policy.eval()  # no dropout: rollouts, rewards and log-probabilities see the same policy
        supervised = cfg.mode == "supervised"
        p_anchor = [self._build(t.query if supervised else t) for t in batch]
        p_roll = [self._build(t.positive if supervised else t) for t in batch for _ in range(k)]
        with torch.no_grad():
            _, _, _, h_anchor = self._rollouts(p_anchor, sample=False, seed=cfg.seed + step)
            _, responses, finished, h_roll = self._rollouts(p_roll, sample=True, seed=cfg.seed * 7919 + step)
            r = grace_rewards(h_anchor, h_roll.view(b, k, -1), torch.tensor(finished, device=dev).view(b, k),
                              lambda_consistency=cfg.lambda_consistency, lambda_hard=cfg.lambda_hard,
                              temperature=cfg.reward_temperature, length_penalty=cfg.length_penalty,
                              penalize_truncated=cfg.penalize_truncated)
            logged = {}
            if supervised and cfg.log_negatives_every and step % cfg.log_negatives_every == 0:
                logged = self._contrastive_with_negatives(batch, h_anchor, h_roll.view(b, k, -1), step)
        t_gen = time.perf_counter() - t0
        t1 = time.perf_counter()
        stats = self._policy_update(p_roll, responses, r.advantage.flatten())
        lengths = [len(x) for x in responses]
        out = {"reward/positive" if supervised else "reward/self": float(r.main.mean()), **logged,
               "reward/consistency": float(r.consistency.mean()),
               "reward/hard_negative": float(r.hard_negative.mean()),
               "reward/length_penalty": float(r.length_penalty.mean()), "reward/total": float(r.total.mean()),
               "advantage_std": float(r.advantage.std()), **stats,
               "rationale_length": sum(lengths) / len(lengths),
               "truncation_rate": 1.0 - sum(finished) / len(finished),
               "time/generate": t_gen, "time/embed": 0.0, "time/backward": time.perf_counter() - t1}
        return out

    def _contrastive_with_negatives(self, batch, h_anchor, h_roll, step) -> dict:
        """eq. 13 in full, for the log: greedy rationales of the negatives, - their mean similarity."""
        negs = [n for t in batch for n in t.negatives]
        if not negs:
            return {}
        _, _, _, h = self._rollouts([self._build(n) for n in negs], sample=False, seed=self.cfg.seed + step)
        m = max(len(t.negatives) for t in batch)
        h_neg = h.new_zeros((len(batch), m, h.shape[1]))
        mask = torch.zeros((len(batch), m), dtype=torch.bool, device=h.device)
        pos = 0
        for i, t in enumerate(batch):
            c = len(t.negatives)
            h_neg[i, :c], mask[i, :c] = h[pos:pos + c], True
            pos += c
        return {"reward/contrastive": float(contrastive_reward(h_anchor, h_roll, h_neg, mask).mean())}

    def _policy_update(self, prompts: list[PromptIds], responses: list[list[int]], advantages: torch.Tensor) -> dict:
        """``updates_per_batch`` optimizer steps on one batch of rollouts: eq. 19 with a PPO-clipped
        ratio, averaged over every response token of the batch (token-mean). The first update's
        log-probabilities (taken with gradients) are the old policy's, so its ratio is exactly 1."""
        cfg, policy = self.cfg, self.policy
        policy.eval()  # LoRA dropout off: the rollouts were sampled without it
        n_tokens = max(1, sum(len(r) for r in responses))
        chunk = max(1, cfg.rollouts)
        old: list[list[torch.Tensor]] = []
        losses, clipped, kls = [], [], []
        for update in range(cfg.updates_per_batch):
            totals = {"loss": 0.0, "clipped": 0.0, "kl": 0.0}

            def backward() -> None:
                for c, start in enumerate(range(0, len(prompts), chunk)):
                    sl = slice(start, start + chunk)
                    lps = rollout_logprobs(policy, prompts[sl], responses[sl], self.pad_id, cfg.sampling_temperature)
                    if update == 0:
                        old.append([lp.detach() for lp in lps])
                    lp = torch.cat(lps)
                    adv = torch.cat([advantages[start + j].expand(len(x)) for j, x in enumerate(lps)]).to(lp.dtype)
                    tok_loss, was_clipped = clipped_policy_loss(lp, torch.cat(old[c]), adv, cfg.clip_eps)
                    loss = tok_loss.sum() / n_tokens  # token-mean over the whole batch
                    if cfg.kl_beta > 0:
                        with torch.no_grad(), policy.disable_adapter():
                            ref = torch.cat(rollout_logprobs(policy, prompts[sl], responses[sl], self.pad_id,
                                                             cfg.sampling_temperature))
                        kl = (torch.exp(ref - lp) - (ref - lp) - 1).sum() / n_tokens  # k3 estimator
                        loss = loss + cfg.kl_beta * kl
                        totals["kl"] += kl.item()
                    loss.backward()
                    totals["loss"] += loss.item()
                    totals["clipped"] += float(was_clipped.sum()) / n_tokens

            self._optimizer_step(backward)
            losses.append(totals["loss"])
            clipped.append(totals["clipped"])
            kls.append(totals["kl"])
        out = {"loss": losses[0], "clip_fraction": sum(clipped[1:]) / max(1, len(clipped) - 1)}
        if cfg.kl_beta > 0:
            out["kl"] = kls[-1]
        return out

    def _infonce_step(self, batch: list, step: int) -> dict:
        """cl (eq. 1-2): InfoNCE of the query against every positive and negative in the batch, on
        the direct-forward embedding. simcse: two dropout views of each passage are positives."""
        cfg = self.cfg
        t0 = time.perf_counter()
        policy = self.policy
        policy.train()  # SimCSE's views come from dropout
        box: dict = {}

        def backward() -> None:
            if cfg.method == "cl":
                q = [self._build(t.query) for t in batch]
                docs = [self._build(t.positive) for t in batch] + [self._build(n) for t in batch for n in t.negatives]
                hq, hd = self._embed_grad(q), self._embed_grad(docs)
            else:
                p = [self._build(x) for x in batch]
                hq, hd = self._embed_grad(p), self._embed_grad(p)  # dropout makes the two views differ
            logits = hq @ hd.T / cfg.cl_temperature
            labels = torch.arange(len(batch), device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            box.update(loss=loss.item(), acc=float((logits.argmax(1) == labels).float().mean()))

        self._optimizer_step(backward)
        return {"loss": box["loss"], "in_batch_accuracy": box["acc"], "time/backward": time.perf_counter() - t0}

    def _embed_grad(self, prompts: list[PromptIds]) -> torch.Tensor:
        return embed_ids(self.policy, prompts, [[] for _ in prompts], pad_id=self.pad_id,
                         pooling="text-mean" if self.cfg.pooling == "rationale-mean" else self.cfg.pooling,
                         layer=self.cfg.layer, share_prefix=True).embeddings

    # -- probes and checkpoints ------------------------------------------------------------
    def probe_texts(self) -> list[str]:
        if self.cfg.probe_texts:
            return list(self.cfg.probe_texts)
        recs = self.report.records[:3]
        return [r.positive for r in recs] if self.cfg.mode == "supervised" else list(recs)

    def _write_samples(self, step: int) -> list[dict]:
        self.policy.eval()
        texts = self.probe_texts()
        with torch.no_grad():
            rats = self._rollouts([self._build(t) for t in texts], sample=False, seed=0)[0]
        rows = [{"step": step, "text": t, "rationale": self.tokenizer.decode(r, skip_special_tokens=True)}
                for t, r in zip(texts, rats)]
        if self.accelerator.is_main_process:
            with open(self.out / "samples.jsonl", "a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        return rows

    def _save(self, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        policy = self.policy

        def write(folder: Path) -> None:
            policy.save_pretrained(folder / "adapter", safe_serialization=True)
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            (folder / "state.json").write_text(json.dumps({"step": step, "time": time.time()}))

        ckpts = self.out / "checkpoints"
        publish_dir(ckpts / f"step-{step:06d}", write)
        for old in sorted(ckpts.glob("step-*"))[:-2]:  # keep the last two
            shutil.rmtree(old, ignore_errors=True)

        def write_adapter(folder: Path) -> None:
            policy.save_pretrained(folder, safe_serialization=True)
            (folder / "grace_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))
            # the inference settings the adapter was trained for (prompt, rationale length, pooling)
            (folder / "encode_settings.json").write_text(json.dumps(self.cfg.encode_settings().to_dict(), indent=1))
            (folder / "tokenizer_info.json").write_text(json.dumps(self.tokenizer_info, indent=1))

        # adapter/ is a link to the newest complete adapters/step-N/, swapped by one atomic rename:
        # the app or the CLI loading it sees the old adapter or the new one, never none
        final, versions = self.out / "adapter", self.out / "adapters"
        staged = publish_dir(versions / f"step-{step:06d}", write_adapter)
        link = self.out / f".adapter-link-{os.getpid()}"
        link.unlink(missing_ok=True)
        try:
            os.symlink(staged.relative_to(self.out), link)
            if final.is_dir() and not final.is_symlink():  # a run folder from before adapters/
                shutil.rmtree(final)
            os.replace(link, final)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        keep = self.cfg.keep_adapters
        for old in sorted(versions.glob("step-*"))[:-keep] if keep > 0 else []:  # keep the last few (0: all)
            if old.resolve() != final.resolve():
                shutil.rmtree(old, ignore_errors=True)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        self._setup()
        metrics_path = self.out / "metrics.jsonl"
        if self.accelerator.is_main_process:
            _remove_leftovers(self.out)
            # rows past the checkpoint are recomputed; the step-0 probe rationales are written again
            _truncate_jsonl(metrics_path, self.start_step)
            _truncate_jsonl(self.out / "samples.jsonl", self.start_step if self.start_step > 0 else -1)
        self.callback({"event": "start", "summary": self.report.summary(), "start_step": self.start_step,
                       "steps": cfg.steps})
        began = time.time()
        step, stopped = self.start_step, False
        if self.start_step == 0 and cfg.sample_every:
            self.callback({"event": "samples", "step": 0, "samples": self._write_samples(0)})
        while step < cfg.steps:
            if self.should_stop():
                stopped = True
                break
            # the time limit is checked once this invocation has made progress (one step at least)
            if cfg.max_minutes and step > self.start_step and (time.time() - began) / 60 >= cfg.max_minutes:
                stopped = True
                break
            step += 1
            t0 = time.perf_counter()
            batch = self._batch(step)
            row = self._grace_step(batch, step) if cfg.method == "grace" else self._infonce_step(batch, step)
            row = {"step": step, **row, "step_time": time.perf_counter() - t0}
            if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                raise FloatingPointError(f"Non-finite value at step {step}: {row}")
            if self.accelerator.is_main_process:
                with open(metrics_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            self.callback({"event": "step", **row})
            if cfg.sample_every and step % cfg.sample_every == 0:
                self.callback({"event": "samples", "step": step, "samples": self._write_samples(step)})
            if step % cfg.save_every == 0 or step == cfg.steps:
                self._save(step)
        if stopped and step > self.start_step and not (self.out / "checkpoints" / f"step-{step:06d}").exists():
            self._save(step)
        if not (self.out / "adapter").exists():
            self._save(step)
        self.callback({"event": "end", "step": step, "stopped_early": stopped})
        return RunResult(output=self.out, steps_done=step, stopped_early=stopped, adapter=self.out / "adapter")


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a run (complete ones are published atomically)."""
    found = sorted(p for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists())
    return found[-1] if found else None


def _truncate_jsonl(path: Path, step: int) -> None:
    """On resume, keep the rows of ``metrics.jsonl`` / ``samples.jsonl`` up to ``step`` (the
    checkpoint's) and drop the rest, which will be recomputed. A line cut by a crash or a full
    disk (partial JSON, NUL bytes, bad UTF-8, no step) is dropped too, so the run can resume.
    Lines end at "\n" only (U+2028 is legal inside a JSON line); the file is replaced atomically."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    keep = []
    for line in raw.split(b"\n"):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if (isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
                and row["step"] <= step):
            keep.append(line.rstrip(b"\r") + b"\n")
    data = b"".join(keep)
    if data != raw:
        with atomic_output(path, "wb") as f:
            f.write(data)


def _remove_leftovers(out: Path) -> None:
    """Temp files of a save or a truncation that a kill interrupted: checkpoint and adapter folders
    being written (``.step-*``, never read: complete ones are renamed into place), the adapter
    link being swapped and partial JSONL rewrites. Only one job writes a run folder at a time."""
    for folder in (out / "checkpoints", out / "adapters"):
        for tmp in folder.glob(".step-*"):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
    for pattern in (".adapter-link-*", ".metrics.jsonl.*.part", ".samples.jsonl.*.part"):
        for tmp in out.glob(pattern):
            if tmp.is_symlink() or tmp.is_file():
                tmp.unlink(missing_ok=True)


def train(cfg: GraceConfig, *, overwrite: bool = False, callback: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Run a training job; the Python API the CLI and the app call."""
    return Trainer(cfg, overwrite=overwrite, callback=callback, should_stop=should_stop).run()
