"""GRACE training: contrastive similarity as a reward for a rationale policy (eq. 12-19),
with the CL (InfoNCE, eq. 1-2) and SimCSE baselines on the same data, LoRA and budget.

One step of GRACE, supervised (eq. 12): the current policy writes one greedy rationale for each
query and negative (fixed anchors) and K sampled rationales for each positive; every text is
embedded through ``embed_ids`` (the encoder's own path); the rewards score the K rollouts; the
advantage is the reward minus its group mean; the loss is -A * log pi(rollout | P(d+)).
Unsupervised (eq. 20-21): an anchor rationale and K rollouts of the same passage.

The loop is ours rather than ``trl.GRPOTrainer``: TRL tokenises prompts itself, while pooling
needs the exact instruction/text spans of ``PromptBuilder``, and TRL's loss would also train on
tokens generated after the template's stop string. The config follows TRL's pattern and the
loop runs under ``accelerate launch``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..model.backbone import load_backbone, publish_dir
from .config import GraceConfig
from .data import load_passages, load_triplets
from ..model.embedding import decoder_body, embed_ids
from ..model.generation import generate_rationales, left_pad
from ..model.settings import EncodeSettings
from ..model.prompts import PromptBuilder, PromptIds
from .rewards import (consistency_reward, contrastive_reward, group_advantage, hard_negative_reward,
                      self_reward, total_reward)


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
    return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=dropout,
                                            target_modules=targets, task_type="CAUSAL_LM"))


def rollout_logprobs(model, prompts: list[PromptIds], rationales: list[list[int]], pad_id: int,
                     temperature: float = 1.0) -> list[torch.Tensor]:
    """Per-token log pi(r_t | P(x), r_<t) of each rationale (eq. 19), with gradients.

    Logits are computed only at the positions that predict rationale tokens: the 262k-way output
    layer never runs over the prompt.
    """
    device = next(model.parameters()).device
    seqs = [list(p.ids) + list(r) for p, r in zip(prompts, rationales)]
    ids, attn = left_pad(seqs, pad_id, device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    states = decoder_body(model)(input_ids=ids, attention_mask=attn, position_ids=position_ids,
                                 use_cache=False).last_hidden_state
    width = ids.shape[1]
    rows, cols, targets, lengths = [], [], [], []
    for i, r in enumerate(rationales):
        n = len(r)
        rows += [i] * n
        cols += list(range(width - n - 1, width - 1))  # position t-1 predicts token t
        targets += list(r)
        lengths.append(n)
    if not targets:
        return [states.sum() * 0.0 for _ in rationales]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    logits = base.get_output_embeddings()(states[rows, cols]).float()
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    logp = torch.log_softmax(logits / temperature, dim=-1)
    tok = logp.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).squeeze(1)
    return list(torch.split(tok, lengths))


class Trainer:
    """Runs one training job; ``callback(event)`` sees every step, ``should_stop()`` cancels."""

    def __init__(self, cfg: GraceConfig, *, overwrite: bool = False,
                 callback: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        cfg.validate()
        self.cfg = cfg
        self.callback = callback or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
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
        if self.out.exists() and any(self.out.iterdir()):
            if not cfg_path.exists() or not GraceConfig.load(cfg_path).same_run_as(self.cfg):
                if not overwrite:
                    raise RunExistsError(f"{self.out} already holds a different run; pass --overwrite to replace it "
                                         "or choose another --output.")
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
        backbone = load_backbone(cfg.model, device=self.accelerator.device)
        if cfg.method == "simcse":
            backbone.model.config.get_text_config().attention_dropout = 0.1
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
        return self.accelerator.unwrap_model(self.model)

    def _batch(self, step: int) -> list:
        """Examples of step ``step`` (1-based): a fresh seeded permutation each epoch."""
        n, b = len(self.report.records), self.cfg.batch_size
        per_epoch = n // b
        epoch, k = divmod(step - 1, per_epoch)
        order = list(range(n))
        random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        idx = order[k * b:(k + 1) * b]
        return [self.report.records[i] for i in idx[rank::world] or idx]

    # -- one step of each method -----------------------------------------------------------
    def _generate(self, prompts: list[PromptIds], *, sample: bool, seed: int, finished=None) -> list[list[int]]:
        s = self._settings(len(prompts), sample=sample, seed=seed)
        return generate_rationales(self.policy, self.tokenizer, prompts, s,
                                   stop_strings=self.prompts.stop_strings(), finished=finished)

    def _settings(self, n: int, *, sample: bool, seed: int) -> EncodeSettings:
        cfg = self.cfg
        return cfg.encode_settings().with_(sample=sample, temperature=cfg.sampling_temperature, top_p=cfg.top_p,
                                           repetition_penalty=1.0, seed=seed, batch_size=max(n, 1))

    def _fast_ok(self, prompts: list[PromptIds]) -> bool:
        from ..model.fastgen import supports

        return supports(self.policy, prompts, self._settings(len(prompts), sample=False, seed=0))

    def _generate_embed(self, prompts: list[PromptIds], *, sample: bool, seed: int):
        from ..model.fastgen import generate_and_embed

        return generate_and_embed(self.policy, self.tokenizer, prompts,
                                  self._settings(len(prompts), sample=sample, seed=seed),
                                  stop_strings=self.prompts.stop_strings())

    def _embed(self, prompts, rationales) -> torch.Tensor:
        return embed_ids(self.policy, prompts, rationales, pad_id=self.pad_id, pooling=self.cfg.pooling,
                         layer=self.cfg.layer).embeddings

    def _grace_step(self, batch: list, step: int) -> dict:
        cfg, k = self.cfg, self.cfg.rollouts
        b = len(batch)
        timings = {}
        t0 = time.perf_counter()
        self.model.eval()
        supervised = cfg.mode == "supervised"
        anchors_text = [t.query for t in batch] if supervised else list(batch)
        targets_text = [t.positive for t in batch] if supervised else list(batch)
        negs_text = [n for t in batch for n in t.negatives] if supervised else []
        n_negs = [len(t.negatives) for t in batch] if supervised else []
        p_anchor = [self.prompts.build(x) for x in anchors_text]
        p_neg = [self.prompts.build(x) for x in negs_text]
        p_target = [self.prompts.build(x) for x in targets_text]
        p_roll = [p for p in p_target for _ in range(k)]
        with torch.no_grad():
            if self._fast_ok(p_anchor + p_neg + p_roll):
                # one pass per group gives rationales and their embeddings (grace.fastgen)
                fixed_r = self._generate_embed(p_anchor + p_neg, sample=False, seed=cfg.seed + step)
                roll_r = self._generate_embed(p_roll, sample=True, seed=cfg.seed * 7919 + step)
                fixed, rolls, finished = fixed_r.rationales, roll_r.rationales, roll_r.finished
                emb = torch.cat([fixed_r.embed.embeddings, roll_r.embed.embeddings]).float()
                timings["time/generate"] = time.perf_counter() - t0
                timings["time/embed"] = 0.0
            else:
                fixed = self._generate(p_anchor + p_neg, sample=False, seed=cfg.seed + step)
                finished: list[bool] = []
                rolls = self._generate(p_roll, sample=True, seed=cfg.seed * 7919 + step, finished=finished)
                timings["time/generate"] = time.perf_counter() - t0
                t1 = time.perf_counter()
                emb = self._embed(p_anchor + p_neg + p_roll, fixed + rolls).float()
                timings["time/embed"] = time.perf_counter() - t1
        h_anchor = emb[:b]
        h_roll = emb[b + len(p_neg):].view(b, k, -1)
        if supervised:
            h_neg_flat = emb[b:b + len(p_neg)]
            m = max(n_negs)
            h_neg = torch.zeros(b, m, emb.shape[1])
            mask = torch.zeros(b, m, dtype=torch.bool)
            pos = 0
            for i, c in enumerate(n_negs):
                h_neg[i, :c], mask[i, :c] = h_neg_flat[pos:pos + c], True
                pos += c
            main = contrastive_reward(h_anchor, h_roll, h_neg, mask)  # each example's own negatives
        else:
            main = self_reward(h_anchor, h_roll)
        cons = consistency_reward(h_roll)
        hard = hard_negative_reward(h_anchor, h_roll) if b > 1 else torch.zeros_like(main)
        truncated = ~torch.tensor(finished, dtype=torch.bool).view(b, k)
        r = total_reward(main, cons, hard, lambda_consistency=cfg.lambda_consistency, lambda_hard=cfg.lambda_hard,
                         temperature=cfg.reward_temperature, length_penalty=cfg.length_penalty,
                         truncated=truncated if cfg.penalize_truncated else None)
        adv = group_advantage(r.total)  # eq. 18
        # eq. 19: loss = - sum_k A_k log pi(rollout_k | P(d+)); token log-probs summed per rollout and
        # divided by the length limit (a constant, so long and short rollouts weigh alike per token)
        t2 = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        flat_adv = adv.flatten().tolist()
        loss_total, kl_total, chunk = 0.0, 0.0, max(1, k)
        for start in range(0, len(p_roll), chunk):
            sl = slice(start, start + chunk)
            lps = rollout_logprobs(self.model, p_roll[sl], rolls[sl], self.pad_id, cfg.sampling_temperature)
            terms = [-a * lp.sum() / cfg.max_new_tokens for a, lp in zip(flat_adv[sl], lps)]
            loss = torch.stack(terms).sum() / len(p_roll)
            if cfg.kl_beta > 0:
                with torch.no_grad(), self.policy.disable_adapter():
                    ref = rollout_logprobs(self.policy, p_roll[sl], rolls[sl], self.pad_id, cfg.sampling_temperature)
                kls = [(torch.exp(rf - lp) - (rf - lp) - 1).mean() if len(lp) else lp.sum() * 0
                       for lp, rf in zip(lps, ref)]  # k3 estimator
                kl = torch.stack(kls).sum() / len(p_roll)
                loss = loss + cfg.kl_beta * kl
                kl_total += kl.item()
            self.accelerator.backward(loss)
            loss_total += loss.item()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        timings["time/backward"] = time.perf_counter() - t2
        lengths = [len(x) for x in rolls]
        main_name = "reward/contrastive" if supervised else "reward/self"
        out = {main_name: float(r.main.mean()), "reward/consistency": float(r.consistency.mean()),
               "reward/hard_negative": float(r.hard_negative.mean()),
               "reward/length_penalty": float(r.length_penalty.mean()), "reward/total": float(r.total.mean()),
               "advantage_std": float(adv.std()), "loss": loss_total,
               "rationale_length": sum(lengths) / len(lengths),
               "truncation_rate": float(truncated.float().mean()), **timings}
        if cfg.kl_beta > 0:
            out["kl"] = kl_total
        return out

    def _infonce_step(self, batch: list, step: int) -> dict:
        """cl (eq. 1-2): InfoNCE of the query against every positive and negative in the batch, on
        the direct-forward embedding. simcse: two dropout views of each passage are positives."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.method == "cl":
            q = [self.prompts.build(t.query) for t in batch]
            docs = [self.prompts.build(t.positive) for t in batch] + \
                   [self.prompts.build(n) for t in batch for n in t.negatives]
            hq = self._embed_grad(q)
            hd = self._embed_grad(docs)
        else:
            p = [self.prompts.build(x) for x in batch]
            hq, hd = self._embed_grad(p), self._embed_grad(p)  # dropout makes the two views differ
        logits = hq @ hd.T / cfg.cl_temperature
        labels = torch.arange(len(batch), device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        self.accelerator.backward(loss)
        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        acc = float((logits.argmax(1) == labels).float().mean())
        return {"loss": loss.item(), "in_batch_accuracy": acc, "time/backward": time.perf_counter() - t0}

    def _embed_grad(self, prompts: list[PromptIds]) -> torch.Tensor:
        return embed_ids(self.model, prompts, [[] for _ in prompts], pad_id=self.pad_id,
                         pooling="text-mean" if self.cfg.pooling == "rationale-mean" else self.cfg.pooling,
                         layer=self.cfg.layer).embeddings

    # -- probes and checkpoints ------------------------------------------------------------
    def probe_texts(self) -> list[str]:
        if self.cfg.probe_texts:
            return list(self.cfg.probe_texts)
        recs = self.report.records[:3]
        return [r.positive for r in recs] if self.cfg.mode == "supervised" else list(recs)

    def _write_samples(self, step: int) -> list[dict]:
        self.model.eval()
        texts = self.probe_texts()
        with torch.no_grad():
            rats = self._generate([self.prompts.build(t) for t in texts], sample=False, seed=0)
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

        final = self.out / "adapter"
        staged = publish_dir(self.out / f".adapter-{step}", write_adapter)
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        self._setup()
        metrics_path = self.out / "metrics.jsonl"
        _truncate_metrics(metrics_path, self.start_step)
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


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric rows past the checkpoint (they will be recomputed)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def train(cfg: GraceConfig, *, overwrite: bool = False, callback: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Run a training job; the Python API the CLI and the app call."""
    return Trainer(cfg, overwrite=overwrite, callback=callback, should_stop=should_stop).run()
