"""Who a visitor is, and what they may touch.

Run locally the app is single-user: everyone is ``LOCAL`` and may do everything. On a public
Space (``SPACE_ID`` set, or ``GRACE_PUBLIC=1``) a visitor is the Hugging Face account they signed
in with (``hf_oauth: true`` in the README's front matter, ``gr.LoginButton``; keyed by the
account's stable ``sub``, never the renameable username, and trusted only where Gradio runs its
real OAuth routes), else the random token their browser keeps (``gr.BrowserState``: it survives
reloads). What a visitor makes (a training run, an Evaluate row, an export, a rating) is stored
with their full ``Visitor.id``; only that id may cancel, resume, remove or edit it. The id of an
anonymous visitor is an 80-bit hash of their token, so the id stored on disk never lets anyone act
as them; the short display name (``guest:`` + 8 hex) is only ever shown, never checked.

The page's identity is also kept on the server under the Gradio session (``PAGES``), filled only
by ``identify`` (rate-limited per address), so a flood of fresh sessions that evicts Gradio's
session State does not log visitors out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass

import gradio as gr
from gradio.context import LocalContext
from gradio.utils import get_space

from grace.files.paths import data_dir
from grace.files.textio import atomic_output

from .common import is_public
from .text import md_escape


@dataclass(frozen=True)
class Visitor:
    id: str  # what is stored with a visitor's work and checked: "local", "hf:<sub>" or "anon:<hash of the token>"
    name: str  # what the page shows (never checked: "guest:" + 8 hex is short enough to collide)
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
    ``identify`` when the page loads) or a ``who`` dict itself. A page State that Gradio evicted
    (and made anew, empty) is refilled from ``PAGES``. In public mode a session that never loaded
    the page (a bare API call that skipped ``identify``) has no identity."""
    if not is_public():
        return LOCAL
    if isinstance(state, dict) and "token" in state:
        state = _restore(state).get("who")
    if not state or not isinstance(state, dict) or not str(state.get("id", "")).startswith(("hf:", "anon:")):
        raise IdentityError("This session has no visitor identity yet: reload the page.")
    return Visitor(str(state["id"]), str(state.get("name", "")), bool(state.get("signed_in")))


def require_owner(state: dict | None, owner: str | None, what: str) -> Visitor:
    """The visitor, if they own ``what``; else a one-line refusal."""
    v = visitor_from(state)
    if not v.owns(owner):
        raise IdentityError(f"{what} belongs to another visitor: you can look at it, not change it.")
    return v


def guests_may_train() -> bool:
    """``GRACE_GUEST_TRAINING=1``, set by whoever runs the app: guests may start training and
    export too (tests, a trusted room). Off by default so that quotas bind to accounts."""
    return os.environ.get("GRACE_GUEST_TRAINING", "") == "1"


def require_account(visitor: Visitor, what: str) -> None:
    """In public mode ``what`` (training, downloads) needs a signed-in account: a guest identity
    costs nothing, so per-visitor quotas would not bind to guests. A one-line refusal otherwise."""
    if not is_public() or visitor.signed_in or guests_may_train():
        return
    how = ("sign in with Hugging Face (top of the page)" if oauth_is_real()
           else "this app has no sign-in, so it is not offered here")
    raise IdentityError(f"{what} needs a signed-in account on this public app: {how}. "
                        "Guests can explore, map and annotate.")


def require_export(owner: str) -> None:
    """``require_account`` for an export, by the owner id the exports are filed under."""
    require_account(Visitor(owner, owner, signed_in=str(owner).startswith("hf:")), "Exporting")


def may_export(owner: str) -> bool:
    try:
        require_export(owner)
    except IdentityError:
        return False
    return True


def oauth_is_real() -> bool:
    """Whether "Sign in with Hugging Face" is real here. Gradio installs the real OAuth routes only
    on a Space (``SYSTEM=spaces`` with ``SPACE_ID``); anywhere else, with ``OAUTH_CLIENT_ID`` set,
    it mocks them and anyone "signs in" as one fixed profile, so a profile is then ignored."""
    return is_public() and get_space() is not None and bool(os.environ.get("OAUTH_CLIENT_ID"))


