"""The rollout inspector's computation: one logged GRACE step (a row of ``rollouts.jsonl``) as a
table, each example's rollouts sorted by advantage, and a sentence naming, for each example, the
rollout the update pushed the policy toward and the one it pushed it away from."""

from __future__ import annotations

HEADERS = ["example", "rank", "advantage", "R_total", "R_main", "R_consist", "R_hard", "length pen.", "tokens",
           "ended", "clipped %", "rationale"]  # the long text last: the numbers stay in view


def step_table(row: dict, max_chars: int = 120) -> list[list]:
    """``HEADERS`` rows of one logged step: per example a header row (its query and positive, and
    its greedy anchor rationale), then its rollouts, highest advantage first (rank 1 is the one the
    policy was pushed toward most, the last the one it was pushed away from most)."""
    out = []
    for e, ex in enumerate(row.get("examples", []), start=1):
        q, p = ex["query"][:max_chars], ex["positive"][:max_chars]
        out.append([e, ""] + [None] * 9 + [f"query: {q} | positive: {p} | anchor: {ex['anchor']}"])
        ranked = sorted(ex["rollouts"], key=lambda r: -r["advantage"])
        for rank, r in enumerate(ranked, start=1):
            out.append([e, rank, round(r["advantage"], 4), round(r["total"], 4), round(r["main"], 4),
                        round(r["consistency"], 4), round(r["hard_negative"], 4), round(r["length_penalty"], 4),
                        r["length"], "yes" if r["finished"] else "cut", round(100 * r["clip_fraction"], 1),
                        r["rationale"]])
    return out


def pushes(row: dict, max_chars: int = 80) -> list[str]:
    """For each example: the rollout with the highest advantage and the one with the lowest (when
    the advantages differ; a group whose rewards are all equal teaches nothing)."""
    lines = []
    for e, ex in enumerate(row.get("examples", []), start=1):
        rs = ex["rollouts"]
        top, low = max(rs, key=lambda r: r["advantage"]), min(rs, key=lambda r: r["advantage"])
        if top["advantage"] == low["advantage"]:
            a = top["advantage"]
            lines.append(f"Example {e}: every rollout has the same advantage; no update." if a == 0 else
                         f"Example {e}: every rollout has advantage {a:+.2f}; the update pushes "
                         f"{'toward' if a > 0 else 'away from'} all of them alike.")
            continue
        lines.append(f"Example {e}: toward \"{top['rationale'][:max_chars]}\" ({top['advantage']:+.2f}), away "
                     f"from \"{low['rationale'][:max_chars]}\" ({low['advantage']:+.2f}).")
    return lines
