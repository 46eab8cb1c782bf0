"""The model engine: the one place where the app's model work runs.

Every request (an Explore comparison, a what-if, a Map, an evaluation) reaches the model
through ``Engine.encoder(encoder, ticket)``, a stand-in with the encoder's ``encode``. The
engine owns the model slot (one worker thread runs all model work, so nothing else holds the
model), the loaded encoders, cancellation and the clock:

- **Batched across visitors.** Greedy rationale rows of different requests that share an
  encoder and settings are generated in one batch: a decode step over 32 rows costs far less
  than 32 steps of one row. A request's rows join at the next batch; its answer is what it would
  get alone (the same tokens; vectors equal within float tolerance: tested).
- **Fair share of the model's time.** Each client address (``Ticket.share``; the owner where no
  address is known) is charged the seconds its rows took, and the next turn goes to the waiting
  address charged least (start-time fair queuing: an address that arrives starts at the charge of
  the turn in service, so idling earns no credit). A visitor whose turns are cheap (a 3-document
  Compare) is served between the turns of one whose turns are dear (512-token texts) instead of
  waiting one of them per stage; fresh identities from one address buy nothing, as the owners
  behind one address take its turns in rotation. A batch takes one row per waiting address in
  that order: one visitor's 2,000-text Map holds another's Compare back by at most the running batch.
- **Batches bounded by tokens**, not only rows: a batch's padded prompt (rows x its longest
  prompt) stays within ``BATCH_TOKENS``, so 32 rows of 512-token texts do not make one turn of
  minutes that everyone waits behind, and a batch led by short rows takes no long ones
  (``SHORT_TOKENS``); a row that does not fit waits for a later batch.
- **Forward passes batch too**: rows with given rationales (what-if, the rationale shift) and
  direct-forward rows of different requests share a forward pass.
- **Work that does not batch across requests** runs as turns of its own: sampled rationales (whose
  seeds number their request's own batches) one batch per turn (``stand_in.EngineEncoder._sampled``),
  a rationale cache and MiniLM one call per turn, split into batch-sized calls where that changes
  nothing.
- **A clock on everything.** A request past its wall-clock limit, cancelled, or abandoned by its
  page is dropped between decode steps with a sentence (``tickets.Ticket.stopped``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from grace.files.cancel import Cancelled
from grace.model.settings import EncodeSettings

from .tickets import Ticket
from .work import _Call, _Rows, _Work

BATCH_ROWS = 32  # rows per generation batch: where the decode step's cost per row flattens on 2 cores
# Padded prompt tokens per batch (rows x the longest row's text + cue): 32 rows of a typical
# 64-token document fit, four 512-token texts do; one row always goes, whatever its length.
BATCH_TOKENS = 2048
# On a public app, half: a turn of long texts is what a stranger's cheap request may find running
# (default model, Intel Xeon, 2 cores: four 512-token texts 8.9-10.6 s a batch, two 5.6-6.1 s).
PUBLIC_BATCH_TOKENS = 1024
# A batch led by a short row takes rows up to twice its length (at least this many tokens): one
# visitor's 512-token texts do not make another's 20-token Compare pay their padding.
SHORT_TOKENS = 128
# After a turn, the worker waits this long for its addresses' next stage (a Compare's rationale
# shift follows its rationales) when they are owed the next turn anyway: without it the dear
# turn of another address, ready at that moment, would start first.
ANTICIPATE_S = 0.1
# The niceness of the model's threads. Above 0 they yield the cores to the server's own (status ticks,
# saves); measured with a crowd at 10: saves p95 3.5 s but Explore p95 114 s; at 0: 8 s and 33 s.
MODEL_NICE = int(os.environ.get("GRACE_MODEL_NICE", 0))


def background_priority(nice: int | None = None) -> None:
    """Lower the calling thread's CPU priority (Linux: niceness is per thread, and threads it
    starts, torch's OpenMP workers among them, inherit it). The web server's threads keep theirs,
    so a status tick or a save is not queued behind a decode step for the cores. No-op elsewhere."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), MODEL_NICE if nice is None else nice)
    except (AttributeError, OSError):
        pass


