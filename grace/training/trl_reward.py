"""GRACE rewards for ``trl.GRPOTrainer``: for users who already train with TRL (vLLM generation,
DeepSpeed, FSDP, many GPUs).

TRL samples the rationales and runs the policy-gradient update; ``GraceReward`` scores each
completion with ``grace_rewards`` (eq. 13-17 and the length penalty, the function ``grace train``
uses), reading the embeddings from the policy itself through ``embed_ids`` (the one embedding path):

    reward = GraceReward(model, tokenizer)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, train_dataset=reward.dataset(triplets),
                          args=GRPOConfig(num_generations=4, scale_rewards="none", ...))

``scale_rewards="none"`` gives eq. 18's advantage (reward minus the group mean, no division by the
std). When to use which trainer: ``grace train`` (ours) keeps the exact prompt spans, trains the
stop decision of the template's stop string and runs on 2 CPU cores; TRL scales out on GPUs.

What TRL guarantees, and what this module relies on (checked against trl 1.16):
- TRL calls a reward function in every process with that process's completions only, then gathers
  the rewards. Its sampler lays out each prompt's ``num_generations`` completions consecutively in
  the *global* generation batch, and each process holds one contiguous slice of it, in process
  order; the slice need not hold whole groups (per_device_train_batch_size=3, num_generations=2
  puts one prompt's two completions on two GPUs). So ``GraceReward`` gathers the rows' embeddings
  from every process (``accelerate.utils.gather_object``), forms the groups and the in-batch hard
  negatives over the whole generation batch, and returns its own slice of the rewards.
- TRL tokenises a text prompt with ``tokenizer(text=prompts)`` (special tokens added) and a
  conversational one with ``apply_chat_template(add_generation_prompt=True)``; the reward embeds
  those very ids, with the instruction span located against our prompt builder's P(positive).
- A completion is truncated when its last id is neither an end-of-sequence id (the tokenizer's
  and the generation config's) nor padding: TRL's own test (``completions/clipped_ratio``,
  ``mask_truncated_completions``).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch

from ..model.embedding import embed_ids
from ..model.encoder import MAX_TEXT_TOKENS
from ..model.generation import _eos_ids
from ..model.prompts import PromptBuilder, PromptIds
from ..model.settings import EncodeSettings
from .config import GraceConfig
from .rewards import RewardBreakdown, grace_rewards
from .rollouts import generate

_DEFAULTS = GraceConfig()  # the defaults of ``grace train``: one source


def _world() -> tuple[int, int]:
    """(this process's index, number of processes), as accelerate (and so TRL) sees them."""
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def _gather(items: list) -> list:
    """Every process's ``items``, concatenated in process order (a no-op in one process)."""
    from accelerate.utils import gather_object

    return gather_object(items)


class GraceReward:
    """A TRL reward function: ``__call__(prompts, completions, completion_ids, query, positive, ...)``.

    Each dataset row's ``prompt`` is P(d+) for its positive (``dataset``); its completions form a
    group, and the query's rationale is the group's fixed anchor, generated with the current policy
    when the reward is computed. The reference code samples that anchor (vLLM, temperature 0.5, the
    rollouts' other sampling parameters); ``grace train`` and, by default, this class decode it
    greedily with the encoder's settings, as inference does (``anchor_temperature=0.5`` samples it
    as the reference does). A completion that hit the length limit without ending gets
    ``length_penalty`` (``penalize_truncated``: the reference's rule; TRL takes the advantage itself,
    so ``grace train``'s advantage rules, ``--truncation finished-mean`` or ``mask``, cannot be said
    through a reward). The other defaults are ``GraceConfig``'s.
    """

    __name__ = "grace"

    def __init__(self, model: torch.nn.Module, tokenizer, *, prompt: str = _DEFAULTS.prompt,
                 lambda_consistency: float = _DEFAULTS.lambda_consistency,
                 lambda_hard: float = _DEFAULTS.lambda_hard,
                 reward_temperature: float = _DEFAULTS.reward_temperature,
                 length_penalty: float = _DEFAULTS.length_penalty,
                 penalize_truncated: bool = _DEFAULTS.truncation != "none",
                 anchor_temperature: float = 0.0,
                 settings: EncodeSettings | None = None):
        if reward_temperature <= 0:
            raise ValueError("The reward temperature must be above 0.")
        if anchor_temperature < 0:
            raise ValueError("The anchor temperature must be 0 (greedy) or above.")
        self.model, self.tokenizer = model, tokenizer
        self.prompts = PromptBuilder(tokenizer, prompt)
        self.settings = settings or GraceConfig(prompt=prompt).encode_settings()
        self.lambda_consistency, self.lambda_hard = lambda_consistency, lambda_hard
        self.reward_temperature = reward_temperature
        self.length_penalty, self.penalize_truncated = length_penalty, penalize_truncated
        self.anchor_temperature = anchor_temperature
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.stop_ids = _eos_ids(model, tokenizer) | ({pad} if pad is not None else set())
        self.last: RewardBreakdown | None = None  # the last call's breakdown over the whole batch
        self._warned = False

    # -- the dataset -----------------------------------------------------------------------
    def prompt_text(self, text: str) -> str:
        """P(text) as the string TRL tokenises back into exactly our prompt ids: special tokens
        (a chat template's turn markers) are kept, and a leading BOS is left for the tokenizer
        to add when it adds one itself."""
        ids = self.prompts.build(text, MAX_TEXT_TOKENS).ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids[:1] == [bos] and self._tokenize([""])[0][:1] == [bos]:
            ids = ids[1:]
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def dataset(self, triplets: Sequence) -> "datasets.Dataset":  # noqa: F821
        """A TRL dataset from ``Triplet`` records (``grace.training.data.load_triplets``)."""
        from datasets import Dataset

        rows = [{"prompt": self.prompt_text(t.positive), "query": t.query, "positive": t.positive}
                for t in triplets]
        return Dataset.from_list(rows)

    # -- the reward ------------------------------------------------------------------------
    def _tokenize(self, prompts: list) -> list[list[int]]:
        """The prompt ids TRL generates from (``GRPOTrainer._tokenize_prompts``)."""
        if prompts and isinstance(prompts[0], list):  # conversational
            out = self.tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)
            return [list(x) for x in out["input_ids"]]
        return [list(x) for x in self.tokenizer(text=list(prompts))["input_ids"]]

    def _aligned(self, ids: list[int], positive: str) -> PromptIds:
        """``ids`` with the text span of P(positive): where they differ from our builder's ids
        (another template, a text cut to the limit), the instruction is what they share at the
        start and the cue what they share at the end."""
        built = self.prompts.build(positive)
        if ids == built.ids:
            return built
        if not self._warned:
            warnings.warn("The prompt TRL generated from is not GraceReward's P(positive) token for token; "
                          "its text span is located by the prefix and suffix it shares with P(positive).",
                          stacklevel=3)
            self._warned = True
        head = 0
        while head < min(len(ids), built.text_start) and ids[head] == built.ids[head]:
            head += 1
        tail, cue = 0, len(built.ids) - built.text_end
        while tail < min(len(ids) - head, cue) and ids[-1 - tail] == built.ids[-1 - tail]:
            tail += 1
        return PromptIds(ids=list(ids), text_start=head, text_end=len(ids) - tail)

    def _anchor_settings(self, n: int) -> EncodeSettings:
        s = self.settings.with_(batch_size=max(n, 1))
        if self.anchor_temperature > 0:  # as the reference code: sampled, the rollouts' other settings
            return s.with_(sample=True, temperature=self.anchor_temperature)
        return s.with_(sample=False)  # as grace train and inference: greedy

    def __call__(self, prompts: list, completions: list, completion_ids: list[list[int]], *,
                 query: list[str], positive: list[str], log_metric=None, **_) -> list[float]:
        model = self.model
        rank, _ = _world()
        finished = [bool(ids) and ids[-1] in self.stop_ids for ids in completion_ids]
        rationales = []
        for ids in completion_ids:
            ids = list(ids)
            while ids and ids[-1] in self.stop_ids:
                ids.pop()
            rationales.append(ids)
        prompt_ids = self._tokenize(prompts)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                p_roll = [self._aligned(ids, pos) for ids, pos in zip(prompt_ids, positive)]
                h = embed_ids(model, p_roll, rationales, pad_id=self.pad_id, pooling=self.settings.pooling,
                              layer=self.settings.layer).embeddings.float().cpu()
                # the whole generation batch: every process's rows, in process order
                rows = _gather([(rank, [(tuple(p), q) for p, q in zip(prompt_ids, query)], finished, h)])
                rows.sort(key=lambda row: row[0])
                keys = [key for row in rows for key in row[1]]
                offsets = [0]
                for row in rows:
                    offsets.append(offsets[-1] + len(row[1]))
                groups = _groups(keys)
                mine = [g for g, rows_g in enumerate(groups) if offsets[rank] <= rows_g[0] < offsets[rank + 1]]
                h_mine = None
                if mine:  # this process generates the anchors of the groups that start here
                    p_anchor = [self.prompts.build(keys[groups[g][0]][1], MAX_TEXT_TOKENS) for g in mine]
                    h_mine = generate(model, self.tokenizer, p_anchor, self._anchor_settings(len(mine)),
                                      stop_strings=self.prompts.stop_strings(), pad_id=self.pad_id
                                      ).embeddings.float().cpu()
                anchors = dict(a for part in _gather([[(g, h_mine[j]) for j, g in enumerate(mine)]])
                               for a in part)
        finally:
            model.train(was_training)
        h_all = torch.cat([row[3] for row in rows])
        done = torch.tensor([f for row in rows for f in row[2]])
        order = [i for g in groups for i in g]
        b, k = len(groups), len(groups[0])
        r = grace_rewards(torch.stack([anchors[g] for g in range(b)]), h_all[order].view(b, k, -1),
                          done[order].view(b, k), lambda_consistency=self.lambda_consistency,
                          lambda_hard=self.lambda_hard, temperature=self.reward_temperature,
                          length_penalty=self.length_penalty,
                          truncation="penalty" if self.penalize_truncated else "none")
        self.last = r
        total = [0.0] * len(keys)
        for i, value in zip(order, r.total.flatten().tolist()):
            total[i] = value
        if log_metric is not None:
            for name in ("main", "consistency", "hard_negative", "length_penalty"):
                log_metric(f"grace/{name}", float(getattr(r, name).mean()))
        return total[offsets[rank]:offsets[rank + 1]]


def _groups(keys: list) -> list[list[int]]:
    """Row indices of each group: runs of consecutive rows with the same (prompt, query), as TRL's
    sampler lays out one dataset row's completions; a run holding several rows' completions (a
    duplicated row drawn twice in a row) is cut into groups of the size of the others (their gcd)."""
    runs: list[list[int]] = []
    for i, key in enumerate(keys):
        if runs and keys[runs[-1][0]] == key:
            runs[-1].append(i)
        else:
            runs.append([i])
    k = math.gcd(*(len(r) for r in runs))
    if k < 2:
        raise ValueError("GraceReward needs every prompt's completions together, at least 2 per group "
                         "(GRPOConfig.num_generations >= 2).")
    return [r[j:j + k] for r in runs for j in range(0, len(r), k)]
