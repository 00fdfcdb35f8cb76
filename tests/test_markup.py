"""feedpub.markup: Markdown -> safe HTML with absolute URLs, summaries, plain text."""

from __future__ import annotations

import html
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from typing import Literal
from urllib.parse import urljoin

import feedparser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html
from uniseg.graphemecluster import grapheme_cluster_boundaries, grapheme_clusters

from feedpub import markup
from feedpub.content import remove_xml_forbidden
from feedpub.markup import (
    html_to_text,
    render_markdown,
    sanitize_html,
    split_excerpt,
    summarize_html,
)

BASE = "https://example.com/2025/02/11/post/"
FLAG = "🇨🇳"  # two regional indicators, one cluster
FAMILY = "👨‍👩‍👧‍👦"  # seven code points joined by ZWJ, one cluster
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def render(body: str, prefix: str = "p1-") -> str:
    return render_markdown(body, base_url=BASE, id_prefix=prefix)


def parse(fragment: str) -> lxml_html.HtmlElement:
    return lxml_html.fragment_fromstring(fragment, create_parent="div")


def attribute_values(fragment: str, xpath: str) -> list[str]:
    return [str(value) for value in parse(fragment).xpath(xpath)]


def assert_fits_in_xml(fragment: str) -> None:
    """Feeds carry the HTML as escaped text: every character must be one XML allows."""
    assert not XML_FORBIDDEN.search(fragment)
    etree.fromstring(f"<content>{html.escape(fragment)}</content>")


def clusters(text: str) -> list[str]:
    return list(grapheme_clusters(text))


# --- Markdown -------------------------------------------------------------------


def test_table_with_alignment() -> None:
    out = render("| Name | Qty |\n|:-----|----:|\n| 東京 🗼 | 3 |\n| café | 12 |\n")
    root = parse(out)
    assert [th.text for th in root.iter("th")] == ["Name", "Qty"]
    assert [td.text for td in root.iter("td")] == ["東京 🗼", "3", "café", "12"]
    assert root.xpath("//th")[1].get("style") == "text-align:right"


def test_footnotes_do_not_leak_between_posts_and_ids_are_prefixed() -> None:
    first = render("Claim[^a].\n\n[^a]: First post's note.", prefix="pa-")
    second = render("No notes here, just text.", prefix="pb-")
    third = render("Other claim[^a].\n\n[^a]: Third post's note.", prefix="pc-")

    assert "First post's note" in first
    assert "footnote" not in second and "First post" not in second
    assert "First post" not in third

    for out, prefix in ((first, "pa-"), (third, "pc-")):
        root = parse(out)
        ids = set(root.xpath("//@id"))
        assert ids and all(i.startswith(prefix) for i in ids)
        links = [str(h) for h in root.xpath("//a/@href")]
        # Each footnote link and back link points at an id that exists in this post.
        assert len(links) == 2
        for href in links:
            page, _, fragment = href.partition("#")
            assert page == BASE
            assert fragment in ids
    assert not set(parse(first).xpath("//@id")) & set(parse(third).xpath("//@id"))


def test_heading_ids_prefixed_and_internal_links_follow() -> None:
    out = render("## Intro 介紹\n\nSee [the intro](#intro-介紹) or [comments](#comments).\n")
    root = parse(out)
    assert root.xpath("//h2/@id") == ["p1-intro-介紹"]
    hrefs = [str(h) for h in root.xpath("//a/@href")]
    assert hrefs[0] == BASE + "#p1-intro-%E4%BB%8B%E7%B4%B9"
    # An id that is not in the post (the blog theme's) keeps its name.
    assert hrefs[1] == BASE + "#comments"


def test_fenced_code_inside_a_list_item() -> None:
    body = "1. Install it:\n\n    ```bash\n    pip install feedpub\n    ```\n\n2. Run it.\n"
    root = parse(render(body))
    items = root.xpath("//ol/li")
    assert len(items) == 2
    code = items[0].xpath(".//pre//code")
    assert code and "pip install feedpub" in code[0].text_content()
    assert "```" not in root.text_content()


