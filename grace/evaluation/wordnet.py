"""A reader for WordNet 3.0's data files (the wndb format), e.g. Debian's ``wordnet-base``.

Each data line is ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt ptr... [frames] | gloss``;
the gloss holds a definition and quoted example sentences separated by "; ".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet")
POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}

# WordNet's 45 lexicographer files, by number (its lexnames file)
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
]


class WordNetMissing(FileNotFoundError):
    pass


@dataclass
class Synset:
    id: str  # "n00001740"
    pos: str
    lexname: str
    words: list[str]
    definition: str
    examples: list[str]
    hypernyms: list[str] = field(default_factory=list)  # ids


def find_wordnet(path: str | os.PathLike | None = None) -> Path:
    """The folder with WordNet's data files (``WORDNET_DIR`` overrides)."""
    candidates = [path] if path else [os.environ.get("WORDNET_DIR"), *WORDNET_DIRS]
    for c in candidates:
        if c and (Path(c) / "data.noun").exists():
            return Path(c)
    raise WordNetMissing(
        "WordNet 3.0 data files not found (looked in " + ", ".join(str(c) for c in candidates if c) + "). "
        "Install them with: apt-get install wordnet-base (or set WORDNET_DIR).")


_QUOTED = re.compile(r'"([^"]+)"')


def parse_gloss(gloss: str) -> tuple[str, list[str]]:
    """Split a gloss into its definition and its quoted example sentences."""
    examples = [e.strip() for e in _QUOTED.findall(gloss) if len(e.strip()) > 3]
    definition = _QUOTED.sub("", gloss)
    definition = re.sub(r"(;\s*)+$", "", definition.strip()).strip(" ;")
    definition = re.sub(r"\s*;\s*(;\s*)+", "; ", definition)
    return definition, examples


def parse_line(line: str) -> Synset | None:
    """One data line, or None for the licence header."""
    if line.startswith(" ") or not line.strip():
        return None
    head, _, gloss = line.partition(" | ")
    f = head.split()
    offset, lex_filenum, ss_type = f[0], int(f[1]), f[2]
    w_cnt = int(f[3], 16)
    words = [f[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
    i = 4 + 2 * w_cnt
    p_cnt = int(f[i])
    hypernyms = []
    for j in range(p_cnt):
        sym, target, tpos = f[i + 1 + 4 * j], f[i + 2 + 4 * j], f[i + 3 + 4 * j]
        if sym in ("@", "@i"):
            hypernyms.append(f"{'a' if tpos == 's' else tpos}{target}")
    pos = "a" if ss_type == "s" else ss_type
    definition, examples = parse_gloss(gloss.strip())
    return Synset(id=f"{pos}{offset}", pos=pos, lexname=LEXNAMES[lex_filenum], words=words,
                  definition=definition, examples=examples, hypernyms=hypernyms)


def load_wordnet(path: str | os.PathLike | None = None, pos: str = "nv") -> dict[str, Synset]:
    """Synsets of the given parts of speech (n, v, a, r), keyed by id."""
    folder = find_wordnet(path)
    out: dict[str, Synset] = {}
    for p in pos:
        with open(folder / POS_FILES[p], encoding="utf-8", errors="replace") as fh:
            for line in fh:
                s = parse_line(line)
                if s is not None:
                    out[s.id] = s
    return out
