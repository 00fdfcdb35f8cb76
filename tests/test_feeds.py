"""feedpub.feeds: Atom, RSS and JSON Feed documents, read back by feedparser and lxml."""

from __future__ import annotations

import calendar
import functools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from feedpub import feeds, urls
from feedpub.build import write_feeds
from feedpub.config import Author, Settings
from feedpub.entries import Entry, category_slug
from feedpub.errors import ContentError
from tests.conftest import BASIC_CONFIG

GOLDEN = Path(__file__).parent / "golden" / "feeds"
ATOM = "{http://www.w3.org/2005/Atom}"
CST = timezone(timedelta(hours=8))
SITE_AUTHOR = Author("Ada Author", "ada@example.com")

# The W3C Feed Validation Service's own patterns (rubys/feedvalidator, validators.py):
# RFC 3339 for Atom, and the RFC 2822 form it accepts without a warning for RSS.
W3C_RFC3339 = re.compile(r"^\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*)?(Z|([+-]\d\d:\d\d))$")
W3C_RFC2822 = re.compile(
    r"^((Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d\d? (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d\d\d\d \d\d:\d\d(:\d\d)? (([+-]?\d\d[03]0)|UT|GMT|Z)$"
)


def make_entry(slug: str = "hello", **changes: Any) -> Entry:
    published = changes.pop("published", datetime(2025, 2, 11, 10, 0, tzinfo=CST))
    values: dict[str, Any] = {
        "id": f"tag:example.com,2025-02-11:{slug}",
        "slug": slug,
        "title": f"Post {slug}",
        "url": f"https://example.com/posts/{slug}/",
        "published": published,
        "updated": changes.pop("updated", published),
        "author": SITE_AUTHOR,
        "categories": (),
        "tags": (),
        "content_html": (
            f'<p>Full text of <b>{slug}</b> with <a href="https://example.com/x">a link</a>.</p>'
        ),
        "summary_html": f"<p>Summary of {slug}.</p>",
        "summary_text": f"Summary of {slug}.",
        "image": None,
        "lang": "en",
        "source": f"content/posts/{slug}.md",
    }
    values.update(changes)
    return Entry(**values)


def at(day: int, hour: int = 12, tz: timezone = UTC) -> datetime:
    return datetime(2025, 3, day, hour, 0, tzinfo=tz)


@pytest.fixture
def settings(make_site: Any) -> Settings:
    make_site()
    loaded: Settings = make_site.settings()
    return loaded


def with_feed(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, feed=replace(settings.feed, **changes))


def parse(document: bytes) -> Any:
    parsed = feedparser.parse(document)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    return parsed


def atom(entries: list[Entry], settings: Settings, **kwargs: Any) -> bytes:
    return feeds.render_atom(
        entries, settings=settings, feed_url="https://example.com/atom.xml", **kwargs
    )


def rss(entries: list[Entry], settings: Settings, **kwargs: Any) -> bytes:
    return feeds.render_rss(
        entries, settings=settings, feed_url="https://example.com/rss.xml", **kwargs
    )


def json_feed(entries: list[Entry], settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        feeds.render_json_feed(entries, settings=settings, feed_url="https://example.com/feed.json")
    )
    return data


def xml(document: bytes) -> Any:
    return etree.fromstring(document)


def utc_tuple(parsed_time: time.struct_time) -> datetime:
    return datetime.fromtimestamp(calendar.timegm(parsed_time), UTC)


# ------------------------------------------------------------------ feed level


def test_atom_feed_identifies_itself_with_absolute_links(settings: Settings) -> None:
    parsed = parse(atom([make_entry()], settings))

    assert parsed.version == "atom10"
    assert parsed.feed.title == "Test Site"
    assert parsed.feed.id == "https://example.com/"
    assert parsed.feed.subtitle == "A site for tests"
    assert parsed.feed.language == "en"
    links = {link.rel: link for link in parsed.feed.links}
    assert links["self"].href == "https://example.com/atom.xml"
    assert links["self"].type == "application/atom+xml"
    assert links["alternate"].href == "https://example.com/"
    assert parsed.feed.author_detail == {"name": "Ada Author", "email": "ada@example.com"}


