"""A request's handle on the engine: who asked, its cancel flag and its clock.

A ``Ticket`` is one visitor action (an Explore comparison, a what-if, a Map, an evaluation):
every piece of model work it submits carries it, so the engine knows whose turn it is
(fair share), whether the visitor still wants the answer (cancel flag, heartbeat) and when
its time is up (the wall-clock limit).
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from grace.files.cancel import Cancelled

# Wall-clock limit of each kind of request on a public app, in seconds (None: no limit). The
# Explore limit fits a 50-document comparison at the page's longest rationale with a crowd.
PUBLIC_LIMITS = {"explore": 180.0, "what-if": 60.0, "ablate": 60.0, "map": 900.0, "evaluate": 900.0}
# A request whose page stopped asking for its result (closed tab, a disconnected API client:
# Gradio then stops iterating the handler) for this long is abandoned and cancelled.
ABANDON_S = float(os.environ.get("GRACE_ABANDON_S", 20.0))


class TimeLimit(Cancelled):
    """The request ran past its wall-clock limit (the message names the limit)."""


class Pulse:
    """The heartbeat of whoever waits for a handler's answer (``grace.ui.common.streamed``): the
    tickets made while it runs stop when it stops beating for ``ABANDON_S`` or is closed."""

    def __init__(self) -> None:
        self.seen, self.watched, self.closed = time.monotonic(), False, False

    def touch(self) -> None:
        self.seen, self.watched = time.monotonic(), True

    def close(self) -> None:
        self.closed = True

    def lost(self) -> bool:
        return self.closed or (self.watched and time.monotonic() - self.seen > ABANDON_S)


PULSE: contextvars.ContextVar[Pulse | None] = contextvars.ContextVar("grace_pulse", default=None)


@dataclass(eq=False)
class Ticket:
    owner: str
    what: str = "model"
    group: str = ""  # whose turn it counts as: the client's address on a public app ("" -> the owner)
    limit: float | None = None  # wall-clock seconds
    flag: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    pulse: Pulse = field(default_factory=lambda: PULSE.get() or Pulse())  # the waiting handler's heartbeat

    @property
    def share(self) -> str:
        """The engine's unit of fair share: the address when known (fresh identities from one
        address buy no extra turns), else the owner."""
        return self.group or self.owner

    @property
    def deadline(self) -> float | None:
        return None if self.limit is None else self.started + self.limit

    def touch(self) -> None:
        """A heartbeat: the visitor's handler is still there to take the answer."""
        self.pulse.touch()

    def stopped(self) -> BaseException | None:
        """Why this request must stop now (cancelled, abandoned, out of time), else None."""
        now = time.monotonic()
        if self.flag.is_set():
            return _why(Cancelled("stopped"), "cancelled")
        if self.pulse.lost():
            return _why(Cancelled("abandoned: the page stopped waiting for it"), "abandoned")
        if self.deadline is not None and now > self.deadline:
            return _why(TimeLimit(f"Stopped: {self.what} requests are limited to {self.limit:.0f} s of wall-clock "
                             "time on this public app (waiting included); try fewer or shorter texts."), "timeout")
        return None

    def check(self) -> None:
        why = self.stopped()
        if why is not None:
            raise why

    def should_stop(self) -> bool:
        """For loops that ask between batches (``embed_corpus``, the evaluation)."""
        return self.stopped() is not None

    def time_limit(self, exc: BaseException) -> "TimeLimit | None":
        """The clock's refusal if the clock is what stopped this request (``exc`` is what the work
        raised: a plain Cancelled when a loop saw ``should_stop``), else None."""
        if isinstance(exc, TimeLimit):
            return exc
        why = self.stopped()
        return why if isinstance(why, TimeLimit) else None


def _why(exc: Cancelled, reason: str) -> Cancelled:
    exc.reason = reason  # cancelled, abandoned or timeout: the engine's log says which
    return exc


def limit_for(what: str, public: bool) -> float | None:
    """The wall-clock limit of a ``what`` request: ``PUBLIC_LIMITS`` on a public app (an env
    ``GRACE_LIMIT_<WHAT>`` in seconds replaces it), none on one's own machine."""
    env = os.environ.get("GRACE_LIMIT_" + what.upper().replace("-", "_"))
    if env:
        return float(env)
    return PUBLIC_LIMITS.get(what) if public else None


class CancelFlags:
    """One cancel flag per (page, kind of work): the Stop button sets it, the engine asks it
    between decode steps and drops the request's rows. Starting new work of a kind sets the page's
    previous flag of that kind first: start, cancel, start again never leaves the first request
    running. Each flag is also filed under the connection (Gradio's session) that asked, so a
    client that goes away is cancelled whether or not its page ever identified itself. Bounded:
    the oldest pages' flags drop out (and are set)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._flags: OrderedDict[tuple[str, str], threading.Event] = OrderedDict()
        self._sessions: OrderedDict[str, list[threading.Event]] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def start(self, token: str | None, kind: str = "model", session: str | None = None) -> threading.Event:
        key = (token or "local", kind)
        with self._lock:
            old = self._flags.pop(key, None)
            if old is not None:
                old.set()
            flag = self._flags[key] = threading.Event()
            while len(self._flags) > self.capacity:
                self._flags.popitem(last=False)[1].set()
        self.file(flag, session)
        return flag

    def file(self, flag: threading.Event, session: str | None) -> None:
        """Keep ``flag`` under ``session`` for ``cancel_session`` (no-op without a session)."""
        if not session:
            return
        with self._lock:
            flags = [f for f in self._sessions.pop(session, []) if not f.is_set()] + [flag]
            self._sessions[session] = flags[-64:]  # a session's recent requests (older ones ended)
            while len(self._sessions) > self.capacity:
                for f in self._sessions.popitem(last=False)[1]:
                    f.set()

    def cancel(self, token: str | None, kind: str | None = None) -> None:
        """Stop the page's work of ``kind`` (every kind when None: the visitor left)."""
        with self._lock:
            for (t, k), flag in self._flags.items():
                if t == (token or "local") and kind in (None, k):
                    flag.set()

    def cancel_session(self, session: str | None) -> None:
        """Stop every request this connection made (its client went away)."""
        with self._lock:
            for flag in self._sessions.pop(session or "", []):
                flag.set()
