"""Prompt templates P(x) and the builder that returns token ids with the span of each segment.

A template is data: an instruction (which may hold few-shot examples), a label that introduces
the text, and a cue after it from which the model writes its rationale. Everything that is not
the text itself is an *instruction* token and is excluded from pooling (eq. 11: the mean runs
over t > L_sys), so the template adds no shared offset to every embedding.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

_MARKER = "\u2063GRACE_TEXT\u2063"  # invisible separator: never typed by a user


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    instruction: str
    text_label: str = "Text:\n"
    cue: str = "Analysis:"
    stop: tuple[str, ...] = ("\n\n",)
    description: str = ""
    sep: str = "\n\n"  # between the instruction and the text label
    cue_sep: str = "\n"  # between the text and the cue

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


_FEWSHOT_INSTRUCTION = """Text: How often should I water a cactus during the winter?
Topic: gardening
Keywords: cactus, watering, winter, succulent plants, dormancy

Text: The Eiffel Tower was completed in 1889 for the World's Fair in Paris.
Topic: architecture
Keywords: Eiffel Tower, Paris, France, landmark, 1889, exhibition

Text: Interest rates rose again, and bank shares fell on the news.
Topic: finance
Keywords: interest rates, central bank, stocks, banking, markets"""

TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in [
        PromptTemplate(
            name="fewshot",
            instruction=_FEWSHOT_INSTRUCTION,
            text_label="Text: ",
            cue="Topic:",
            stop=("\n\n", "\nText:"),
            description="Three worked examples show the rationale's shape (a topic and keywords, "
            "related terms included). Default: on a small base model it makes rationales help the embedding.",
        ),
        PromptTemplate(
            name="paper",
            instruction="Read the text below and analyse it. Think step by step about what it "
            "is about, the entities and ideas it mentions and how they relate, then finish with "
            "a comprehensive understanding of the whole text.",
            cue="Analysis:",
            description="The paper's style of instruction (a paraphrase): analyse, reason, "
            "state a comprehensive understanding.",
        ),
        PromptTemplate(
            name="think",
            instruction="Study the text that follows. Put your step-by-step reasoning about it between "
            "<think> and </think>; after the closing tag, state in one or two sentences what the "
            "whole text means.",
            cue="<think>",
            stop=("\nText:",),
            description="Shaped like the reference code's prompt (our own words): reasoning inside think "
            "tags, then a final understanding; no stop string inside the reasoning, so several "
            "paragraphs survive (only the length limit or a new 'Text:' ends it).",
        ),
        PromptTemplate(
            name="keywords",
            instruction="List the key concepts of the text, including related terms a search "
            "engine would need to find it.",
            cue="Key concepts:",
            description="A one-line list of key concepts and related search terms.",
        ),
    ]
}
DEFAULT_TEMPLATE = "fewshot"


def get_template(name_or_file: str | PromptTemplate | None) -> PromptTemplate:
    """A registered template by name, or one read from a user's .json or .txt file.

    A .txt file holds the whole prompt with one ``{text}`` placeholder; what follows the
    placeholder becomes the cue. A .json file holds the fields of ``PromptTemplate``.
    """
    if isinstance(name_or_file, PromptTemplate):
        return name_or_file
    if name_or_file in (None, ""):
        return TEMPLATES[DEFAULT_TEMPLATE]
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if path.suffix in (".json", ".txt") and path.is_file():
        return _read_template_file(path)
    raise ValueError(
        f"Unknown prompt {name_or_file!r}: use one of {', '.join(TEMPLATES)} or a .json/.txt template file."
    )


def _read_template_file(path: Path) -> PromptTemplate:
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"Template file {path} is not UTF-8 text.") from None
    if path.suffix == ".json":
        try:
            data = json.loads(raw)
            data.setdefault("name", path.stem)
            if "stop" in data:
                data["stop"] = tuple(data["stop"])
            return PromptTemplate(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"Template file {path} is not a valid template: {exc}.") from None
    if raw.count("{text}") != 1:
        raise ValueError(f"Template file {path} must contain exactly one {{text}} placeholder.")
    before, after = raw.split("{text}")
    return PromptTemplate(name=path.stem, instruction=before, text_label="", sep="", cue=after,
                          cue_sep="", description=f"from {path.name}")


@dataclass
class PromptIds:
    """Token ids of P(x) and where each segment lies: [0, text_start) is instruction,
    [text_start, text_end) is the text, [text_end, len(ids)) is the template's cue."""

    ids: list[int]
    text_start: int
    text_end: int
    truncated: bool = False
    segments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.segments = (["instruction"] * self.text_start + ["text"] * (self.text_end - self.text_start)
                         + ["instruction"] * (n - self.text_end))


def _split_rendered(tokenizer, template: PromptTemplate, use_chat: bool) -> tuple[str, str]:
    """The prompt's string before and after the text."""
    if use_chat:
        content = f"{template.instruction}{template.sep}{template.text_label}{_MARKER}"
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        before, after = rendered.split(_MARKER)
        return before, after + template.cue
    return (f"{template.instruction}{template.sep}{template.text_label}",
            f"{template.cue_sep}{template.cue}")


class PromptBuilder:
    """Builds P(x) for one tokenizer and template, caching the fixed parts' token ids."""

    def __init__(self, tokenizer, template: str | PromptTemplate | None = None, use_chat: bool | None = None):
        self.tokenizer = tokenizer
        self.template = get_template(template)
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat = has_chat if use_chat is None else (use_chat and has_chat)
        before, after = _split_rendered(tokenizer, self.template, self.use_chat)
        # "Text: " + x tokenises the space with the text's first word, as a joint tokenisation
        # would; the space then belongs to the text segment.
        self.lead = ""
        if before.endswith(" "):
            before, self.lead = before[:-1], " "
        self.prefix_ids = self._tok(before)
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
        if adds_bos and not self.use_chat:
            if not self.prefix_ids or self.prefix_ids[0] != bos:
                self.prefix_ids = [tokenizer.bos_token_id] + self.prefix_ids
        self.suffix_ids = self._tok(after)

    def _tok(self, s: str) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def build(self, text: str, max_text_tokens: int | None = None) -> PromptIds:
        """P(x) for one text; a text longer than ``max_text_tokens`` is cut with a warning."""
        text_ids = self._tok(self.lead + text)
        truncated = max_text_tokens is not None and len(text_ids) > max_text_tokens
        if truncated:
            warnings.warn(f"Text of {len(text_ids)} tokens truncated to {max_text_tokens} tokens "
                          f"(starts {text[:40]!r}).", stacklevel=2)
            text_ids = text_ids[:max_text_tokens]
        start = len(self.prefix_ids)
        return PromptIds(ids=self.prefix_ids + text_ids + self.suffix_ids, text_start=start,
                         text_end=start + len(text_ids), truncated=truncated)

    def stop_strings(self) -> tuple[str, ...]:
        return self.template.stop