def test_rss_channel_link_is_the_site_and_self_link_the_feed(settings: Settings) -> None:
    document = rss([make_entry()], settings)
    parsed = parse(document)

    assert parsed.version == "rss20"
    channel = xml(document).find("channel")
    assert channel.findtext("link") == "https://example.com/"
    self_link = channel.find("{http://www.w3.org/2005/Atom}link")
    assert self_link.get("rel") == "self"
    assert self_link.get("href") == "https://example.com/rss.xml"
    assert self_link.get("type") == "application/rss+xml"
    assert channel.findtext("description") == "A site for tests"
    assert channel.findtext("language") == "en"


def test_rss_description_falls_back_to_the_title_never_blank(make_site: Any) -> None:
    make_site(config=_config(description=""))
    settings = make_site.settings()

    channel = xml(rss([make_entry()], settings)).find("channel")
    assert channel.findtext("description") == "Test Site"
    assert xml(atom([make_entry()], settings)).find(f"{ATOM}subtitle") is None


def test_feed_updated_is_the_newest_entry_update_not_the_build_time(settings: Settings) -> None:
    newest_published = make_entry("new", published=at(10), updated=at(10))
    edited_later = make_entry("old", published=at(1), updated=at(20, 8))
    entries = [newest_published, edited_later]

    assert parse(atom(entries, settings)).feed.updated == "2025-03-20T08:00:00+00:00"
    last_build = xml(rss(entries, settings)).find("channel").findtext("lastBuildDate")
    assert last_build == "Thu, 20 Mar 2025 08:00:00 +0000"


def test_rendering_twice_gives_the_same_bytes(settings: Settings) -> None:
    entries = [make_entry("a", published=at(1)), make_entry("b", published=at(2))]

    first = (atom(entries, settings), rss(entries, settings), json_feed(entries, settings))
    time.sleep(1.1)  # feedgen's defaults would put the clock's second into the output
    second = (atom(entries, settings), rss(entries, settings), json_feed(entries, settings))
    assert first == second


def test_an_empty_feed_is_still_valid_and_stable(settings: Settings) -> None:
    for document in (atom([], settings), rss([], settings)):
        parsed = parse(document)
        assert parsed.entries == []
    assert parse(atom([], settings)).feed.updated == "1970-01-01T00:00:00+00:00"
    assert json_feed([], settings)["items"] == []


def test_feeds_carry_no_stylesheet_unless_the_site_turns_xslt_on(settings: Settings) -> None:
    # Browsers are dropping XSLT: people who open a feed get the HTML feeds page.
    for document in (atom([make_entry()], settings), rss([make_entry()], settings)):
        assert b"<?xml-stylesheet" not in document
    assert "feed.xsl" not in [o.relpath for o in feeds.render_feeds([make_entry()],
                                                                    settings).outputs]


def test_stylesheet_instruction_comes_once_right_after_the_declaration(settings: Settings) -> None:
    settings = with_feed(settings, xslt=True)
    for document in (atom([make_entry()], settings), rss([make_entry()], settings)):
        lines = document.decode().splitlines()
        assert lines[0] == "<?xml version='1.0' encoding='UTF-8'?>"
        assert lines[1] == '<?xml-stylesheet type="text/xsl" href="https://example.com/feed.xsl"?>'
        assert document.count(b"<?xml-stylesheet") == 1


# ------------------------------------------------------------------ entries


def test_entries_come_newest_first_whatever_the_input_order(settings: Settings) -> None:
    entries = [make_entry(s, published=at(d)) for s, d in (("mid", 5), ("old", 1), ("new", 9))]

    for document in (atom(entries, settings), rss(entries, settings)):
        assert [e.title for e in parse(document).entries] == ["Post new", "Post mid", "Post old"]
    assert [i["title"] for i in json_feed(entries, settings)["items"]] == [
        "Post new",
        "Post mid",
        "Post old",
    ]


def test_entry_ids_links_and_guids(settings: Settings) -> None:
    tagged = make_entry("tagged")
    permalink_id = make_entry("plain", id="https://example.com/posts/plain/")

    for parsed_entry, expected in zip(
        parse(atom([tagged], settings)).entries + parse(rss([tagged], settings)).entries,
        [tagged, tagged],
        strict=True,
    ):
        assert parsed_entry.id == expected.id
        assert parsed_entry.link == expected.url
        assert urlsplit(parsed_entry.link).scheme == "https"

    atom_link = xml(atom([tagged], settings)).find(f"{ATOM}entry/{ATOM}link")
    assert atom_link.attrib == {
        "href": "https://example.com/posts/tagged/",
        "rel": "alternate",
        "type": "text/html",
    }
    guids = [
        item.find("guid").attrib["isPermaLink"]
        for item in xml(rss([tagged, permalink_id], settings)).iter("item")
    ]
    # A tag: URI is no link; an id that is the permalink may say so.
    assert guids == ["false", "true"]