def _token_hash(token: str) -> str:
    return hashlib.sha256(("grace-visitor:" + token).encode("utf-8")).hexdigest()[:20]


def visitor_for(token: str | None, profile=None) -> tuple[str, Visitor]:
    """(the browser token to keep, the visitor) for a page load: the signed-in account when there
    is one, else the browser's token (a new random one when it has none or a malformed one)."""
    token = token if isinstance(token, str) and 32 <= len(token) <= 128 and token.isalnum() else secrets.token_hex(24)
    if not is_public():
        return token, LOCAL
    sub = _profile_field(profile, "sub") if oauth_is_real() else ""
    if sub and sub.isalnum() and len(sub) <= 64:  # the account's stable id: a username can be renamed and reused
        name = _profile_field(profile, "preferred_username") or sub
        return token, Visitor(f"hf:{sub}", name[:64], True)
    h = _token_hash(token)
    return token, Visitor(f"anon:{h}", f"guest:{h[:8]}")


def _profile_field(profile, key: str) -> str:
    try:
        value = profile.get(key) if hasattr(profile, "get") else getattr(profile, key, None)
    except Exception:
        value = None
    return value.strip() if isinstance(value, str) else ""


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
    """Gradio session hash -> the page's token and visitor, kept on the server: ``demo.unload``
    (which gets a gr.Request, not the page's States) stops the work of a visitor who closed the
    tab, and a page whose session State Gradio evicted gets its identity back. Only ``identify``
    (rate-limited) adds entries, so a flood of fresh sessions cannot push visitors out of it.
    Bounded: the oldest sessions drop out."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._pages: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def remember(self, session_hash: str | None, token: str | None, who: dict | None = None) -> None:
        if not session_hash or not token:
            return
        with self._lock:
            self._pages[session_hash] = {"token": token, "who": who}
            self._pages.move_to_end(session_hash)
            while len(self._pages) > self.capacity:
                self._pages.popitem(last=False)

    def known(self, session_hash: str | None) -> bool:
        with self._lock:
            return bool(session_hash) and session_hash in self._pages

    def lookup(self, session_hash: str | None) -> dict | None:
        """The page ``{"token", "who"}`` kept for this session (a copy), or None."""
        with self._lock:
            page = self._pages.get(session_hash or "")
            return dict(page) if page else None

    def forget(self, session_hash: str | None) -> str | None:
        with self._lock:
            page = self._pages.pop(session_hash or "", None)
            return page["token"] if page else None


PAGES = PageSessions()


class RateLimit:
    """At most ``limit`` events per ``window`` seconds for each key (a sliding window), for at most
    ``max_keys`` keys (the least recently seen drop out, so the table itself stays bounded)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000, clock=time.monotonic) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._seen: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            times = self._seen.pop(key, None) or deque()
            while times and times[0] <= now - self.window:
                times.popleft()
            ok = len(times) < self.limit
            if ok:
                times.append(now)
            self._seen[key] = times
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return ok


def page_loads_per_minute() -> int:
    """New page sessions one address may open per minute (``GRACE_PAGE_LOADS_PER_MINUTE``, default
    60: a classroom behind one address reloading, not a script minting identities)."""
    try:
        return max(1, int(os.environ.get("GRACE_PAGE_LOADS_PER_MINUTE", "60")))
    except ValueError:
        return 60


PAGE_LOADS = RateLimit(page_loads_per_minute())


def trusts_forwarded_for() -> bool:
    """Whether the X-Forwarded-For header names the visitor: on a Space (its proxy writes it), or
    where ``GRACE_TRUSTED_PROXY=1`` says a proxy in front of the app overwrites it. Elsewhere the
    header is anyone's to write."""
    return get_space() is not None or os.environ.get("GRACE_TRUSTED_PROXY") == "1"