def test_highlighted_code_keeps_inline_colours_after_sanitizing() -> None:
    out = render('```python\ndef f(x):\n    return "s"  # note\n```\n')
    root = parse(out)
    styles = [str(s) for s in root.xpath("//pre//span/@style")]
    assert any(re.search(r"color:#[0-9a-fA-F]{3,6}", s) for s in styles)
    assert any("font-weight:bold" in s for s in styles)
    assert any("font-style:italic" in s for s in styles)
    assert root.xpath("//div[@class='highlight']/@style") == ["background-color:#f8f8f8"]
    assert "class=" not in "".join(etree.tostring(s, encoding="unicode") for s in root.iter("span"))


def test_feedparser_keeps_colours_links_and_tables_as_rendered() -> None:
    # feedparser sanitizes entry HTML as many readers do; nothing of ours may be lost.
    out = render(
        "```python\nwhile True:\n    pass  # loop\n```\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n"
        '<span style="color: red; font-style: italic">x</span> [rel](../x) ![i](a b.png)'
    )
    feed = (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>t</title><id>urn:t</id><updated>2025-01-01T00:00:00Z</updated>"
        "<entry><title>e</title><id>urn:e</id><updated>2025-01-01T00:00:00Z</updated>"
        f'<content type="html">{html.escape(out)}</content></entry></feed>'
    )
    parsed = feedparser.parse(feed)
    assert not parsed.bozo
    kept = parse(parsed.entries[0].content[0].value)
    ours = parse(out)
    for xpath in ("//@style", "//@href", "//@src", "//th", "//td"):
        theirs = [v if isinstance(v, str) else v.text for v in kept.xpath(xpath)]
        mine = [v if isinstance(v, str) else v.text for v in ours.xpath(xpath)]
        assert len(theirs) == len(mine) > 0, xpath
        if xpath == "//@style":  # feedparser respaces declarations
            theirs = [re.sub(r"\s|;$", "", v) for v in theirs]
        assert theirs == mine, xpath


def test_unknown_language_and_plain_fences_are_escaped_code() -> None:
    out = render("```no-such-language\n<b>not bold</b>\n```\n\n```\na < b\n```\n")
    root = parse(out)
    assert not root.xpath("//b")
    texts = [pre.text_content() for pre in root.iter("pre")]
    assert texts == ["<b>not bold</b>\n", "a < b\n"]


def test_markdown_instance_is_reset_between_documents() -> None:
    render("[ref]: https://example.org/leak\n\n# Heading\n")
    out = render("A [link][ref] that must not resolve.\n\n# Heading\n")
    assert "example.org/leak" not in out
    assert parse(out).xpath("//h1/@id") == ["p1-heading"]


def _render_in_worker(args: tuple[str, str]) -> str:
    body, prefix = args
    return render_markdown(body, base_url=BASE, id_prefix=prefix)