@pytest.mark.parametrize("render", [atom, rss], ids=["atom", "rss"])
def test_instant_survives_the_offset(render: Any, settings: Settings) -> None:
    entry = make_entry(published=datetime(2025, 2, 11, 10, 0, tzinfo=CST))

    parsed = parse(render([entry], settings)).entries[0]
    assert utc_tuple(parsed.published_parsed) == datetime(2025, 2, 11, 2, 0, tzinfo=UTC)


def test_json_feed_dates_are_rfc3339_with_the_same_instant(settings: Settings) -> None:
    entry = make_entry(
        published=datetime(2025, 2, 11, 10, 0, tzinfo=CST),
        updated=datetime(2025, 2, 12, 9, 30, 15, 123456, tzinfo=CST),
    )
    item = json_feed([entry], settings)["items"][0]

    assert item["date_published"] == "2025-02-11T10:00:00+08:00"
    assert item["date_modified"] == "2025-02-12T09:30:15+08:00"
    assert datetime.fromisoformat(item["date_published"]) == datetime(2025, 2, 11, 2, 0, tzinfo=UTC)


def test_offsets_off_the_half_hour_are_written_in_utc(settings: Settings) -> None:
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    entry = make_entry(published=datetime(2025, 2, 11, 10, 0, tzinfo=kathmandu))

    pub_date = xml(rss([entry], settings)).find("channel/item/pubDate").text
    assert pub_date == "Tue, 11 Feb 2025 04:15:00 +0000"
    assert W3C_RFC2822.match(pub_date)
    published = xml(atom([entry], settings)).findtext(f"{ATOM}entry/{ATOM}published")
    assert published == "2025-02-11T04:15:00+00:00"


def test_a_naive_date_is_refused_with_the_post_named(settings: Settings) -> None:
    entry = make_entry(published=datetime(2025, 2, 11, 10, 0))

    with pytest.raises(ContentError) as caught:
        atom([entry], settings)
    assert caught.value.path == Path("content/posts/hello.md")


def test_full_content_is_declared_html(settings: Settings) -> None:
    entry = make_entry()
    root = xml(atom([entry], settings))

    content = root.find(f"{ATOM}entry/{ATOM}content")
    summary = root.find(f"{ATOM}entry/{ATOM}summary")
    assert content.get("type") == "html"
    assert summary.get("type") == "html"
    assert content.text == entry.content_html
    parsed = parse(atom([entry], settings)).entries[0]
    assert parsed.content[0].type == "text/html"
    assert "<b>hello</b>" in parsed.content[0].value
    assert parsed.summary == "<p>Summary of hello.</p>"

    item = parse(rss([entry], settings)).entries[0]
    assert item.summary == "<p>Summary of hello.</p>"
    assert item.content[0].value == entry.content_html


def test_summary_only_mode_leaves_the_body_out(settings: Settings) -> None:
    summary_only = with_feed(settings, full_content=False)
    entry = make_entry()

    root = xml(atom([entry], summary_only))
    assert root.find(f"{ATOM}entry/{ATOM}content") is None
    assert root.findtext(f"{ATOM}entry/{ATOM}summary") == "<p>Summary of hello.</p>"
    item = xml(rss([entry], summary_only)).find("channel/item")
    assert item.find("{http://purl.org/rss/1.0/modules/content/}encoded") is None
    assert item.findtext("description") == "<p>Summary of hello.</p>"
    assert b"Full text of" not in rss([entry], summary_only)
    json_item = json_feed([entry], summary_only)["items"][0]
    assert json_item["content_html"] == "<p>Summary of hello.</p>"


def test_blank_summaries_are_left_out_not_written_empty(settings: Settings) -> None:
    entry = make_entry(summary_html="  \n", summary_text="")

    for mode in (settings, with_feed(settings, full_content=False)):
        root = xml(atom([entry], mode))
        assert root.find(f"{ATOM}entry/{ATOM}summary") is None
        # With no summary to show, the body stands in even in summary-only mode.
        assert root.findtext(f"{ATOM}entry/{ATOM}content") == entry.content_html
        item = xml(rss([entry], mode)).find("channel/item")
        assert item.findtext("description") == entry.content_html
        assert "summary" not in json_feed([entry], mode)["items"][0]


