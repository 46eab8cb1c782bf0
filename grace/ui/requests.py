"""A visitor's model request as the tabs make it: its ticket for the engine (owner, cancel flag,
clock) and the handler wrapper whose heartbeat tells the engine the visitor is still there."""

from __future__ import annotations

import os
import secrets
import threading

import gradio as gr

from grace.serving.tickets import PULSE, Pulse, Ticket, limit_for

from .common import CANCELS, ENGINE, is_public
from .identity import current_client, page_token, session_hash

HEARTBEAT_S = 3.0  # how often a streamed handler tells Gradio it is alive (well inside tickets.ABANDON_S)
MODEL_HANDLERS = 16  # model events Gradio runs at once: they wait in the engine, whose batches join their rows
MAX_WAITING_ADDRESSES = 12  # addresses with model work queued at once; one more is refused with a sentence
# Requests one address may have waiting for the model (a classroom behind one address shares it)
REQUESTS_PER_ADDRESS = int(os.environ.get("GRACE_REQUESTS_PER_ADDRESS", 4))


def ticket_for(page, what: str, own_flag: bool = False) -> Ticket:
    """A new request of the page's visitor: the page's previous request of this kind is cancelled,
    the owner is the visitor (the page when it has no identity yet), its share of the model is its
    address's on a public app, the clock is ``what``'s limit. ``own_flag``: the request has its own
    owner and flag (a handler that gets no page). Refused with a sentence when its address already
    has ``REQUESTS_PER_ADDRESS`` requests waiting, or ``MAX_WAITING_ADDRESSES`` others are waiting."""
    token = page_token(page)
    who = page.get("who") if isinstance(page, dict) else None
    owner = who.get("id") if isinstance(who, dict) and who.get("id") else token
    if own_flag or not owner:
        owner = owner or "request:" + secrets.token_hex(8)
    group = current_client() if is_public() else ""
    share = group or str(owner)
    if group and ENGINE.requests_waiting(share) >= REQUESTS_PER_ADDRESS:
        raise ValueError(f"Your network address already has {REQUESTS_PER_ADDRESS} requests waiting for the model, "
                         "the most one address may: wait for one to finish.")
    if ENGINE.waiting_shares() >= MAX_WAITING_ADDRESSES and not ENGINE.requests_waiting(share):
        raise ValueError(f"The model is serving {MAX_WAITING_ADDRESSES} visitors at once, the most this app takes: "
                         "try again in a minute.")
    session = session_hash()
    if own_flag:
        flag = threading.Event()
        CANCELS.file(flag, session)
    else:
        flag = CANCELS.start(token, what, session)
    return Ticket(owner=str(owner), what=what, group=group, limit=limit_for(what, is_public()), flag=flag)


def streamed(fn, n_outputs: int):
    """``fn`` as a Gradio generator handler: it runs in a thread (with the handler's context, so
    gr.Progress works) while the handler yields nothing-changed updates and beats a ``Pulse``.
    Gradio stops iterating a handler whose client went away (a closed page, a disconnected API
    client): the pulse then stops and the requests ``fn`` made are cancelled (``ABANDON_S``); a
    handler closed early cancels them at once."""
    import contextvars
    import functools

    @functools.wraps(fn)
    def handler(*args, **kwargs):
        pulse = Pulse()
        ctx = contextvars.copy_context()
        ctx.run(PULSE.set, pulse)
        box: dict = {}

        def run() -> None:
            try:
                box["out"] = ctx.run(fn, *args, **kwargs)
            except BaseException as exc:  # shown as the handler's own failure below
                box["error"] = exc

        t = threading.Thread(target=run, daemon=True, name=f"grace-{fn.__name__}")
        pulse.touch()
        t.start()
        try:
            while t.is_alive():
                t.join(timeout=HEARTBEAT_S)
                pulse.touch()
                if t.is_alive():  # each gr.skip() costs Gradio a component on its event loop: seldom
                    yield tuple(gr.skip() for _ in range(n_outputs))
        finally:
            if t.is_alive():
                pulse.close()
        if "error" in box:
            raise box["error"]
        yield box["out"]

    return handler