@dataclass
class Turn:
    """What one turn of the worker ran (kept for tests and the load benchmark)."""
    kind: str  # "rows" or "call"
    owners: tuple[str, ...]
    rows: int
    seconds: float


class Engine:
    """One worker thread, a queue per owner, batches across owners (see the module docstring)."""

    def __init__(self, batch_rows: int | None = None, max_backbones: int = 2, batch_tokens: int | None = None) -> None:
        self.batch_rows = batch_rows or int(os.environ.get("GRACE_ENGINE_BATCH", BATCH_ROWS))
        self.batch_tokens = batch_tokens or int(os.environ.get("GRACE_ENGINE_TOKENS", BATCH_TOKENS))
        self.max_backbones = max_backbones
        self._queues: dict[tuple[str, str], deque[_Work]] = {}  # by (share, owner)
        self._shares: deque[str] = deque()  # round-robin order of the addresses (or owners) waiting
        self._members: dict[str, deque[tuple[str, str]]] = {}  # share -> its queues, round-robin
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._paused = threading.Event()
        self._paused.set()
        self.turns: deque[Turn] = deque(maxlen=1000)
        self._ids = itertools.count()
        self._encoders: OrderedDict = OrderedDict()  # least recently used first
        self._load_lock = threading.Lock()
        self._running = False
        self._current: list[Ticket] = []  # the running turn's requests
        self._charged: dict[str, float] = {}  # share -> model seconds charged (its virtual time)
        self._now = 0.0  # the charge of the share whose turn started last (the virtual clock)
        self._expect: tuple[set[str], float] = (set(), 0.0)  # shares just served, waited for until then

    # -- loaded encoders ---------------------------------------------------------------------
    def load(self, settings: EncodeSettings, loader: Callable | None = None):
        """The shared encoder for these settings' load-time fields (``EncodeSettings.LOAD``; the
        adapter by its weights' hash), loaded once; the least recently used causal LM goes past
        ``max_backbones`` (MiniLM, small, is not counted)."""
        from grace.model.loading import load_encoder

        key = (settings.model, settings.load_fingerprint())
        with self._load_lock:
            if key not in self._encoders:
                self._encoders[key] = (loader or load_encoder)(settings)
                lms = [k for k in self._encoders if k[0] != "minilm"]
                for old in lms[:-self.max_backbones]:
                    del self._encoders[old]
            self._encoders.move_to_end(key)
            return self._encoders[key]

    # -- requests ----------------------------------------------------------------------------
    def encoder(self, encoder, ticket: Ticket):
        """``encoder`` as seen by one request (``stand_in.EngineEncoder``): its ``encode`` calls run
        in the engine under ``ticket``."""
        from .stand_in import EngineEncoder

        return EngineEncoder(self, encoder, ticket)

    def pause(self) -> None:
        """Hold the worker before its next turn (tests: queue several requests, then ``resume``)."""
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return any(self._queues.values()) or self._running

    def waiting_shares(self) -> int:
        """How many addresses (or owners, where none is known) have model work waiting."""
        with self._cond:
            return len({share for (share, _), q in self._queues.items() if q})

    def requests_waiting(self, share: str) -> int:
        """How many requests (tickets) of this address have model work waiting or running."""
        with self._cond:
            queued = {id(w.ticket) for (sh, _), q in self._queues.items() if sh == share for w in q}
            return len(queued | {id(t) for t in self._current if t.share == share})

    def submit(self, work: _Work) -> _Work:
        t = work.ticket
        key = (t.share, t.owner)
        with self._cond:
            if key not in self._queues:
                self._queues[key] = deque()
                if t.share not in self._members:
                    self._members[t.share] = deque()
                    self._shares.append(t.share)
                    # start-time fair queuing: no credit for the time it was away
                    self._charged[t.share] = max(self._charged.get(t.share, 0.0), self._now)
                self._members[t.share].append(key)
            self._queues[key].append(work)
            self._start_locked()
            self._cond.notify_all()
        return work

    def wait(self, work: _Work):
        """Block until ``work`` is done (or its ticket must stop); its result, or its error raised."""
        while not work.done.wait(0.2):
            why = work.ticket.stopped()
            if why is not None:
                self._stop(work, why)
                with self._cond:
                    self._cond.notify_all()  # the worker drops it from the queue
        if work.error is not None:
            raise work.error
        return work.result

    # -- the worker --------------------------------------------------------------------------
    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True, name="grace-engine")
            self._thread.start()

    def _loop(self) -> None:
        background_priority()
        while True:
            self._paused.wait()
            with self._cond:
                while True:
                    self._drop_stopped_locked()
                    turn = self._next_turn_locked() if self._paused.is_set() else None
                    if turn is not None:
                        break
                    self._cond.wait(timeout=min(0.5, max(0.001, self._expect[1] - time.monotonic()))
                                    if self._anticipating_locked() else 0.5)
                self._running = True
            try:
                self._run(turn)
            finally:
                self._running = False

    def _drop_stopped_locked(self) -> None:
        for owner, q in self._queues.items():
            for w in list(q):
                why = w.ticket.stopped()
                if why is not None:
                    self._stop(w, why)
                if w.done.is_set():
                    q.remove(w)
        for key in [k for k, q in self._queues.items() if not q]:
            del self._queues[key]
            members = self._members[key[0]]
            members.remove(key)
            if not members:
                del self._members[key[0]]
                self._shares.remove(key[0])
        for share in [sh for sh, c in self._charged.items() if c <= self._now and sh not in self._members]:
            del self._charged[share]  # it would restart at the clock anyway

    def _anticipating_locked(self) -> bool:
        """Whether to hold the next turn for a share just served that is owed it (``ANTICIPATE_S``)."""
        shares, until = self._expect
        if not shares or time.monotonic() > until:
            return False
        best = min((self._charged.get(sh, 0.0) for sh in self._shares), default=float("inf"))
        return any(sh not in self._members and self._charged.get(sh, 0.0) < best for sh in shares)

    def _next_turn_locked(self):
        """The next address in turn, and its next owner with work: that owner's oldest call, or a
        batch of rows with the key of its oldest rows, taking one row per waiting address in turn
        (each address's owners in turn) until the batch has ``batch_rows`` rows or no waiting row
        fits its ``batch_tokens``."""
        if not self._shares or self._anticipating_locked():
            return None
        share = min(self._shares, key=lambda sh: self._charged.get(sh, 0.0))  # ties: the rotation's order
        self._shares.remove(share)
        self._shares.append(share)
        self._now = max(self._now, self._charged.get(share, 0.0))
        members = self._members[share]
        key = members[0]
        members.rotate(-1)
        head = self._queues[key][0]
        if isinstance(head, _Call):
            self._queues[key].popleft()
            return head
        order = {share: [key] + [m for m in members if m != key]}
        others = sorted((sh for sh in self._shares if sh != share), key=lambda sh: self._charged.get(sh, 0.0))
        order.update({sh: list(self._members[sh]) for sh in others})
        at = dict.fromkeys(order, 0)  # each address's next owner
        batch: list[tuple[_Rows, int]] = []
        width = 0  # the batch's longest row, in prompt tokens
        cap = max(2 * (head.lengths[head.taken] if head.lengths else 0), SHORT_TOKENS)  # rows past it wait
        more = True
        while more and len(batch) < self.batch_rows:
            more = False
            for sh, keys in order.items():
                for k in range(len(keys)):
                    m = keys[(at[sh] + k) % len(keys)]
                    w = next((w for w in self._queues.get(m, ()) if isinstance(w, _Rows) and w.key == head.key
                              and w.taken < len(w.texts)), None)
                    if w is None:
                        continue
                    n = w.lengths[w.taken] if w.lengths else 0
                    if batch and (n > cap or (len(batch) + 1) * max(width, n) > self.batch_tokens):
                        continue  # padded to this row, the batch would pass its budget or cost its head
                    batch.append((w, w.taken))
                    width = max(width, n)
                    w.taken += 1
                    at[sh] = (at[sh] + k + 1) % len(keys)
                    more = True
                    if w.taken == len(w.texts):
                        self._queues[m].remove(w)
                    break
                if len(batch) >= self.batch_rows:
                    break
        return batch

    def _run(self, turn) -> None:
        began = time.time()
        works = [turn] if isinstance(turn, _Call) else list(dict.fromkeys(w for w, _ in turn))
        with self._cond:
            self._current = [w.ticket for w in works]
        try:
            if isinstance(turn, _Call):
                rows = 1
                self._run_call(turn)
            else:
                rows = len(turn)
                self._run_rows(turn, works)
        finally:
            end = time.time()
            with self._cond:
                self._current = []
                self._charge(turn, end - began)
        owners = tuple(dict.fromkeys(w.ticket.owner for w in works))
        self.turns.append(Turn("call" if isinstance(turn, _Call) else "rows", owners, rows, end - began))
        self._log([(w.ticket.what, began, end, w.ticket) for w in works])

    def _charge(self, turn, seconds: float) -> None:
        """Charge each share of a finished turn its part of the seconds (by rows), and expect the
        shares served to come back with their next stage (``ANTICIPATE_S``)."""
        rows = [turn.ticket.share] if isinstance(turn, _Call) else [w.ticket.share for w, _ in turn]
        for sh in rows:
            self._charged[sh] = max(self._charged.get(sh, 0.0), self._now) + seconds / len(rows)
        self._expect = (set(rows), time.monotonic() + ANTICIPATE_S)

    def _stop(self, work: _Work, why: BaseException) -> None:
        """``work``'s ticket must stop: it fails with ``why`` (once), and the log says why."""
        if not work.done.is_set():
            work.fail(why)
            now = time.time()
            self._log([(f"{work.ticket.what}:{getattr(why, 'reason', 'stopped')}", now, now, work.ticket)])

    @staticmethod
    def _log(lines) -> None:
        """With ``GRACE_SLOT_LOG`` set to a file, a line per request per turn: what, start, end
        (wall-clock seconds), the request's id; ``what:reason`` when a request was stopped. A
        diagnostic of who held the model when (the public-Space tests read it)."""
        path = os.environ.get("GRACE_SLOT_LOG")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                for what, start, end, ticket in lines:
                    f.write(f"{what} {start:.3f} {end:.3f} {id(ticket)}\n")

    @staticmethod
    def _stop_check(ticket: Ticket) -> Callable[[int, list[int]], None]:
        def stop(row: int = 0, ids=None) -> None:
            ticket.check()
        return stop

    def _run_call(self, work: _Call) -> None:
        try:
            work.ticket.check()
            work.result = work.fn(self._stop_check(work.ticket))
            work.done.set()
        except BaseException as exc:  # the caller raises it in its own thread
            why = work.ticket.stopped()
            self._stop(work, why) if why is not None else work.fail(exc)

    def _run_rows(self, batch: list[tuple[_Rows, int]], works: list[_Rows]) -> None:
        live = [w for w in works if not w.done.is_set()]
        if not live:
            return
        head = live[0]
        texts = [w.texts[i] for w, i in batch]

        def on_token(row: int, ids: list[int]) -> None:
            w, i = batch[row]
            if not w.done.is_set():
                why = w.ticket.stopped()
                if why is not None:
                    self._stop(w, why)
                elif w.on_token is not None:
                    try:
                        w.on_token(i, ids)
                    except BaseException as exc:  # that request stops; the others go on
                        w.fail(exc)
            if all(x.done.is_set() for x in works):
                raise Cancelled("every request of this batch stopped")

        try:
            if head.rationales is not None:  # the key says every row of the batch has one
                rationales = [w.rationales[i] for w, i in batch]
                results = head.encoder.encode(texts, head.settings, return_details=True, rationales=rationales)
            else:
                results = head.encoder.encode(texts, head.settings, return_details=True, on_token=on_token)
        except BaseException as exc:
            for w in works:
                w.fail(exc)
            return
        for (w, i), r in zip(batch, results):
            w.out[i] = r
            w.left -= 1
            if w.left == 0 and not w.done.is_set():
                w.result = w.out
                w.done.set()
