"""Identity and ownership (#26 §4) without a running app: sign-in keys, who may train and export,
the server's record of page sessions and the page-load rate limit, the Train form."""

from __future__ import annotations

import types

import gradio as gr
import pytest
from gradio.context import LocalContext


def _profile(sub: str | None, username: str) -> gr.OAuthProfile:
    data = {"name": username.title(), "preferred_username": username, "profile": "", "picture": ""}
    if sub is not None:
        data["sub"] = sub
    return gr.OAuthProfile(data)


@pytest.fixture
def public(monkeypatch, tmp_path):
    for var in ("SPACE_ID", "SYSTEM", "OAUTH_CLIENT_ID", "GRACE_GUEST_TRAINING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def _request(session_hash: str, host: str = "127.0.0.1", headers: dict | None = None):
    return types.SimpleNamespace(session_hash=session_hash, client=types.SimpleNamespace(host=host),
                                 headers=headers or {})


def test_sign_in_is_the_accounts_sub_and_only_where_gradio_runs_real_oauth(public):
    from grace.ui.identity import identify, visitor_for

    token = "a" * 48
    public.setenv("OAUTH_CLIENT_ID", "client")  # off a Space Gradio mocks sign-in as one fixed profile
    _, v = visitor_for(token, _profile("1111", "alice"))
    assert v.id.startswith("anon:") and not v.signed_in
    _, page, shown = identify(token, {"token": "t"}, _profile("1111", "alice"), _request("s-mock"))
    assert page["who"]["id"].startswith("anon:") and "not trusted" in shown and "\n" not in shown
    public.setenv("SYSTEM", "spaces")  # a Space: Gradio's real OAuth routes
    public.setenv("SPACE_ID", "org/space")
    _, v = visitor_for(token, _profile("1111", "alice"))
    assert (v.id, v.name, v.signed_in) == ("hf:1111", "alice", True)
    _, renamed = visitor_for(token, _profile("1111", "alice-renamed"))
    assert renamed.id == v.id  # a rename keeps the account's work
    _, taker = visitor_for(token, _profile("2222", "alice"))  # someone else takes the freed username
    assert taker.id != v.id
    _, no_sub = visitor_for(token, _profile(None, "alice"))
    assert no_sub.id.startswith("anon:") and not no_sub.signed_in


def test_training_and_exports_need_an_account_in_public_mode(public, tmp_path):
    from grace.ui.identity import IdentityError, Visitor, require_account
    from grace.ui.storage import export_path
    from grace.ui.train_tab import start

    guest = {"id": "anon:" + "0" * 20, "name": "guest:00000000", "signed_in": False}
    msg, _ = start("r1", "grace / supervised", None, 2, 2, 4, 0.2, 0.2, 0.1, 8, 8, "default", guest)
    assert "needs a signed-in account" in msg and "\n" not in msg
    assert not (tmp_path / "data" / "runs" / "r1").exists()
    with pytest.raises(IdentityError, match="Exporting needs a signed-in account"):
        export_path(guest["id"], "explore")
    assert export_path("hf:1111", "explore").parent.is_dir()  # an account exports
    require_account(Visitor("hf:1111", "alice", True), "Training")
    public.setenv("GRACE_GUEST_TRAINING", "1")  # the operator's switch
    require_account(Visitor(guest["id"], guest["name"]), "Training")
    assert export_path(guest["id"], "explore").name.startswith("explore-")
    public.delenv("GRACE_PUBLIC")  # locally everyone may
    public.delenv("GRACE_GUEST_TRAINING")
    assert export_path("local", "explore").name.startswith("explore-")


def test_a_page_whose_state_was_evicted_gets_its_visitor_back(public):
    from grace.ui.identity import PAGES, IdentityError, identify, page_token, session_visitor, visitor_from

    token, page, _ = identify("b" * 48, {"token": "page-token"}, None, _request("s-1"))
    who = page["who"]
    assert who["id"].startswith("anon:") and len(who["id"]) == 25
    fresh = {"token": "made-anew", "who": None}  # what Gradio hands a handler after evicting the State
    with pytest.raises(IdentityError):
        visitor_from(fresh)  # outside that page's session nothing is restored
    ctx = LocalContext.request.set(_request("s-1"))
    try:
        assert visitor_from(fresh).id == who["id"] and page_token(fresh) == "page-token"
        assert fresh["who"] == who  # written back into the State
        assert session_visitor().id == who["id"]
    finally:
        LocalContext.request.reset(ctx)
    PAGES.forget("s-1")


def test_page_sessions_are_bounded_and_page_loads_rate_limited(public):
    from grace.ui import identity

    pages = identity.PageSessions(capacity=3)
    for k in range(5):
        pages.remember(f"s{k}", f"t{k}", {"id": f"anon:{k}"})
    assert not pages.known("s0") and pages.lookup("s4")["token"] == "t4" and pages.forget("s4") == "t4"

    now = [0.0]
    limit = identity.RateLimit(2, window=60.0, max_keys=2, clock=lambda: now[0])
    assert limit.allow("a") and limit.allow("a") and not limit.allow("a")
    now[0] = 30.0
    assert not limit.allow("a") and limit.allow("b")
    now[0] = 60.5  # the first two left the window
    assert limit.allow("a")
    limit.allow("c")
    assert len(limit._seen) == 2  # the table of addresses is bounded too

    public.setattr(identity, "PAGE_LOADS", identity.RateLimit(1))
    _, ok, shown = identity.identify("c" * 48, {"token": "p1"}, None, _request("s-a", "10.0.0.1"))
    assert ok["who"] and not shown.startswith("⚠️")
    _, refused, shown = identity.identify("c" * 48, {"token": "p2"}, None, _request("s-b", "10.0.0.1"))
    assert refused["who"] is None and shown.startswith("⚠️ Too many new pages") and "\n" not in shown
    assert identity.identify("c" * 48, {"token": "p3"}, None, _request("s-c", "10.0.0.2"))[1]["who"]
    assert identity.identify("c" * 48, {"token": "p1"}, None, _request("s-a", "10.0.0.1"))[1]["who"]  # known page

    # the address: the socket's peer off a Space (a header there is anyone's to write), IPv6 by /64
    spoof = {"x-forwarded-for": "1.2.3.4"}
    assert identity.client_key(_request("s", "10.0.0.9", spoof)) == "10.0.0.9"
    assert identity.client_key(_request("s", "2001:db8::1")) == identity.client_key(_request("s", "2001:db8::ffff"))
    public.setenv("SYSTEM", "spaces")
    public.setenv("SPACE_ID", "org/space")
    assert identity.client_key(_request("s", "10.0.0.9", {"x-forwarded-for": "1.2.3.4, 10.1.1.1"})) == "1.2.3.4"
    for s in ("s-a", "s-c"):
        identity.PAGES.forget(s)


def test_opening_another_visitors_run_does_not_fill_the_run_name(public, tmp_path):
    from grace.training.config import GraceConfig
    from grace.ui.common import jobs
    from grace.ui.train_tab import FORM_FIELDS, form_for

    alice = {"id": "hf:1111", "name": "alice", "signed_in": True}
    bob = {"id": "hf:2222", "name": "bob", "signed_in": True}
    run = jobs().run("alices-run")
    run.path.mkdir(parents=True)
    GraceConfig(data="-", steps=7).save(run.config)
    run.write_owner({"owner": alice["id"], "name": "alice", "uploaded": False})
    mine = form_for("alices-run", alice)
    theirs = form_for("alices-run", bob)
    assert len(theirs) == len(FORM_FIELDS) and mine[0] == "alices-run"
    assert theirs[0] != "alices-run" and theirs[0] == gr.update()  # the name box keeps what the visitor typed
    assert theirs[2] == 7  # the settings are there to copy
