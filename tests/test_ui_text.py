import html
import re

import pytest

from grace.ui.text import md_escape

HOSTILE = [
    "![x](http://evil/img.png)",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1)) and <https://evil.example>",
    "**bold** _em_ `code` ~~gone~~ \\*not\\* a|b|c {x} #1 + - 1. !",
    "# heading",
    "> quoted",
    "- item",
    "1. item",
    "&amp; &lt;b&gt; &#60;",
    "guest:ab12cd34",
]


def test_md_escape_escapes_html_and_every_metacharacter():
    assert md_escape("<b>&</b>") == "&lt;b&gt;&amp;&lt;/b&gt;"
    assert md_escape("a_b*c") == "a\\_b\\*c"
    assert md_escape("\\") == "\\\\"
    assert md_escape("plain words, 42: ok?") == "plain words, 42: ok?"  # nothing else changes
    for c in "\\`*_{}[]()#+-.!|~":
        assert md_escape(c) == "\\" + c


@pytest.mark.parametrize("text", HOSTILE)
def test_escaped_text_renders_as_itself(text):
    markdown_it = pytest.importorskip("markdown_it")
    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])  # html on, as in Gradio
    out = md.render(md_escape(text)).strip()
    inner = out.removeprefix("<p>").removesuffix("</p>")
    assert out == f"<p>{inner}</p>" and not re.search(r"<[a-z/]", inner)  # one paragraph, no tag in it
    assert html.unescape(inner) == text
