"""Visitor and model text inside the Markdown the app builds, shown as the text it is."""

from __future__ import annotations

import re

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN = set("\\`*_{}[]()#+-.!|~=")  # "=" too: a line of them under text makes a heading


def md_escape(text: str) -> str:
    """``text`` as Markdown that renders literally: ``& < >`` become HTML entities and every
    Markdown metacharacter gets a backslash, so no tag, image, link, emphasis, heading, list,
    table or code comes out of it."""
    return "".join(_HTML.get(c) or ("\\" + c if c in _MARKDOWN else c) for c in str(text))


# an absolute path (two parts or more) that is not part of a URL or a word: "/data/grace/uploads/x.txt"
_PATH = re.compile(r"(?<![\w/:.~-])(?:/[^\s/'\"`:;,()<>\[\]{}]+){2,}/?")
_HASH = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{20,}(?![0-9A-Za-z])")  # upload names, temp folders, full ids


def no_server_paths(text: str) -> str:
    """``text`` as a visitor may see it: every server path cut to its file's name (a stored upload,
    named by its content's hash, becomes "the uploaded file"), and hashes of 20 hex digits or more
    (upload names, Gradio's temp folders, visitor ids) left out."""
    def name(m: re.Match) -> str:
        last = m.group(0).rstrip("/").rsplit("/", 1)[-1]
        return "the uploaded file" if _HASH.fullmatch(last.split(".")[0]) else last

    return _HASH.sub("…", _PATH.sub(name, text))