def test_renders_in_worker_processes() -> None:
    bodies = [(f"Post {n}[^x] ![i](img{n}.png)\n\n[^x]: note {n}", f"p{n}-") for n in range(4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        results = list(pool.map(_render_in_worker, bodies))
    assert results == [_render_in_worker(args) for args in bodies]
    assert all(f"note {n}" in out and f"img{n}.png" in out for n, out in enumerate(results))


def test_control_characters_are_removed() -> None:
    body = "Bell\x07 and NUL\x00 and \x1b[31mANSI\x0b\x0c end\ufffe\uffff &#1; &#x1F;"
    out = render(body)
    assert not XML_FORBIDDEN.search(out)
    assert "Bell and NUL and [31mANSI" in html_to_text(out)
    assert_fits_in_xml(out)


def test_remove_xml_forbidden() -> None:
    dirty = "a\tb\nc\rd\x00e\x1ff\ufffeg\uffffh\ud800i\x7f"
    assert remove_xml_forbidden(dirty) == "a\tb\nc\rdefghi\x7f"
    assert remove_xml_forbidden(f"{FAMILY}{FLAG}é") == f"{FAMILY}{FLAG}é"


# --- sanitizing -----------------------------------------------------------------


def test_script_style_iframe_and_forms_are_removed() -> None:
    dirty = (
        "<p>ok</p><script>alert('x')</script><style>p{color:red}</style>"
        "<iframe src='https://evil.example/'>frame text</iframe>"
        "<form action='/steal'><input name=q><button>Go</button></form>"
    )
    out = sanitize_html(dirty, base_url=BASE)
    root = parse(out)
    for tag in ("script", "style", "iframe", "form", "input", "button"):
        assert not root.xpath(f"//{tag}")
    assert "alert" not in out and "color:red" not in out and "frame text" not in out
    assert root.xpath("//p/text()") == ["ok"]


def test_event_handlers_and_dangerous_urls_are_removed() -> None:
    dirty = (
        '<img src="x.png" onerror="alert(1)">'
        '<a href="javascript:alert(1)" onclick="alert(2)">js</a>'
        '<a href="JaVaScRiPt:alert(3)">upper</a>'
        '<a href="java&#x0A;script:alert(4)">newline</a>'
        '<a href=" vbscript:msgbox(5)">vb</a>'
        '<a href="data:text/html,<script>alert(6)</script>">data</a>'
        '<img src="data:image/png;base64,iVBORw0KGgo=">'
        '<img src="x.png" srcset="javascript:alert(7) 1x, data:image/png;base64,AA 2x">'
        '<blockquote cite="javascript:alert(8)">q</blockquote>'
    )
    out = sanitize_html(dirty, base_url=BASE)
    assert "alert" not in out and "msgbox" not in out and "data:" not in out
    assert " on" not in out.lower().replace("one", "")
    root = parse(out)
    assert [a.text for a in root.iter("a")] == ["js", "upper", "newline", "vb", "data"]
    assert not root.xpath("//a/@href") and not root.xpath("//@srcset") and not root.xpath("//@cite")
    assert attribute_values(out, "//img/@src") == [BASE + "x.png", BASE + "x.png"]


def test_style_keeps_only_properties_readers_keep() -> None:
    out = sanitize_html(
        '<span style="position:fixed;max-width:10px;color:red">x</span>'
        '<p style="background: url(https://tracker.example/p.gif); font-weight: bold">y</p>'
        '<div style="background: #fff">z</div>',
        base_url=BASE,
    )
    assert attribute_values(out, "//span/@style") == ["color:red"]
    assert attribute_values(out, "//p/@style") == ["font-weight:bold"]
    assert attribute_values(out, "//div/@style") == ["background-color:#fff"]
    assert "tracker" not in out


@pytest.mark.parametrize(
    ("markup_in", "xpath", "expected"),
    [
        ('<a href="/a">x</a>', "//a/@href", "https://example.com/a"),
        ('<a href="../b">x</a>', "//a/@href", "https://example.com/2025/02/11/b"),
        ('<img src="c.png">', "//img/@src", BASE + "c.png"),
        ('<img src="img dir/with space.png">', "//img/@src", BASE + "img%20dir/with%20space.png"),
        ('<a href="?page=2">x</a>', "//a/@href", BASE + "?page=2"),
        ('<a href="#sec">x</a>', "//a/@href", BASE + "#sec"),
        ('<a href="//cdn.example/x.js">x</a>', "//a/@href", "https://cdn.example/x.js"),
        ('<a href="照片/貓.jpg">x</a>', "//a/@href", BASE + "%E7%85%A7%E7%89%87/%E8%B2%93.jpg"),
        ('<a href="/café?q=crème brûlée">x</a>', "//a/@href",
         "https://example.com/caf%C3%A9?q=cr%C3%A8me%20br%C3%BBl%C3%A9e"),
        ('<a href="100%.html">x</a>', "//a/@href", BASE + "100%25.html"),
        ('<a href="a%20b.html">x</a>', "//a/@href", BASE + "a%20b.html"),
        ('<video poster="still.jpg" src="/v.mp4"></video>', "//video/@poster", BASE + "still.jpg"),
        ('<blockquote cite="../src">q</blockquote>', "//blockquote/@cite",
         "https://example.com/2025/02/11/src"),
        ('<a href="https://example.org/a b">x</a>', "//a/@href", "https://example.org/a%20b"),
        ('<a href="https://例子.example/路">x</a>', "//a/@href",
         "https://xn--fsqu00a.example/%E8%B7%AF"),
        ('<a href="https://example.org/x?a=1&amp;b=2#f">x</a>', "//a/@href",
         "https://example.org/x?a=1&b=2#f"),
        ('<a href="mailto:ada@example.com">x</a>', "//a/@href", "mailto:ada@example.com"),
    ],
)  # fmt: skip
def test_relative_urls_become_absolute_uris(markup_in: str, xpath: str, expected: str) -> None:
    assert attribute_values(sanitize_html(markup_in, base_url=BASE), xpath) == [expected]


@given(
    st.sampled_from(["http://", "https://"]),
    st.text(alphabet="aZ09.-", min_size=1, max_size=12),
    st.sampled_from(["", ":8080", ":"]),
    st.text(alphabet="aZ09-._~/!$&'()*+,=:@%?#; é", max_size=20),
)
def test_links_taken_as_they_are_are_what_joining_and_quoting_would_give(
    scheme: str, host: str, port: str, rest: str
) -> None:
    url = f"{scheme}{host}{port}/{rest}"
    if not markup._PLAIN_WEB_URL.fullmatch(url):
        return
    page = "https://example.com/blog/2025/02/11/taipei/"
    assert markup._to_uri(urljoin(page, url)) == url


def test_srcset_every_candidate_absolute() -> None:
    out = sanitize_html(
        '<img src="a.png" '
        'srcset="a.png 1x, /b.png 2x,\n  ../c%20d.png   640w ,e.png, f.png?w=1,2 3x">'
        '<picture><source srcset="ü.webp" type="image/webp"></picture>',
        base_url=BASE,
    )
    assert attribute_values(out, "//img/@srcset") == [
        f"{BASE}a.png 1x, https://example.com/b.png 2x, "
        f"https://example.com/2025/02/11/c%20d.png 640w, {BASE}e.png, {BASE}f.png?w=1,2 3x"
    ]
    assert attribute_values(out, "//source/@srcset") == [BASE + "%C3%BC.webp"]


def test_markdown_links_and_images_are_absolute() -> None:
    out = render("[up](../other/) ![chart](images/chart.png) [root](/about/) <img src='x y.png'>")
    assert attribute_values(out, "//a/@href") == [
        "https://example.com/2025/02/11/other/",
        "https://example.com/about/",
    ]
    assert attribute_values(out, "//img/@src") == [
        BASE + "images/chart.png",
        BASE + "x%20y.png",
    ]


def test_output_uses_no_entity_xml_lacks() -> None:
    out = render("Note[^1].\n\n[^1]: Text&nbsp;here &copy; &hellip;")
    assert not re.search(r"&(?!amp;|lt;|gt;|quot;|#)", out)
    assert "Text\u00a0here © …" in html_to_text(out)


def test_base_url_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        sanitize_html("<p>x</p>", base_url="/relative/")


# --- excerpts -------------------------------------------------------------------


def test_split_excerpt() -> None:
    body = "First *part*.\n\n<!--more-->\n\nThe rest."
    assert split_excerpt(body, "<!--more-->") == "First *part*."
    assert split_excerpt("No separator here.", "<!--more-->") is None
    assert split_excerpt("<!--more-->\n\nNothing before.", "<!--more-->") is None
    assert split_excerpt("Intro ✂ rest", "✂") == "Intro"
    assert split_excerpt("Anything", "") is None
    assert "more" not in render(body)  # the separator, an HTML comment, is dropped


def test_split_excerpt_keeps_reference_links_defined_later() -> None:
    body = "See [the docs][docs].\n\n<!--more-->\n\nMore.\n\n[docs]: https://example.org/docs\n"
    excerpt = split_excerpt(body, "<!--more-->")
    assert excerpt is not None
    assert attribute_values(render(excerpt), "//a/@href") == ["https://example.org/docs"]


# --- summaries ------------------------------------------------------------------


def test_summary_keeps_whole_paragraphs_that_fit_and_skips_headings() -> None:
    out = render(
        "# Title\n\nFirst [para](/p) here.\n\n## Section\n\n"
        "Second one.\n\nThird paragraph is long.\n"
    )
    # "First para here." is 16, a space between paragraphs 1, "Second one." 11: 28.
    summary = summarize_html(out, length=28)
    root = parse(summary)
    assert [p.text_content() for p in root.iter("p")] == ["First para here.", "Second one."]
    assert not root.xpath("//h1|//h2")
    assert attribute_values(summary, "//a/@href") == ["https://example.com/p"]
    shorter = summarize_html(out, length=27)
    assert [p.text_content() for p in parse(shorter).iter("p")] == ["First para here."]


def test_summary_cuts_at_a_word_and_appends_ellipsis() -> None:
    out = render("The quick brown fox jumps over the lazy dog again and again.")
    assert summarize_html(out, length=22) == "<p>The quick brown fox…</p>"


def test_summary_of_a_post_opening_with_a_list_keeps_the_list() -> None:
    out = render("- one 🍎\n- two 🍐\n\nAfter the list comes a long paragraph of text.\n")
    summary = summarize_html(out, length=15)
    assert [li.text for li in parse(summary).iter("li")] == ["one 🍎", "two 🍐"]
    assert "After" not in summary


def test_summary_drops_footnote_markers_and_ids() -> None:
    out = render("Claim[^1] made.\n\n[^1]: Source.")
    summary = summarize_html(out, length=100)
    assert html_to_text(summary) == "Claim made."
    assert "id=" not in summary and "Source" not in summary


def test_summary_cut_of_cjk_text_counts_characters() -> None:
    text = "隨著技術進步級別的模型已不再是高不可攀的門檻許多公司都能夠開發類似的模型"
    summary = summarize_html(render(text), length=10)
    assert summary == f"<p>{text[:10]}…</p>"


def test_summary_of_mixed_cjk_with_a_far_space_cuts_by_character() -> None:
    text = "GPT-4 級別的模型已不再是高不可攀的門檻，許多公司和開源社群都能夠開發類似的模型。"
    summary_text = html_to_text(summarize_html(render(text), length=30))
    # 30 clusters: "GPT-4 " is 6, then 24 Chinese characters; the space is too far back.
    assert summary_text == "GPT-4 級別的模型已不再是高不可攀的門檻，許多公司和開源…"


@pytest.mark.parametrize("cluster", [FLAG, FAMILY, "e\u0301", "각", "क्षि"])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_summary_never_splits_a_cluster_at_the_boundary(cluster: str, offset: int) -> None:
    length = 10
    # The cluster sits just before, on or after the cut; no spaces to back off to.
    text = "x" * (length - 1 + offset) + cluster * 3 + "y" * 20
    summary = html_to_text(summarize_html(render(text), length=length))
    assert summary.endswith("…")
    kept = summary[:-1]
    assert clusters(kept) == clusters(text)[:length]
    assert len(clusters(summary)) == length + 1


def test_summary_is_empty_without_prose() -> None:
    assert summarize_html(render("![only](photo.jpg)\n"), length=100) == ""
    assert summarize_html(render("```python\nprint('hi')\n```\n"), length=100) == ""
    assert summarize_html(render("# Just a heading\n\n---\n"), length=100) == ""
    assert summarize_html("", length=100) == ""


def test_summary_is_safe_and_balanced_for_any_html() -> None:
    dirty = '<p onclick="x()">Hi <b>there <i>you</p><script>alert(1)</script><p>more'
    summary = summarize_html(dirty, length=100)
    assert "onclick" not in summary and "alert" not in summary
    etree.fromstring(f"<div>{summary}</div>".encode())
    assert html_to_text(summary) == "Hi there you more"


def test_summary_reads_loose_text_and_wrapped_paragraphs() -> None:
    assert html_to_text(summarize_html("Loose <em>text</em> here", length=50)) == "Loose text here"
    wrapped = '<div><p>Inside a div.</p></div><div class="footnote"><p>note</p></div>'
    assert html_to_text(summarize_html(wrapped, length=50)) == "Inside a div."


# --- plain text -----------------------------------------------------------------


def test_html_to_text() -> None:
    assert html_to_text("<p>a&amp;b &lt;tag&gt; caf&eacute;</p><p>next\n\n  line</p>") == (
        "a&b <tag> café next line"
    )
    assert html_to_text("<ul><li>one</li><li>two</li></ul>x<br>y") == "one two x y"
    assert html_to_text("<b>bo</b><i>ld</i>") == "bold"
    assert html_to_text("") == ""
    assert html_to_text("<img src='x.png'>") == ""


# --- properties -----------------------------------------------------------------

_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
# Pieces that join into clusters, and any character at all; 60 pieces cannot make
# a cluster longer than the 64 code points where Zalgo text gets cut.
_TRICKY = [
    *"ab z,.;:中文한\r\n\t", FLAG, FAMILY, "\U0001f1fa", "\u0301", "\u200d", "\ufe0f",
    "\U0001f3fd", "\u1100", "\u1161", "\u11a8", "\u0915", "\u094d", "\u0937", "\u0600", "\u0e33",
]  # fmt: skip
tricky_text = st.lists(
    st.one_of(st.sampled_from(_TRICKY), st.characters(exclude_categories=_SURROGATES)),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=tricky_text, limit=st.integers(min_value=0, max_value=90))
def test_grapheme_ends_match_uniseg(text: str, limit: int) -> None:
    # The fast path must agree with uniseg everywhere it skips it.
    expected = [i for i in grapheme_cluster_boundaries(text) if i > 0]
    assert markup._grapheme_ends(text, limit) == expected[:limit]


@pytest.mark.parametrize(
    "text",
    [
        FLAG * 300 + "\U0001f1fa" + "x",
        "क्षि" * 200 + " end",
        "\r\n" * 300,
        (FAMILY + "\ufe0f") * 50,
        "e" + "\u0301" * 62 + "f",
    ],
)
def test_grapheme_ends_over_long_joined_stretches(text: str) -> None:
    expected = [i for i in grapheme_cluster_boundaries(text) if i > 0]
    assert markup._grapheme_ends(text, 10**6) == expected
    assert markup._grapheme_ends(text, 7) == expected[:7]


def test_zalgo_clusters_are_cut_every_64_code_points() -> None:
    # uniseg is quadratic in a cluster's length; no real character is this long.
    text = "a" + "\u0301" * 700
    assert markup._grapheme_ends(text, 10**6) == [*range(64, 701, 64), 701]


@settings(max_examples=200, deadline=None)
@given(text=tricky_text, length=st.integers(min_value=1, max_value=60))
def test_summary_of_one_paragraph_never_breaks_a_cluster(text: str, length: int) -> None:
    source = f"<p>{html.escape(text)}</p>"
    full = html_to_text(source)
    summary = html_to_text(summarize_html(source, length=length))
    if not full:
        assert summary == ""
        return
    assert len(clusters(summary)) <= length + 1
    if summary != full:
        assert summary.endswith("…")
        kept = summary[:-1]
        assert kept and full.startswith(kept)
        assert len(kept) in set(grapheme_cluster_boundaries(full))


@settings(max_examples=100, deadline=None)
@given(
    paragraphs=st.lists(tricky_text, min_size=1, max_size=5),
    length=st.integers(min_value=1, max_value=80),
)
def test_summary_of_paragraphs_stays_within_length(paragraphs: list[str], length: int) -> None:
    source = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    summary_html = summarize_html(source, length=length)
    summary = html_to_text(summary_html)
    assert len(clusters(summary)) <= length + 1
    assert html_to_text(source).startswith(summary.removesuffix("…"))
    etree.fromstring(f"<div>{summary_html}</div>".encode())


@settings(max_examples=100, deadline=None)
@given(body=st.text(max_size=300))
def test_any_body_renders_to_well_formed_safe_markup(body: str) -> None:
    out = render(body)
    assert_fits_in_xml(out)
    assert not parse(out).xpath("//script|//style|//@*[starts-with(name(), 'on')]")


# --- what real clients showed (issue 13) -------------------------------------------------


@pytest.mark.parametrize(("marker", "next_marker", "start"),
                         [("1.", "2.", None), ("-", "-", None), ("*", "*", None),
                          ("10.", "11.", "10")])
def test_fenced_code_indented_to_the_item_text_stays_in_the_list(
    marker: str, next_marker: str, start: str | None
) -> None:
    pad = " " * (len(marker) + 1)  # CommonMark: blocks of an item start under its text
    body = (f"{marker} Install:\n\n{pad}```sh\n{pad}pip install feedpub\n{pad}  --upgrade\n"
            f"{pad}```\n\n{pad}Then run it.\n\n{next_marker} Build.\n")
    page = parse(render(body))
    [items] = page.xpath("./ol | ./ul")  # one list, not two around the code
    assert len(items) == 2
    first = items[0]
    assert first.xpath("string(.//pre)") == "pip install feedpub\n  --upgrade\n"
    assert [p.text_content() for p in first.iter("p")] == ["Install:", "Then run it."]
    assert items.get("start") == start


def test_list_items_indented_four_spaces_render_as_before() -> None:
    body = "1. One:\n\n    ```python\n    x = 1\n        y = 2\n    ```\n\n2. Two\n"
    page = parse(render(body))
    [items] = page.xpath("./ol")
    assert items[0].xpath("string(.//pre)") == "x = 1\n    y = 2\n"


def test_list_like_lines_in_fenced_code_outside_lists_are_left_alone() -> None:
    body = "```\n1. not a list\n   indented\n```\n"
    assert parse(render(body)).xpath("string(.//pre)") == "1. not a list\n   indented\n"


def test_a_footnote_nobody_refers_to_is_left_out_and_numbers_do_not_skip() -> None:
    body = ("One[^a], three[^c] and one again[^a].\n\n"
            "[^a]: First.\n[^b]: Never referred to.\n[^c]: Third.\n")
    page = parse(render(body, "p7-"))
    assert [a.text for a in page.xpath("//a[@class='footnote-ref']")] == ["1", "2", "1"]
    notes = page.xpath("//div[@class='footnote']/ol/li")
    assert [li.get("id") for li in notes] == ["p7-fn:a", "p7-fn:c"]
    assert "Never referred to" not in page.text_content()
    backlinks = attribute_values(render(body, "p7-"), "//a[@class='footnote-backref']/@href")
    assert backlinks == [BASE + "#p7-fnref:a", BASE + "#p7-fnref2:a", BASE + "#p7-fnref:c"]
    titles = attribute_values(render(body, "p7-"), "//a[@class='footnote-backref']/@title")
    assert titles == ["Jump back to footnote 1 in the text"] * 2 + [
        "Jump back to footnote 2 in the text"]


def test_only_unreferenced_footnotes_leave_no_footnote_section() -> None:
    rendered = render("Text.\n\n[^x]: Never used.\n")
    assert "footnote" not in rendered
    assert parse(rendered).text_content().strip() == "Text."


@pytest.mark.parametrize("language", ["js", "rust", "yaml", "c", "python", "sh", "json"])
def test_no_line_break_of_highlighted_code_is_inside_a_white_space_span(language: str) -> None:
    source = "fn main() {\n    let x = 1;\n    if x {\n        return;\n    }\n}\n"
    rendered = render(f"```{language}\n{source}```\n")
    code = parse(rendered).xpath("//pre")[0]
    assert code.text_content() == source
    # newsboat 2.21 drops a line break followed by a span of white space.
    assert not re.search(r"\n<span[^>]*>\s", rendered)
    assert not re.search(r"<span[^>]*>\s*\n", rendered)