def test_authors_in_every_format(settings: Settings) -> None:
    with_email = make_entry("a", author=Author("Zoë Writer", "zoe@example.org"), published=at(2))
    name_only = make_entry("b", author=Author("Bob 鮑勃"), published=at(1))
    nameless = make_entry("c", author=Author(""), published=at(1, hour=1))

    atom_entries = parse(atom([with_email, name_only, nameless], settings)).entries
    assert [e.author_detail for e in atom_entries] == [
        {"name": "Zoë Writer", "email": "zoe@example.org"},
        {"name": "Bob 鮑勃"},
        {"name": "Ada Author", "email": "ada@example.com"},
    ]
    items = list(xml(rss([with_email, name_only, nameless], settings)).iter("item"))
    dc_creator = "{http://purl.org/dc/elements/1.1/}creator"
    assert items[0].findtext("author") == "zoe@example.org (Zoë Writer)"
    assert items[0].find(dc_creator) is None
    # RSS <author> must hold an email address; a bare name goes to dc:creator.
    assert items[1].find("author") is None
    assert items[1].findtext(dc_creator) == "Bob 鮑勃"
    assert items[2].findtext("author") == "ada@example.com (Ada Author)"
    json_items = json_feed([with_email, name_only], settings)["items"]
    assert json_items[0]["authors"] == [{"name": "Zoë Writer", "url": "mailto:zoe@example.org"}]
    assert json_items[1]["authors"] == [{"name": "Bob 鮑勃"}]


def test_no_dublin_core_namespace_when_every_author_has_an_email(settings: Settings) -> None:
    assert b"purl.org/dc/elements" not in rss([make_entry()], settings)


def test_cjk_emoji_and_markup_titles_round_trip_as_text(settings: Settings) -> None:
    titles = [
        "中文标题：你好，世界",
        "絵文字 🇨🇳 👨‍👩‍👧‍👦 family",
        "Use <em> & friends </em>",
        "Tom & Jerry's <script>alert(1)</script>",
    ]
    entries = [make_entry(f"p{i}", title=t, published=at(9 - i)) for i, t in enumerate(titles)]

    for document in (atom(entries, settings), rss(entries, settings)):
        assert [e.title for e in parse(document).entries] == titles
    assert [i["title"] for i in json_feed(entries, settings)["items"]] == titles
    assert b"<script>" not in atom(entries, settings)


def test_control_characters_are_dropped_not_a_crash(settings: Settings) -> None:
    entry = make_entry(
        title="Bell\x07 and\x0b tab\x1f \ufffe end\x85",
        content_html="<p>x\x00y\x08z \ud800</p>",
        summary_html="<p>\x0c</p>",
        categories=("bad\x01cat",),
    )

    parsed = parse(atom([entry], settings)).entries[0]
    assert parsed.title == "Bell and tab end"
    assert parsed.content[0].value == "<p>xyz </p>"
    parse(rss([entry], settings))
    assert json_feed([entry], settings)["items"][0]["title"] == "Bell and tab end"


def test_newlines_in_a_title_become_one_line(settings: Settings) -> None:
    entry = make_entry(title="Two\nlines\r\n  here")

    assert parse(atom([entry], settings)).entries[0].title == "Two lines here"


def test_categories_and_tags_are_terms_once_each(settings: Settings) -> None:
    entry = make_entry(categories=("Python", "中文"), tags=("python-tips", "Python"))

    terms = [t.term for t in parse(atom([entry], settings)).entries[0].tags]
    assert terms == ["Python", "中文", "python-tips"]
    assert json_feed([entry], settings)["items"][0]["tags"] == terms


def test_entry_language_is_marked_when_it_differs(settings: Settings) -> None:
    chinese = make_entry("zh", lang="zh-CN", published=at(2))
    english = make_entry("en", lang="en", published=at(1))

    atom_entries = xml(atom([chinese, english], settings)).findall(f"{ATOM}entry")
    lang = "{http://www.w3.org/XML/1998/namespace}lang"
    assert [e.get(lang) for e in atom_entries] == ["zh-CN", None]
    assert [i["language"] for i in json_feed([chinese, english], settings)["items"]] == [
        "zh-CN",
        "en",
    ]


# ------------------------------------------------------------------ JSON Feed


