"""The pieces of work a request hands the engine: rows that may share a batch with other
requests' rows, and calls that run as turns of their own."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from grace.model.settings import EncodeSettings

from .tickets import Ticket


@dataclass(eq=False)
class _Work:
    ticket: Ticket
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if not self.done.is_set():
            self.error = exc
            self.done.set()


@dataclass(eq=False)
class _Rows(_Work):
    """Rows that may share a batch with other requests' rows of the same ``key``: greedy rationales
    to generate, or one forward pass (given rationales, or none: the direct forward pass)."""
    encoder: Any = None
    settings: EncodeSettings | None = None
    key: str = ""
    texts: Sequence[str] = ()
    rationales: Sequence[str] | None = None  # given rationales: a forward pass, nothing generated
    on_token: Callable[[int, list[int]], None] | None = None
    lengths: Sequence[int] = ()  # each row's prompt tokens (text + given rationale), for the batch's token budget
    taken: int = 0  # rows handed to a batch so far
    left: int = 0  # rows not finished yet
    out: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.left, self.out = len(self.texts), [None] * len(self.texts)


@dataclass(eq=False)
class _Call(_Work):
    """One encoder call run as one turn; ``fn(stop)`` gets an ``on_token`` that raises when the
    ticket must stop."""
    fn: Callable[[Callable], Any] | None = None
