"""GRACE training: contrastive similarity as a reward for a rationale policy (eq. 12-19), with the
CL (InfoNCE, eq. 1-2) and SimCSE baselines on the same data, LoRA and budget.

A GRACE step, in the reference code's batch shape: one generation pass writes a greedy anchor for
each of the B queries and K sampled rollouts for each positive, with their embeddings and the
sampled tokens' log-probabilities (``rollouts``); ``grace_rewards`` scores them over the whole
batch (eq. 13-18); ``policy_update`` trains each rollout once per epoch, an optimizer step per
mini-batch, PPO-clipped, token-mean (eq. 19; ``policy``). Unsupervised (eq. 20-21): an anchor
rationale and K rollouts of one passage. This module holds the set-up, the step functions and the
loop; LoRA and checkpoints are ``lora``'s, the step's batch ``data``'s, InfoNCE ``infonce``'s, the
rollout log ``rollouts``'s, files ``RunFolder``'s. Under ``accelerate launch`` each process takes
its share of the batch and gathers the others' embeddings, and the gradients are summed, so
several processes take the step one would.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..files.run_folder import RunFolder
from ..model.backbone import load_backbone
from ..model.embedding import embed_ids
from ..model.encoder import MAX_TEXT_TOKENS  # training texts are cut like the encoder cuts them
from ..model.prompts import PromptBuilder, PromptIds
from .config import GraceConfig
from .data import load_passages, load_triplets, step_batch
from .distributed import gather_rows, summing
from .infonce import infonce_backward
from .lora import add_lora, resume_from, save_to, tokenizer_info, training_dtype
from .optim import OptimizerStep
from .policy import ContrastiveTerm, mini_batches, policy_update
from .rewards import RewardBreakdown, contrastive_reward, grace_rewards, negatives_by_example
from .rollouts import (Rollouts, anchors_and_rollouts, generate, logs_rollouts, rollout_seed, rollout_settings,
                       write_rollout_log)


class RunExistsError(ValueError):
    """The output folder holds a different run."""


@dataclass
class RunResult:
    output: Path
    steps_done: int
    stopped_early: bool
    adapter: Path


class Trainer:
    """Runs one training job; ``callback(event)`` sees every step, ``should_stop()`` cancels."""

    def __init__(self, cfg: GraceConfig, *, overwrite: bool = False, callback: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, started: float | None = None):
        # ``cfg.max_minutes`` counts from ``started`` (wall clock; default: now), so loading the
        # data and the model is inside the limit (a job passes its process's start)
        self.started = time.time() if started is None else started
        cfg.validate()
        self.cfg = cfg
        self.callback = callback or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > cfg.batch_size:  # rewards see the whole batch (gathered), but each process needs a share
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
        self.folder = RunFolder(cfg.output)
        self.main_process = os.environ.get("RANK", "0") == "0"
        self.start_step, self._refused = 0, None
        if self.main_process:
            try:
                self.start_step = self._prepare_output(overwrite)
            except RunExistsError as e:
                if world == 1:
                    raise
                self._refused = str(e)  # every process raises it once they can talk (``_setup``)

    def _prepare_output(self, overwrite: bool) -> int:
        """Refuse (or with ``overwrite`` replace) a folder holding another run; save the config;
        the step to resume from. Only the main process runs this; the others read the folder after
        it is done (``_setup``), so ``--overwrite`` never removes a folder another process reads."""
        run = self.folder
        if self.main_process:
            if run.has_files():
                same = run.has_config() and GraceConfig.load(run.config).same_run_as(self.cfg)
                if not same and not overwrite:
                    raise RunExistsError(f"{run.path} already holds a different run; pass --overwrite to "
                                         "replace it or choose another --output.")
                if not same or overwrite:
                    run.remove()
            run.create()
            run.write_config(self.cfg.to_dict())
        return run.resume_step()

    # -- set-up ----------------------------------------------------------------------------
    def _setup(self) -> None:
        from accelerate import Accelerator

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.accelerator = Accelerator(cpu=cfg.device == "cpu")
        from accelerate.utils import broadcast_object_list

        refused = broadcast_object_list([self._refused])[0]  # the main process's verdict on the folder
        if refused:
            raise RunExistsError(refused)
        self.accelerator.wait_for_everyone()  # the main process has prepared the run folder
        self.start_step = self.folder.resume_step()
        self.reduce = summing(self.accelerator)
        dev = self.accelerator.device
        # SimCSE's positives differ only by dropout: it must be set when the model is built
        overrides = {"attention_dropout": 0.1} if cfg.method == "simcse" else None
        backbone = load_backbone(cfg.model, device=dev, dtype=training_dtype(cfg.dtype, dev),
                                 config_overrides=overrides)
        self.tokenizer = backbone.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.prompts = PromptBuilder(self.tokenizer, cfg.prompt)
        model = add_lora(backbone.model, cfg)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        resume_from(self.folder, model, optimizer)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self._optimizer_step = OptimizerStep(self.accelerator, self.model, self.params, self.optimizer,
                                             cfg.max_grad_norm)
        self.tokenizer_info = tokenizer_info(cfg.model, self.tokenizer, self.prompts)

    @property
    def policy(self):
        """The PEFT model itself. Forward passes go through it (not through a DDP wrapper, which
        could not reach the decoder body); ``OptimizerStep`` averages the gradients across
        processes instead."""
        return self.accelerator.unwrap_model(self.model)

    def _batch(self, step: int) -> tuple[list, list[int]]:
        """This process's examples of step ``step`` and their positions in the whole batch."""
        idx, positions = step_batch(len(self.report.records), self.cfg.batch_size, self.cfg.seed, step,
                                    self.accelerator.process_index, self.accelerator.num_processes)
        return [self.report.records[i] for i in idx], positions

    def _build(self, text: str) -> PromptIds:
        return self.prompts.build(text, MAX_TEXT_TOKENS)

    def _rollouts(self, prompts: list[PromptIds], *, sample: bool, seed: int) -> Rollouts:
        s = rollout_settings(self.cfg, len(prompts), sample=sample, seed=seed)
        return generate(self.policy, self.tokenizer, prompts, s, stop_strings=self.prompts.stop_strings(),
                        pad_id=self.pad_id)

    # -- one step of each method -----------------------------------------------------------
    def _grace_step(self, batch: list, positions: list[int], step: int) -> dict:
        """eq. 12-19: anchors and K rollouts in one pass, rewards and advantages over the whole
        batch, then each rollout trained once per epoch in mini-batches."""
        cfg, k = self.cfg, self.cfg.rollouts
        b = len(batch)
        t0 = time.perf_counter()
        self.policy.eval()  # no dropout: rollouts, rewards and log-probabilities see the same policy
        supervised = cfg.mode == "supervised"
        p_anchor = [self._build(t.query if supervised else t) for t in batch]
        p_roll = [self._build(t.positive if supervised else t) for t in batch for _ in range(k)]
        # each rollout's own seed, from its place in the whole batch: the same rollout whether one
        # process or several generate it
        seeds = [rollout_seed(cfg.seed, step, pos, j) for pos in positions for j in range(k)]
        with torch.no_grad():
            anchors, roll = self._generate(p_anchor, p_roll, seeds)
            finished = torch.tensor(roll.finished, device=self.accelerator.device).view(b, k)
            r, mine, every_anchor = self._rewards(anchors.embeddings, roll.embeddings.view(b, k, -1), finished)
            logged = {}
            if supervised and cfg.log_negatives_every and step % cfg.log_negatives_every == 0:
                logged = self._contrastive_with_negatives(batch, anchors.embeddings, roll.embeddings.view(b, k, -1),
                                                          step)
        t_gen = time.perf_counter() - t0
        t1 = time.perf_counter()
        # pi_old from the sampling pass in float32; in bfloat16 one-token decoding and the full-sequence
        # training pass round differently, so it is recomputed there (as verl always does)
        exact = next(self.policy.parameters()).dtype == torch.float32
        contrastive = None
        if cfg.contrastive_weight:  # GRACE + InfoNCE: rollout i*k+j of this process belongs to anchor mine.start+i
            contrastive = ContrastiveTerm(every_anchor, [mine.start + i for i in range(b) for _ in range(k)],
                                          roll.rationales, cfg.contrastive_weight, cfg.cl_temperature, cfg.pooling,
                                          cfg.layer)
        stats = self._policy_update(p_roll, roll.responses, r.advantage[mine].flatten(),
                                    mini_batches(positions, k, cfg.mini_batch_size, cfg.batch_size),
                                    roll.logprobs if exact else None, roll.finished, contrastive=contrastive)
        clip = stats.pop("rollout_clip_fraction")
        if logs_rollouts(step):
            texts = [(t.query, t.positive) if supervised else (t, t) for t in batch]
            write_rollout_log(self.accelerator, self.folder.append_rollouts, self.tokenizer, step, texts, positions,
                              anchors, roll, r, clip, k)
        counts = self.reduce(torch.tensor([float(sum(len(x) for x in roll.responses)), float(sum(roll.finished)),
                                           float(len(roll.responses))], device=self.accelerator.device)).tolist()
        return {"reward/positive" if supervised else "reward/self": float(r.main.mean()), **logged,
                "reward/consistency": float(r.consistency.mean()),
                "reward/hard_negative": float(r.hard_negative.mean()),
                "reward/length_penalty": float(r.length_penalty.mean()), "reward/total": float(r.total.mean()),
                "advantage_std": float(r.advantage.std()), **stats,
                "rationale_length": counts[0] / counts[2], "truncation_rate": 1.0 - counts[1] / counts[2],
                "rollout_tokens": counts[0], "time/generate": t_gen, "time/backward": time.perf_counter() - t1}

    def _generate(self, anchors: list[PromptIds], rollouts: list[PromptIds], seeds: list[int]
                  ) -> tuple[Rollouts, Rollouts]:
        return anchors_and_rollouts(self.policy, self.tokenizer, anchors, rollouts, self.cfg, seeds=seeds,
                                    stop_strings=self.prompts.stop_strings(), pad_id=self.pad_id)

    def _policy_update(self, prompts: list[PromptIds], responses: list[list[int]], advantages: torch.Tensor,
                       batches: list[list[int]] | None = None, old_logprobs: list[torch.Tensor] | None = None,
                       finished: list[bool] | None = None, contrastive: ContrastiveTerm | None = None) -> dict:
        """eq. 19 on one step's rollouts (``policy_update``); ``batches`` (default: one mini-batch)."""
        cfg = self.cfg
        return policy_update(self.policy, prompts, responses, advantages, pad_id=self.pad_id,
                             optimizer_step=self._optimizer_step, batches=batches or [list(range(len(responses)))],
                             epochs=cfg.updates_per_batch, clip_eps=cfg.clip_eps, temperature=cfg.sampling_temperature,
                             kl_beta=cfg.kl_beta, dual_clip=cfg.dual_clip, old_logprobs=old_logprobs,
                             reduce=self.reduce, finished=finished, cut_loss=cfg.cut_rollout_loss,
                             contrastive=contrastive)

    def _rewards(self, h_anchor: torch.Tensor, h_roll: torch.Tensor, finished: torch.Tensor
                 ) -> tuple[RewardBreakdown, slice, torch.Tensor]:
        """eq. 13-18 over the whole batch (every process's examples gathered); which rows are this
        process's; and every process's anchors."""
        cfg = self.cfg
        acc = self.accelerator
        anchors, offset = gather_rows(acc, h_anchor)
        rollouts, _ = gather_rows(acc, h_roll)
        done, _ = gather_rows(acc, finished.long())
        r = grace_rewards(anchors, rollouts, done.bool(), lambda_consistency=cfg.lambda_consistency,
                          lambda_hard=cfg.lambda_hard, temperature=cfg.reward_temperature,
                          length_penalty=cfg.length_penalty, truncation=cfg.truncation,
                          truncated_advantage=cfg.truncated_advantage, advantage_scale=cfg.advantage_scale)
        return r, slice(offset, offset + h_anchor.shape[0]), anchors

    def _contrastive_with_negatives(self, batch, h_anchor, h_roll, step) -> dict:
        """eq. 13 in full, for the log: greedy rationales of the negatives, - their mean similarity."""
        negs = [n for t in batch for n in t.negatives]
        if not negs:
            return {}
        h = self._rollouts([self._build(n) for n in negs], sample=False, seed=self.cfg.seed + step).embeddings
        h_neg, mask = negatives_by_example(h, [len(t.negatives) for t in batch])
        r = contrastive_reward(h_anchor, h_roll, h_neg, mask)
        total = self.reduce(torch.stack([r.sum(), torch.tensor(float(r.numel()), device=r.device)]))
        return {"reward/contrastive": float(total[0] / total[1])}  # every process's rollouts

    def _infonce_step(self, batch: list, step: int) -> dict:
        """cl and simcse (eq. 1-2): one optimizer step of InfoNCE over the whole batch."""
        t0 = time.perf_counter()
        self.policy.train()  # SimCSE's views come from dropout
        box: dict = {}

        def backward() -> None:
            box.update(infonce_backward(self.accelerator, self.reduce, self._embed_grad, batch, self.cfg.method,
                                        self.cfg.cl_temperature))

        norm = self._optimizer_step(backward)
        return {"loss": box["loss"], "in_batch_accuracy": box["acc"], "grad_norm": norm,
                "time/backward": time.perf_counter() - t0}

    def _embed_grad(self, texts: list[str]) -> torch.Tensor:
        """The direct-forward embedding of ``texts``, with gradients (what CL and SimCSE train)."""
        prompts = [self._build(t) for t in texts]
        direct = self.cfg.encode_settings().direct()
        return embed_ids(self.policy, prompts, [[] for _ in prompts], pad_id=self.pad_id,
                         pooling=direct.pooling, layer=direct.layer, share_prefix=True).embeddings

    # -- probes and saving -----------------------------------------------------------------
    def probe_texts(self) -> list[str]:
        if self.cfg.probe_texts:
            return list(self.cfg.probe_texts)
        recs = self.report.records[:3]
        return [r.positive for r in recs] if self.cfg.mode == "supervised" else list(recs)

    def _write_samples(self, step: int) -> list[dict]:
        self.policy.eval()
        texts = self.probe_texts()
        with torch.no_grad():
            rats = self._rollouts([self._build(t) for t in texts], sample=False, seed=0).rationales
        rows = [{"step": step, "text": t, "rationale": self.tokenizer.decode(r, skip_special_tokens=True)}
                for t, r in zip(texts, rats)]
        if self.accelerator.is_main_process:
            self.folder.append_samples(rows)
        return rows

    def _save(self, step: int) -> None:
        """A checkpoint (to resume from) and a published adapter version (to encode with)."""
        if self.accelerator.is_main_process:
            save_to(self.folder, step, self.policy, self.optimizer, self.cfg, self.tokenizer_info)

    def _all_stop(self, mine: bool) -> bool:
        """Whether any process stops (a cancel or the time limit seen by one): all stop at the same
        step, so none waits in a gather the others never reach."""
        return float(self.reduce(torch.tensor([float(mine)], device=self.accelerator.device))) > 0

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        self._setup()
        if self.accelerator.is_main_process:
            self.folder.remove_leftovers()
            self.folder.truncate_logs(self.start_step)  # rows past the checkpoint are recomputed
        self.callback({"event": "start", "summary": self.report.summary(), "start_step": self.start_step,
                       "steps": cfg.steps})
        began = self.started  # the model load counts against max_minutes
        step, stopped = self.start_step, False
        if self.start_step == 0 and cfg.sample_every:
            self.callback({"event": "samples", "step": 0, "samples": self._write_samples(0)})
        while step < cfg.steps:
            # the time limit is checked once this invocation has made progress (one step at least)
            late = bool(cfg.max_minutes) and step > self.start_step and (time.time() - began) / 60 >= cfg.max_minutes
            if self._all_stop(self.should_stop() or late):
                stopped = True
                break
            step += 1
            t0 = time.perf_counter()
            batch, positions = self._batch(step)
            row = (self._grace_step(batch, positions, step) if cfg.method == "grace"
                   else self._infonce_step(batch, step))
            row = {"step": step, **row, "step_time": time.perf_counter() - t0}
            if not all(math.isfinite(v) for v in row.values() if isinstance(v, float)):
                raise FloatingPointError(f"Non-finite value at step {step}: {row}")
            if self.accelerator.is_main_process:
                self.folder.append_metrics(row)
            self.callback({"event": "step", **row})
            if cfg.sample_every and step % cfg.sample_every == 0:
                self.callback({"event": "samples", "step": step, "samples": self._write_samples(step)})
            if step % cfg.save_every == 0 or step == cfg.steps:
                self._save(step)
        if stopped and step > self.start_step and not self.folder.has_checkpoint(step):
            self._save(step)
        if not self.folder.has_adapter():
            self._save(step)
        self.callback({"event": "end", "step": step, "stopped_early": stopped})
        return RunResult(output=self.folder.path, steps_done=step, stopped_early=stopped, adapter=self.folder.adapter)


def train(cfg: GraceConfig, *, overwrite: bool = False, callback: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, started: float | None = None) -> RunResult:
    """Run a training job; the Python API the CLI and the app call. ``cfg.max_minutes`` counts from
    ``started`` (``time.time()``; default: this call), the set-up and the model load included."""
    return Trainer(cfg, overwrite=overwrite, callback=callback, should_stop=should_stop, started=started).run()