def client_key(request) -> str:
    """Who a rate limit and the model's fair share count: the visitor's address (the first
    X-Forwarded-For entry behind a trusted proxy, else the socket's peer). IPv6 addresses count by
    their /64, the block one subscriber gets."""
    host = ""
    if trusts_forwarded_for():
        headers = getattr(request, "headers", None) or {}
        host = str(headers.get("x-forwarded-for", "")).split(",")[0].strip()
    if not host:
        host = str(getattr(getattr(request, "client", None), "host", "") or "")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def session_hash() -> str | None:
    """The Gradio session of the event being handled (None outside an event: tests, scripts)."""
    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None) if request is not None else None


def current_client() -> str:
    """``client_key`` of the event being handled ("" outside an event)."""
    request = LocalContext.request.get(None)
    return client_key(request) if request is not None else ""


def _restore(page: dict) -> dict:
    """Public mode: a page State without its visitor (Gradio evicted the session's State and made
    a new, empty one) gets the token and visitor that ``identify`` kept for this session."""
    if is_public() and isinstance(page, dict) and not page.get("who"):
        kept = PAGES.lookup(session_hash())
        if kept and kept.get("who"):
            page.update(kept)  # in place: Gradio keeps this dict as the session's State again
    return page


def session_visitor() -> Visitor:
    """The visitor of the event being handled, from the server's record of its page session, for
    handlers that do not get the page State."""
    if not is_public():
        return LOCAL
    return visitor_from((PAGES.lookup(session_hash()) or {}).get("who"))


def page_state() -> gr.State:
    """The page's State, made anew for every page load (one per visitor session): a random
    ``token`` that keys the page's cancel flags and heavy results, and ``who``, the visitor,
    filled in by ``identify`` as the page loads."""
    return gr.State(lambda: {"token": secrets.token_hex(16), "who": None})


def page_token(page) -> str | None:
    """The page's token (tests and scripts may pass the token itself)."""
    if isinstance(page, dict):
        return _restore(page).get("token")
    return page if isinstance(page, str) else None


def browser_token_state() -> gr.BrowserState:
    return gr.BrowserState(None, storage_key="grace-visitor", secret=browser_secret())


REFUSED_LOAD = "⚠️ Too many new pages from your address in the last minute: wait a minute, then reload."


def identify(browser_token, page, profile: gr.OAuthProfile | None, request: gr.Request):
    """Runs as the page loads: the visitor (signed-in account or browser token) into the page
    State and the server's record of the session, the token back into the browser. New page
    sessions are rate-limited per address (each is a new place to keep an identity)."""
    session = getattr(request, "session_hash", None)
    page = dict(page) if isinstance(page, dict) else {"token": secrets.token_hex(16)}
    if is_public() and not PAGES.known(session) and not PAGE_LOADS.allow(client_key(request)):
        page["who"] = None
        return gr.skip(), page, REFUSED_LOAD
    token, visitor = visitor_for(browser_token, profile)
    kept = PAGES.lookup(session)
    if kept:  # the same page identifying again keeps its token (its running work is keyed by it)
        page["token"] = kept["token"]
    page["who"] = visitor.to_state()
    PAGES.remember(session, page["token"], page["who"])
    name = md_escape(visitor.name)
    ignored = profile is not None and is_public() and not oauth_is_real()
    shown = ("" if not is_public() else f"Signed in as **{name}**." if visitor.signed_in else
             f"You are **{name}** (this browser)" + ("; sign in to keep your work under your account."
                                                     if oauth_is_real() else "."))
    if ignored:
        shown += " Sign-in is not trusted here (not a Hugging Face Space), so you are a guest."
    return token, page, shown


def left(request: gr.Request) -> None:
    """``demo.unload``: the visitor closed or reloaded the tab, so their running work stops."""
    from .common import CANCELS

    session = getattr(request, "session_hash", None)
    CANCELS.cancel_session(session)  # whatever this connection asked for, identified or not
    token = PAGES.forget(session)
    if token:
        CANCELS.cancel(token)