def test_json_feed_has_the_required_fields(settings: Settings) -> None:
    with_image = make_entry("a", image="https://example.com/a.png", published=at(2))
    empty = make_entry("b", content_html="", summary_html="", summary_text="", published=at(1))
    data = json_feed([with_image, empty], settings)

    assert data["version"] == "https://jsonfeed.org/version/1.1"
    assert data["title"] == "Test Site"
    assert data["home_page_url"] == "https://example.com/"
    assert data["feed_url"] == "https://example.com/feed.json"
    assert data["description"] == "A site for tests"
    assert data["language"] == "en"
    assert data["authors"] == [{"name": "Ada Author", "url": "mailto:ada@example.com"}]
    for item in data["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item
    assert data["items"][0]["image"] == "https://example.com/a.png"
    assert data["items"][0]["summary"] == "Summary of a."
    assert data["items"][1]["content_text"] == ""
    assert "image" not in data["items"][1]


# ------------------------------------------------------------------ W3C validator rules


def test_what_the_w3c_validator_checks(settings: Settings) -> None:
    entries = [
        make_entry("a", published=at(3, tz=CST), categories=("Python",)),
        make_entry("b", author=Author("No Mail"), published=at(2)),
        make_entry("c", summary_html="", summary_text="", published=at(1)),
    ]
    atom_root = xml(atom(entries, settings))
    rss_root = xml(rss(entries, settings))

    # Self links, absolute.
    self_links = atom_root.findall(f"{ATOM}link[@rel='self']")
    assert [link.get("href") for link in self_links] == ["https://example.com/atom.xml"]
    assert rss_root.find("channel/{http://www.w3.org/2005/Atom}link[@rel='self']") is not None
    # Ids are absolute URIs (tag: or http), and the feed has an author.
    for ident in [atom_root.findtext(f"{ATOM}id")] + [
        e.findtext(f"{ATOM}id") for e in atom_root.iter(f"{ATOM}entry")
    ]:
        assert urlsplit(ident).scheme in {"tag", "https"}, ident
    assert atom_root.find(f"{ATOM}author/{ATOM}name").text
    # Timezone-bearing dates in the validator's own formats.
    for name in ("updated", "published"):
        for element in atom_root.iter(f"{ATOM}{name}"):
            assert W3C_RFC3339.match(element.text), element.text
    for element in rss_root.iter("pubDate", "lastBuildDate"):
        assert W3C_RFC2822.match(element.text), element.text
    # HTML is declared; nothing blank.
    for element in atom_root.iter(f"{ATOM}content", f"{ATOM}summary"):
        assert element.get("type") == "html"
        assert element.text.strip()
    for element in rss_root.iter("description"):
        assert element.text.strip()
    # Only absolute references in RSS HTML (ContainsRelRef).
    for element in rss_root.iter(
        "description", "{http://purl.org/rss/1.0/modules/content/}encoded"
    ):
        for ref in re.findall(r'(?:href|src)="([^"]*)"', element.text):
            assert re.match(r"\w+:", ref), ref
    # Every item has a guid, and a tag: guid does not claim to be a permalink.
    for item in rss_root.iter("item"):
        assert item.find("guid").get("isPermaLink") == "false"


# ------------------------------------------------------------------ stylesheet


def test_the_stylesheet_turns_both_formats_into_a_page(settings: Settings) -> None:
    transform = etree.XSLT(etree.fromstring(feeds.feed_stylesheet(settings)))
    entries = [
        make_entry("a", title="中文 & <b>", published=at(2)),
        make_entry("b", published=at(1)),
    ]

    for document, url, first_date in (
        (atom(entries, settings), "https://example.com/atom.xml", "2025-03-02"),
        (rss(entries, settings), "https://example.com/rss.xml", "02 Mar 2025"),
    ):
        page = transform(etree.fromstring(document))
        text = str(page)
        html = etree.HTML(text.encode())
        assert html.findtext(".//h1") == "Test Site"
        assert html.findtext(".//code") == url
        links = list(html.iterfind(".//ol/li/a"))
        assert [(a.text or "").strip() for a in links] == ["中文 & <b>", "Post b"]
        assert [a.get("href") for a in links] == [
            "https://example.com/posts/a/",
            "https://example.com/posts/b/",
        ]
        assert (html.findtext(".//ol/li/time") or "").strip() == first_date
        # Nothing fetched from elsewhere, nothing run.
        assert html.find(".//script") is None and html.find(".//link") is None
        assert not html.xpath("//*[@src]")


def test_a_site_can_replace_the_stylesheet(make_site: Any) -> None:
    make_site(files={"templates/feed.xsl": "<!-- mine -->"})

    assert feeds.feed_stylesheet(make_site.settings()) == b"<!-- mine -->"


# ------------------------------------------------------------------ writing


def test_write_feeds_writes_every_format_within_the_limit(settings: Settings) -> None:
    limited = with_feed(settings, limit=2)
    entries = [make_entry(f"p{d}", published=at(d)) for d in range(1, 6)]

    written = write_feeds(entries, limited)

    public = settings.public_dir
    assert written == [
        public / "atom.xml",
        public / "rss.xml",
        public / "feed.json",
    ]
    for name in ("atom.xml", "rss.xml"):
        assert [e.title for e in parse((public / name).read_bytes()).entries] == [
            "Post p5",
            "Post p4",
        ]
    data = json.loads((public / "feed.json").read_bytes())
    assert [i["id"] for i in data["items"]] == [entries[4].id, entries[3].id]
    assert not list(public.rglob(".*.tmp"))


def test_write_feeds_honours_the_formats(settings: Settings) -> None:
    only_atom = with_feed(settings, formats=("atom",), xslt=True)

    written = write_feeds([make_entry(categories=("News",))], only_atom)

    public = settings.public_dir
    assert sorted(p.relative_to(public).as_posix() for p in written) == [
        "atom.xml",
        "categories/news/atom.xml",
        "feed.xsl",
    ]
    json_only = with_feed(settings, formats=("json",))
    (public / "feed.xsl").unlink()
    assert write_feeds([make_entry(categories=("News",))], json_only) == [
        public / "feed.json"
    ]
    # Category feeds of a format no longer configured are taken away.
    assert not (public / "categories").exists()


def test_unchanged_feeds_are_not_rewritten(settings: Settings) -> None:
    entries = [make_entry("a", categories=("Python",))]
    first = write_feeds(entries, settings)
    atom_path = settings.public_dir / "atom.xml"
    before = atom_path.stat().st_mtime_ns

    assert write_feeds(entries, settings) == []
    assert atom_path.stat().st_mtime_ns == before
    assert len(first) == 5  # atom, rss, json and the category's atom and rss

    changed = [replace(entries[0], title="New title")]
    rewritten = write_feeds(changed, settings)
    assert atom_path in rewritten
    assert not (settings.public_dir / "feed.xsl").exists()


def test_category_feeds_including_non_ascii(settings: Settings) -> None:
    entries = [
        make_entry("a", categories=("Python", "中文 分类"), published=at(3)),
        make_entry("b", categories=("python",), published=at(2)),
        make_entry("c", categories=("中文 分类",), published=at(1)),
        make_entry("d", published=at(4)),
    ]

    write_feeds(entries, settings)

    folder = settings.public_dir / "categories"
    assert sorted(p.name for p in folder.iterdir()) == ["python", "中文-分类"]
    python = parse((folder / "python" / "atom.xml").read_bytes())
    # "Python" and "python" share a slug, and so a feed.
    assert python.feed.title == "Test Site: Python, python"
    assert [e.title for e in python.entries] == ["Post a", "Post b"]
    assert python.feed.id == "https://example.com/categories/python/atom.xml"
    chinese = parse((folder / "中文-分类" / "rss.xml").read_bytes())
    assert chinese.feed.title == "Test Site: 中文 分类"
    assert [e.title for e in chinese.entries] == ["Post a", "Post c"]
    self_link = [link.href for link in chinese.feed.links if link.rel == "self"]
    assert self_link == [
        "https://example.com/categories/%E4%B8%AD%E6%96%87-%E5%88%86%E7%B1%BB/rss.xml"
    ]
    assert urls.category_feed_url(settings.site.url, category_slug("中文 分类"), "rss") == (
        self_link[0]
    )


def test_category_feeds_respect_the_limit(settings: Settings) -> None:
    limited = with_feed(settings, limit=2)
    entries = [make_entry(f"p{d}", categories=("News",), published=at(d)) for d in range(1, 5)]

    write_feeds(entries, limited)

    news = parse((settings.public_dir / "categories/news/atom.xml").read_bytes())
    assert [e.title for e in news.entries] == ["Post p4", "Post p3"]


def test_feeds_of_vanished_categories_are_removed(settings: Settings) -> None:
    write_feeds([make_entry(categories=("Old", "Kept"))], settings)
    folder = settings.public_dir / "categories"
    (folder / "old" / "notes.txt").write_text("a person's file", encoding="utf-8")
    (folder / "gone").mkdir()
    (folder / "gone" / "atom.xml").write_text("stale", encoding="utf-8")

    write_feeds([make_entry(categories=("Kept",))], settings)

    assert not (folder / "gone").exists()
    assert not (folder / "old" / "atom.xml").exists()
    assert (folder / "old" / "notes.txt").exists()
    assert (folder / "kept" / "atom.xml").exists()

    write_feeds([make_entry()], settings)
    assert (folder / "old" / "notes.txt").exists()
    assert not (folder / "kept").exists()


# ------------------------------------------------------------------ golden files


def golden_entries() -> list[Entry]:
    return [
        make_entry(
            "ni-hao",
            id="tag:example.com,2025-02-11:ni-hao",
            title="你好，世界 🌏",
            url="https://example.com/2025/02/11/ni-hao/",
            published=datetime(2025, 2, 11, 10, 0, tzinfo=CST),
            updated=datetime(2025, 2, 12, 9, 30, tzinfo=CST),
            author=Author("李雷"),
            categories=("中文",),
            tags=("hello",),
            content_html=(
                "<p>第一篇文章。"
                '<img src="https://example.com/2025/02/11/ni-hao/a.png" alt="图"></p>'
            ),
            summary_html="<p>第一篇文章。</p>",
            summary_text="第一篇文章。",
            image="https://example.com/2025/02/11/ni-hao/a.png",
            lang="zh-CN",
        ),
        make_entry(
            "tom-and-jerry",
            id="tag:example.com,2025-01-05:tom-and-jerry",
            title="Tom & Jerry",
            url="https://example.com/2025/01/05/tom-and-jerry/",
            published=datetime(2025, 1, 5, 8, 0, tzinfo=UTC),
            categories=("Cartoons",),
            content_html="<p>Cat &amp; mouse.</p>",
            summary_html="",
            summary_text="",
        ),
    ]


@pytest.mark.parametrize(
    ("name", "render"),
    [
        ("atom.xml", feeds.render_atom),
        ("rss.xml", feeds.render_rss),
        ("feed.json", feeds.render_json_feed),
    ],
)
def test_golden_feeds(name: str, render: Any, settings: Settings) -> None:
    document = render(golden_entries(), settings=settings, feed_url=f"https://example.com/{name}")

    expected = (GOLDEN / name).read_bytes()
    assert document.decode() == expected.decode()
    assert document == expected


# ------------------------------------------------------------------ in a browser


@pytest.fixture
def site_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for a site's public/ folder: (its URL, the folder)."""
    public = tmp_path / "site" / "public"
    public.mkdir(parents=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=public))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", public
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
def test_with_xslt_on_a_browser_shows_the_feed_as_a_page(
    make_site: Any, site_server: tuple[str, Path]
) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    url, public = site_server
    make_site(config=_config(url=url).replace("[feed]", "[feed]\nxslt = true"))
    settings = make_site.settings()
    assert settings.feed.xslt
    entries = [
        make_entry("a", title="你好 🌏 & <em>", url=url + "a/", published=at(2)),
        make_entry("b", title="Second post", url=url + "b/", published=at(1)),
    ]
    write_feeds(entries, settings)
    assert settings.public_dir == public

    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            for name in ("atom.xml", "rss.xml"):
                page = browser.new_page(viewport={"width": 375, "height": 800})
                page.goto(url + name)
                assert page.locator("h1").inner_text() == "Test Site"
                assert page.locator("ol li a").all_inner_texts() == [
                    "你好 🌏 & <em>",
                    "Second post",
                ]
                assert page.locator("code").inner_text() == url + name
                # Readable on a phone: nothing wider than the screen.
                assert page.evaluate("document.documentElement.scrollWidth") <= 375
                page.close()
        finally:
            browser.close()


def _config(url: str = "https://example.com/", description: str = "A site for tests") -> str:
    """The shared test site, served from another URL or with another description."""
    site_url, site_description = 'url = "https://example.com/"', 'description = "A site for tests"'
    assert BASIC_CONFIG.count(site_url) == BASIC_CONFIG.count(site_description) == 1
    return BASIC_CONFIG.replace(site_url, f'url = "{url}"').replace(
        site_description, f'description = "{description}"'
    )
