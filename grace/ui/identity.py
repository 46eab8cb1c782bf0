"""Who a visitor is, and what they may touch.

Run locally the app is single-user: everyone is ``LOCAL`` and may do everything. On a public
Space (``SPACE_ID`` set, or ``GRACE_PUBLIC=1``) a visitor is the Hugging Face account they signed
in with (``hf_oauth: true`` in the README's front matter, ``gr.LoginButton``), else the random
token their browser keeps (``gr.BrowserState``: it survives reloads). What a visitor makes (a
training run, an Evaluate row, an export) is stored with their ``Visitor.id``; only that id may
cancel, resume or remove it. The id of an anonymous visitor is a hash of their token, so the id
stored on disk or shown to others never lets anyone act as them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass

import gradio as gr

from grace.files.paths import data_dir
from grace.files.textio import atomic_output

from .common import is_public
from .text import md_escape


@dataclass(frozen=True)
class Visitor:
    id: str  # what is stored with a visitor's work: "local", "hf:<username>" or "anon:<hash of the token>"
    name: str  # what the page shows and the annotation store records
    signed_in: bool = False

    def owns(self, owner: str | None) -> bool:
        """Whether this visitor may change a thing stored with ``owner``. Locally everything is
        the one user's; in public mode a thing without an owner (made before owners) is nobody's."""
        if not is_public():
            return True
        return owner is not None and owner == self.id

    def to_state(self) -> dict:
        return asdict(self)


LOCAL = Visitor("local", "local")


class IdentityError(ValueError):
    """A visitor acting on something that is not theirs, or without an identity."""


def visitor_from(state: dict | None) -> Visitor:
    """The session's visitor: the page State (``{"token", "who"}``, its ``who`` set by
    ``identify`` when the page loads) or a ``who`` dict itself. In public mode a session that
    never loaded the page (a bare API call that skipped ``identify``) has no identity."""
    if not is_public():
        return LOCAL
    if isinstance(state, dict) and "token" in state:
        state = state.get("who")
    if not state or not isinstance(state, dict) or not str(state.get("id", "")).startswith(("hf:", "anon:")):
        raise IdentityError("This session has no visitor identity yet: reload the page.")
    return Visitor(str(state["id"]), str(state.get("name", "")), bool(state.get("signed_in")))


def require_owner(state: dict | None, owner: str | None, what: str) -> Visitor:
    """The visitor, if they own ``what``; else a one-line refusal."""
    v = visitor_from(state)
    if not v.owns(owner):
        raise IdentityError(f"{what} belongs to another visitor: you can look at it, not change it.")
    return v


def _token_hash(token: str) -> str:
    return hashlib.sha256(("grace-visitor:" + token).encode("utf-8")).hexdigest()[:20]


def visitor_for(token: str | None, profile=None) -> tuple[str, Visitor]:
    """(the browser token to keep, the visitor) for a page load: the signed-in account when there
    is one, else the browser's token (a new random one when it has none or a malformed one)."""
    token = token if isinstance(token, str) and 32 <= len(token) <= 128 and token.isalnum() else secrets.token_hex(24)
    if not is_public():
        return token, LOCAL
    username = getattr(profile, "username", None) or getattr(profile, "preferred_username", None)
    if username:
        return token, Visitor(f"hf:{username}", str(username), True)
    h = _token_hash(token)
    return token, Visitor(f"anon:{h}", f"guest:{h[:8]}")


def browser_secret() -> str:
    """The key BrowserState encrypts with, kept in the data folder so that a visitor's token
    survives an app restart (BrowserState draws a new key at every start otherwise)."""
    path = data_dir() / ".browser-secret"
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    except OSError:
        pass
    value = secrets.token_hex(24)
    try:
        with atomic_output(path) as f:
            f.write(value)
    except OSError:
        pass  # a read-only data folder: tokens last until the next restart
    return value


class PageSessions:
    """Gradio session hash -> the page's cancel token, so that ``demo.unload`` (which gets a
    gr.Request, not the page's States) can stop the work of a visitor who closed the tab.
    Bounded: the oldest sessions drop out."""

    def __init__(self, capacity: int = 4096) -> None:
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def remember(self, session_hash: str | None, token: str | None) -> None:
        if not session_hash or not token:
            return
        with self._lock:
            self._tokens[session_hash] = token
            self._tokens.move_to_end(session_hash)
            while len(self._tokens) > self.capacity:
                self._tokens.popitem(last=False)

    def forget(self, session_hash: str | None) -> str | None:
        with self._lock:
            return self._tokens.pop(session_hash or "", None)


PAGES = PageSessions()


def page_state() -> gr.State:
    """The page's State, made anew for every page load (one per visitor session): a random
    ``token`` that keys the page's cancel flags and heavy results, and ``who``, the visitor,
    filled in by ``identify`` as the page loads."""
    return gr.State(lambda: {"token": secrets.token_hex(16), "who": None})


def page_token(page) -> str | None:
    """The page's token (tests and scripts may pass the token itself)."""
    if isinstance(page, dict):
        return page.get("token")
    return page if isinstance(page, str) else None


def browser_token_state() -> gr.BrowserState:
    return gr.BrowserState(None, storage_key="grace-visitor", secret=browser_secret())


def identify(browser_token, page, profile: gr.OAuthProfile | None, request: gr.Request):
    """Runs as the page loads: the visitor (signed-in account or browser token) into the page
    State, the token back into the browser, and the session remembered for ``left``."""
    token, visitor = visitor_for(browser_token, profile)
    page = dict(page) if isinstance(page, dict) else {"token": secrets.token_hex(16)}
    page["who"] = visitor.to_state()
    PAGES.remember(getattr(request, "session_hash", None), page["token"])
    name = md_escape(visitor.name)
    shown = ("" if not is_public() else f"Signed in as **{name}**." if visitor.signed_in else
             f"You are **{name}** (this browser)" + ("; sign in to keep your work under your account."
                                                     if os.environ.get("OAUTH_CLIENT_ID") else "."))
    return token, page, shown


def left(request: gr.Request) -> None:
    """``demo.unload``: the visitor closed or reloaded the tab, so their running work stops."""
    from .common import CANCELS

    token = PAGES.forget(getattr(request, "session_hash", None))
    if token:
        CANCELS.cancel(token)
