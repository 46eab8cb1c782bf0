"""Visitor and model text inside the Markdown the app builds, shown as the text it is."""

from __future__ import annotations

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN = set("\\`*_{}[]()#+-.!|~=")  # "=" too: a line of them under text makes a heading


def md_escape(text: str) -> str:
    """``text`` as Markdown that renders literally: ``& < >`` become HTML entities and every
    Markdown metacharacter gets a backslash, so no tag, image, link, emphasis, heading, list,
    table or code comes out of it."""
    return "".join(_HTML.get(c) or ("\\" + c if c in _MARKDOWN else c) for c in str(text))
