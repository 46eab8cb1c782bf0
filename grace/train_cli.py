"""``python -m grace train``: flags generated from GraceConfig's fields (one source of defaults)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import GraceConfig


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    groups = {}
    for f in dataclasses.fields(GraceConfig):
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = {"help": meta.get("help", "") + (f" (default: {default})" if default not in ("", [], False) else ""),
              "dest": f.name, "default": default}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        group = groups.setdefault(_group(f.name), p.add_argument_group(_group(f.name)))
        if f.type in ("bool", bool):
            if default:  # a switch that is on by default is turned off with --no-NAME
                flag = "--no-" + f.name.replace("_", "-")
                kw["help"] = "do not " + meta.get("help", "")
            group.add_argument(flag, action="store_false" if default else "store_true", **kw)
        elif f.type in ("list", list):
            group.add_argument(flag, nargs="+", **kw)
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            group.add_argument(flag, type=typ, **kw)
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that holds a different run")


def _group(name: str) -> str:
    if name in ("method", "mode", "data", "output", "model", "prompt"):
        return "what to train"
    if name.startswith("lora"):
        return "LoRA"
    if name in ("steps", "batch_size", "lr", "weight_decay", "max_grad_norm", "seed"):
        return "optimisation"
    if name in ("pooling", "layer", "cl_temperature"):
        return "embedding"
    if name in ("sample_every", "save_every", "max_minutes", "probe_texts", "skip_bad", "device"):
        return "bookkeeping"
    return "GRACE rollouts and rewards"


def config_from_args(args: argparse.Namespace) -> GraceConfig:
    return GraceConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GraceConfig)})


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .trainer import train

    cfg = config_from_args(args)
    cfg.validate()
    bar = None

    def on_event(e: dict) -> None:
        nonlocal bar
        if e["event"] == "start":
            print(e["summary"], file=sys.stderr)
            bar = tqdm(total=e["steps"], initial=e["start_step"], desc=f"{cfg.method} {cfg.mode}", unit="step")
        elif e["event"] == "step":
            bar.update(1)
            keys = [k for k in e if k.startswith("reward/")] + ["loss"]
            parts = [f"{k.split('/')[-1]}={e[k]:+.3f}" for k in keys if k in e]
            bar.write(f"step {e['step']}: " + " ".join(parts) + f" ({e['step_time']:.1f}s)")
        elif e["event"] == "samples":
            for s in e["samples"][:1]:
                bar.write(f"  probe @ step {e['step']}: {s['rationale'][:100]!r}") if bar else None
        elif e["event"] == "end" and bar is not None:
            bar.close()

    result = train(cfg, overwrite=args.overwrite, callback=on_event)
    how = "stopped early" if result.stopped_early else "finished"
    print(f"{how} after {result.steps_done} steps; adapter in {result.adapter} "
          f"(use: python -m grace encode --model {cfg.model} --adapter {result.adapter} ...)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune with GRACE, or the CL / SimCSE baselines (LoRA)",
                       description="Train a LoRA adapter. GRACE treats contrastive similarity as a reward for "
                                   "sampled rationales (policy gradient); cl and simcse are the paper's "
                                   "contrastive baselines on the direct-forward embedding.")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)
