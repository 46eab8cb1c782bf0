"""The model engine (grace.serving): requests of several owners decoded in one batch, each
answer equal to the request alone, round-robin fair share, cancellation and the clock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from grace.files.cancel import Cancelled
from grace.model.settings import EncodeSettings
from grace.serving.engine import Engine
from grace.serving.tickets import Ticket, TimeLimit

A = ["Where is Machu Picchu?", "A dog.", "The stock market fell sharply today as interest rates rose."]
B = ["Photosynthesis converts light into chemical energy.", "Inca citadel in the Andes of Peru.",
     "Bread rises because yeast releases carbon dioxide.", "Vaccines train the immune system."]
S = EncodeSettings(max_new_tokens=10, batch_size=32, dtype="float32")


def _in_threads(*calls):
    """Run each call in its own thread; their results in order (an exception is returned, not raised)."""
    out = [None] * len(calls)

    def run(i, fn):
        try:
            out[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    return threads, out


def test_two_owners_share_one_batch_and_get_what_they_get_alone(tiny_encoder):
    alone_a = tiny_encoder.encode(A, S, return_details=True)
    alone_b = tiny_encoder.encode(B, S)
    engine = Engine()
    engine.pause()  # both requests are queued before the worker takes its first turn
    ea = engine.encoder(tiny_encoder, Ticket("alice", "explore"))
    eb = engine.encoder(tiny_encoder, Ticket("bob", "map"))
    threads, out = _in_threads(lambda: ea.encode(A, S, return_details=True), lambda: eb.encode(B, S))
    deadline = time.time() + 10
    while engine.waiting_shares() < 2 and time.time() < deadline:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(60)
    got_a, got_b = out
    assert [sorted(t.owners) for t in engine.turns] == [["alice", "bob"]]  # one batch, both owners (either first)
    assert engine.turns[0].rows == len(A) + len(B)
    for g, r in zip(got_a, alone_a):
        assert g.rationale_ids == r.rationale_ids and g.text == r.text
        assert np.abs(g.embedding - r.embedding).max() < 1e-5
    assert got_b.shape == alone_b.shape and np.abs(got_b - alone_b).max() < 1e-5


def test_streamed_tokens_reach_their_own_request(tiny_encoder):
    engine = Engine()
    engine.pause()
    seen = {"a": {}, "b": {}}
    ea = engine.encoder(tiny_encoder, Ticket("alice"))
    eb = engine.encoder(tiny_encoder, Ticket("bob"))
    threads, out = _in_threads(
        lambda: ea.encode(A, S, return_details=True, on_token=lambda r, ids: seen["a"].__setitem__(r, ids)),
        lambda: eb.encode(B, S, return_details=True, on_token=lambda r, ids: seen["b"].__setitem__(r, ids)))
    while engine.waiting_shares() < 2:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(60)
    for key, results in (("a", out[0]), ("b", out[1])):
        for i, r in enumerate(results):
            if r.rationale_ids:  # each row's last streamed ids start with its rationale
                assert seen[key][i][:len(r.rationale_ids)] == r.rationale_ids


class Recorder:
    """A stand-in encoder: records each batch it is given; a batch takes ``pause`` seconds."""

    fast, generator = True, None

    def __init__(self, pause: float = 0.02):
        self.settings, self.pause, self.batches = S, pause, []

    def check_layer(self, layer):
        pass

    def encode(self, texts, settings=None, *, return_details=False, on_token=None, **kw):
        from grace.model.embedding import EncodeResult

        self.batches.append(list(texts))
        for step in range(3):
            time.sleep(self.pause / 3)
            for row in range(len(texts)):
                if on_token is not None:
                    on_token(row, [step])
        out = [EncodeResult(text=t, rationale="", tokens=[], segments=[], embedding=np.ones(2, np.float32))
               for t in texts]
        return out if return_details else np.stack([r.embedding for r in out])


def test_a_big_map_holds_a_small_compare_back_by_at_most_one_batch():
    rec = Recorder(pause=0.05)
    engine = Engine(batch_rows=8)
    big = [f"map text {i}" for i in range(200)]
    mapper = engine.encoder(rec, Ticket("mapper", "map"))
    threads, out = _in_threads(lambda: mapper.encode(big, S))
    while len(rec.batches) < 2:
        time.sleep(0.005)
    n_before = len(rec.batches)
    small = engine.encoder(rec, Ticket("visitor", "explore")).encode(["q", "d1", "d2"], S)
    assert small.shape == (3, 2)
    served = next(i for i, b in enumerate(rec.batches) if "q" in b)
    assert served - n_before <= 1  # the batch running when it arrived, then its own turn
    assert {"q", "d1", "d2"} <= set(rec.batches[served])  # all three rows in one batch
    threads[0].join(60)
    assert out[0].shape == (200, 2)


def test_round_robin_takes_one_row_per_owner_in_turn():
    rec = Recorder(pause=0.0)
    engine = Engine(batch_rows=4)
    engine.pause()
    threads, _ = _in_threads(*[
        (lambda o=o: engine.encoder(rec, Ticket(o)).encode([f"{o}{i}" for i in range(6)], S)) for o in "abc"])
    while engine.waiting_shares() < 3:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(30)
    first = rec.batches[0]
    assert len(first) == 4 and {t[0] for t in first} == {"a", "b", "c"}


def test_a_cancelled_request_stops_and_the_other_goes_on():
    rec = Recorder(pause=0.3)
    engine = Engine(batch_rows=8)
    engine.pause()
    ta, tb = Ticket("a"), Ticket("b")
    threads, out = _in_threads(lambda: engine.encoder(rec, ta).encode(["a1", "a2"], S),
                               lambda: engine.encoder(rec, tb).encode(["b1"], S))
    while engine.waiting_shares() < 2:
        time.sleep(0.01)
    engine.resume()
    time.sleep(0.05)
    ta.flag.set()
    for t in threads:
        t.join(30)
    assert isinstance(out[0], Cancelled) and out[1].shape == (1, 2)


def test_a_batch_whose_requests_all_stopped_is_abandoned_at_the_next_step():
    rec = Recorder(pause=3.0)
    engine = Engine()
    t = Ticket("a")
    threads, out = _in_threads(lambda: engine.encoder(rec, t).encode(["x"] * 4, S))
    time.sleep(0.3)
    t.flag.set()
    t0 = time.time()
    threads[0].join(30)
    assert isinstance(out[0], Cancelled)
    while engine.busy and time.time() - t0 < 10:
        time.sleep(0.05)
    assert time.time() - t0 < 2.5  # the worker left the batch at its next step, not after 3 s


def test_the_clock_stops_a_request_with_a_sentence_naming_its_limit():
    rec = Recorder(pause=2.0)
    engine = Engine()
    ticket = Ticket("a", "map", limit=0.5)
    with pytest.raises(TimeLimit, match="map requests are limited to 0 s|map requests are limited to 1 s"):
        engine.encoder(rec, ticket).encode(["x"], S)


def test_forward_passes_of_two_owners_share_a_batch_and_equal_the_encoder(tiny_encoder):
    """What-if rows (given rationales) batch across owners, as do direct-forward rows."""
    engine = Engine(batch_rows=4)
    engine.pause()
    rats_a = ["some words", "", "a longer rationale about the text"]
    rats_b = ["x", "two words", "", "the last one"]
    ea = engine.encoder(tiny_encoder, Ticket("alice"))
    eb = engine.encoder(tiny_encoder, Ticket("bob"))
    ec = engine.encoder(tiny_encoder, Ticket("carol"))
    threads, out = _in_threads(lambda: ea.encode(A, S, rationales=rats_a),
                               lambda: eb.encode(B, S, rationales=rats_b, return_details=True),
                               lambda: ec.encode(B, S.direct()))
    while engine.waiting_shares() < 3:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(60)
    ref_b = tiny_encoder.encode(B, S, rationales=rats_b, return_details=True)
    assert np.abs(out[0] - tiny_encoder.encode(A, S, rationales=rats_a)).max() < 1e-5
    assert all(np.abs(g.embedding - r.embedding).max() < 1e-5 and g.rationale == r.rationale
               for g, r in zip(out[1], ref_b))
    assert np.abs(out[2] - tiny_encoder.encode(B, S.direct())).max() < 1e-5
    assert all(t.kind == "rows" for t in engine.turns)
    assert any({"alice", "bob"} <= set(t.owners) and t.rows == 4 for t in engine.turns)  # a shared batch


def test_sampled_rationales_run_as_their_own_turn_and_equal_the_encoder(tiny_encoder):
    engine = Engine(batch_rows=2)
    e = engine.encoder(tiny_encoder, Ticket("a"))
    texts = A + B
    sampled = S.with_(sample=True, seed=3)  # one call: its seeds number its own batches
    got = e.encode(texts, sampled, return_details=True)
    want = tiny_encoder.encode(texts, sampled, return_details=True)
    assert [g.rationale_ids for g in got] == [w.rationale_ids for w in want]
    assert [t.kind for t in engine.turns] == ["call"]


def test_background_priority_lowers_only_the_calling_thread():
    import os

    from grace.serving.engine import background_priority

    seen = {}

    def worker():
        background_priority(7)
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["worker"] == os.getpriority(os.PRIO_PROCESS, 0) + 7 or seen["worker"] == 7
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != seen["worker"]  # this thread kept its own


def test_fresh_identities_from_one_address_buy_no_extra_turns():
    """Three identities behind one address (a flooder minting them) and one calm visitor behind
    another: a batch alternates the two addresses, so the calm rows get half of it, not a quarter."""
    rec = Recorder(pause=0.0)
    engine = Engine(batch_rows=4)
    engine.pause()
    flood = [(lambda o=o: engine.encoder(rec, Ticket(o, group="203.0.113.7")).encode([f"{o}-{i}" for i in range(6)], S))
             for o in ("f1", "f2", "f3")]
    calm = lambda: engine.encoder(rec, Ticket("calm", group="198.51.100.1")).encode(["calm-0", "calm-1", "calm-2"], S)  # noqa: E731
    threads, out = _in_threads(*flood, calm)
    while engine.requests_waiting("203.0.113.7") < 3 or engine.waiting_shares() < 2:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(30)
    first = rec.batches[0]
    assert len(first) == 4 and sum(t.startswith("calm") for t in first) == 2
    assert len({t.split("-")[0] for t in first if t.startswith("f")}) == 2  # the address's owners take turns
    assert out[3].shape == (3, 2)


class Sized(Recorder):
    """A recorder whose texts say their length in prompt tokens ("name:tokens")."""

    def build_prompts(self, texts, prompt=None):
        from grace.model.prompts import PromptIds

        return [PromptIds(ids=[0] * (5 + int(t.split(":")[1])), text_start=5, text_end=5 + int(t.split(":")[1]))
                for t in texts]


def test_a_batch_is_bounded_by_its_padded_tokens():
    """Long texts (400 tokens) and short ones (20) under a 1,000-token budget: no batch pads past
    it (one row always goes), so the long request cannot make one turn of all its rows, and a
    batch led by a short row carries no long one."""
    rec = Sized(pause=0.0)
    engine = Engine(batch_rows=32, batch_tokens=1000)
    engine.pause()
    threads, out = _in_threads(
        lambda: engine.encoder(rec, Ticket("long")).encode([f"l{i}:400" for i in range(6)], S),
        lambda: engine.encoder(rec, Ticket("short")).encode([f"s{i}:20" for i in range(20)], S))
    while engine.waiting_shares() < 2:
        time.sleep(0.01)
    engine.resume()
    for t in threads:
        t.join(30)
    assert out[0].shape == (6, 2) and out[1].shape == (20, 2)
    for batch in rec.batches:
        assert len(batch) == 1 or len(batch) * max(int(t.split(":")[1]) for t in batch) <= 1000, batch
    assert max(sum(t.startswith("l") for t in b) for b in rec.batches) == 2
    assert not any(b[0].startswith("s") and any(t.startswith("l") for t in b) for b in rec.batches)  # no padding to 400
    assert any(b[0].startswith("s") and len(b) > 2 for b in rec.batches)  # the short rows batch among themselves


class Priced(Recorder):
    """A recorder whose "dear" rows take 0.3 s a batch and others 0.01 s."""

    def encode(self, texts, settings=None, **kw):
        self.pause = 0.3 if any(t.startswith("dear") for t in texts) else 0.01
        return super().encode(texts, settings, **kw)


def test_a_visitor_with_cheap_turns_is_not_made_to_wait_a_dear_turn_per_stage():
    """One address keeps the model busy with dear turns; another runs a three-stage request of
    cheap turns (as a Compare: rationales, the shift, the direct pass). Charged by model time, the
    cheap stages run back to back once the running dear turn ends, not one dear turn between each
    (round-robin by turns would put two there)."""
    rec = Priced()
    engine = Engine(batch_rows=1)
    dear = engine.encoder(rec, Ticket("flood", group="203.0.113.7"))
    threads, out = _in_threads(lambda: dear.encode([f"dear-{i}" for i in range(12)], S))
    while len(rec.batches) < 2:
        time.sleep(0.01)
    calm = engine.encoder(rec, Ticket("calm", group="198.51.100.1"))
    for stage in range(3):
        calm.encode([f"calm-{stage}"], S)
    served = [i for i, b in enumerate(rec.batches) if b[0].startswith("calm")]
    assert len(served) == 3 and served[-1] - served[0] == 2, rec.batches
    threads[0].join(30)
    assert out[0].shape == (12, 2)


def test_sampled_rationales_run_one_batch_per_turn_and_draw_what_one_encode_draws(tiny_encoder):
    """A sampled request is its encoder's own batches (length-sorted, seed + n), each a turn of its
    own: the same rationales and vectors as one encode, and no turn holds the whole request."""
    texts = A + B
    s = S.with_(sample=True, seed=7, batch_size=3, max_new_tokens=8)
    alone = tiny_encoder.encode(texts, s, return_details=True)
    engine = Engine()
    got = engine.encoder(tiny_encoder, Ticket("alice")).encode(texts, s, return_details=True)
    assert [t.kind for t in engine.turns] == ["call"] * 3  # 7 texts in batches of 3
    for g, r in zip(got, alone):
        assert g.text == r.text and g.rationale_ids == r.rationale_ids
        assert np.abs(g.embedding - r.embedding).max() < 1e-5
    small = Engine(batch_tokens=1)  # a budget no two rows fit: one row a turn
    small.encoder(tiny_encoder, Ticket("bob")).encode(texts, s)
    assert [t.rows for t in small.turns] == [1] * len(texts)
