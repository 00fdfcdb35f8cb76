"""Entries -> Atom, RSS 2.0 and JSON Feed documents, for the writer to put in ``public/``.

The only module that imports feedgen. Its traps are handled here, once:
``add_entry`` prepends unless told to append; feed and entry ``updated`` (and
RSS ``lastBuildDate``) default to the build time; ``id()`` also writes an RSS
guid; the RSS channel ``<link>`` is the last link added; HTML needs
``type='html'``; naive datetimes and XML-forbidden characters raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal

from feedgen.feed import FeedGenerator
from lxml import etree

from feedpub import urls
from feedpub.config import Author, Settings
from feedpub.entries import Entry, category_slug
from feedpub.errors import ContentError
from feedpub.writer import Output

ATOM_TYPE = "application/atom+xml"
RSS_TYPE = "application/rss+xml"
JSON_FEED_TYPE = "application/feed+json"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
STYLESHEET_NAME = "feed.xsl"
GENERATOR = "feedpub"
RSS_SPEC_URL = "https://www.rssboard.org/rss-specification"

_ATOM_NS = "http://www.w3.org/2005/Atom"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# What XML 1.0 forbids (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF), plus
# the C1 controls that the W3C validator reports as bad characters.
_NOT_XML_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CATEGORY_FILE_OF = {"atom": "atom.xml", "rss": "rss.xml"}
CATEGORY_FILES = tuple(_CATEGORY_FILE_OF.values())
"""The files each ``categories/<slug>/`` folder may hold."""
# A feed with no entries still needs an `updated`; a fixed one keeps rebuilds identical.
_EMPTY_FEED_UPDATED = datetime(1970, 1, 1, tzinfo=UTC)

Format = Literal["atom", "rss"]


@dataclass(frozen=True)
class _FeedSpec:
    entries: list[Entry]
    title: str
    feed_url: str
    feed_id: str


def render_atom(
    entries: Sequence[Entry],
    *,
    settings: Settings,
    feed_url: str,
    title: str | None = None,
    feed_id: str | None = None,
) -> bytes:
    """An Atom 1.0 document of ``entries`` (newest first), served at ``feed_url``.

    ``feed_id`` is the feed's permanent ``<id>``: the site URL by default, which is
    right for the site's main feed; give every other feed its own.
    """
    return _render_xml("atom", _spec(entries, settings, feed_url, title, feed_id), settings)


def render_rss(
    entries: Sequence[Entry],
    *,
    settings: Settings,
    feed_url: str,
    title: str | None = None,
) -> bytes:
    """An RSS 2.0 document of ``entries`` (newest first), served at ``feed_url``."""
    return _render_xml("rss", _spec(entries, settings, feed_url, title, None), settings)


def render_json_feed(
    entries: Sequence[Entry],
    *,
    settings: Settings,
    feed_url: str,
    title: str | None = None,
) -> bytes:
    """A JSON Feed 1.1 document of ``entries`` (newest first), served at ``feed_url``."""
    spec = _spec(entries, settings, feed_url, title, None)
    site = settings.site
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": spec.title,
        "home_page_url": site.url,
        "feed_url": spec.feed_url,
    }
    if _clean(site.description).strip():
        document["description"] = _clean(site.description).strip()
    document["language"] = site.language
    document["authors"] = [_json_author(site.author, site.title)]
    document["items"] = [_json_item(entry, settings) for entry in spec.entries]
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    return text.encode("utf-8")


@dataclass(frozen=True)
class FeedSet:
    """Every feed file of the site, rendered and not yet written."""

    outputs: list[Output]
    categories: frozenset[str]
    """The slugs of the categories that have feeds."""
    category_files: frozenset[str]
    """The file names each category folder holds (per ``feed.formats``)."""


def render_feeds(entries: Sequence[Entry], settings: Settings) -> FeedSet:
    """Every feed of the site, for :mod:`feedpub.writer` to put in ``public/``.

    ``entries`` are the published entries (all of them, or at least the newest
    ``feed.limit`` overall and of each category). Renders ``atom.xml``,
    ``rss.xml``, ``feed.json`` (per ``feed.formats``), ``feed.xsl`` (when
    ``feed.xslt`` is on), and ``categories/<slug>/atom.xml`` and ``rss.xml``. Every feed is rendered
    before any is written, so a failure leaves the old set whole.
    """
    site = settings.site
    formats = settings.feed.formats
    limit = settings.feed.limit
    newest = _newest_first(entries)
    main = newest[:limit]
    outputs: list[Output] = []
    if "atom" in formats:
        atom = render_atom(main, settings=settings, feed_url=urls.feed_url(site.url, "atom"))
        outputs.append(Output(urls.path_for("atom"), atom))
    if "rss" in formats:
        rss = render_rss(main, settings=settings, feed_url=urls.feed_url(site.url, "rss"))
        outputs.append(Output(urls.path_for("rss"), rss))
    if "json" in formats:
        json_feed = render_json_feed(main, settings=settings,
                                     feed_url=urls.feed_url(site.url, "json"))
        outputs.append(Output(urls.path_for("json"), json_feed))
    if settings.feed.xslt and ("atom" in formats or "rss" in formats):
        outputs.append(Output(urls.path_for("feed_stylesheet"), feed_stylesheet(settings)))

    categories = _by_category(newest)
    for slug, (names, members) in categories.items():
        title = f"{site.title}: {', '.join(names)}"
        shown = members[:limit]
        if "atom" in formats:
            url = urls.category_feed_url(site.url, slug, "atom")
            outputs.append(Output(
                f"{urls.CATEGORIES_DIR}/{slug}/{_CATEGORY_FILE_OF['atom']}",
                render_atom(shown, settings=settings, feed_url=url, title=title, feed_id=url),
            ))
        if "rss" in formats:
            url = urls.category_feed_url(site.url, slug, "rss")
            outputs.append(Output(
                f"{urls.CATEGORIES_DIR}/{slug}/{_CATEGORY_FILE_OF['rss']}",
                render_rss(shown, settings=settings, feed_url=url, title=title),
            ))
    return FeedSet(
        outputs=outputs,
        categories=frozenset(categories),
        category_files=frozenset(_CATEGORY_FILE_OF[f] for f in formats if f in _CATEGORY_FILE_OF),
    )


def feed_stylesheet(settings: Settings) -> bytes:
    """The XSLT that shows a feed to a person: the site's ``templates/feed.xsl`` if any,
    else the built-in one."""
    override = settings.templates_dir / STYLESHEET_NAME
    if override.is_file():
        return override.read_bytes()
    return (resources.files("feedpub") / "templates" / STYLESHEET_NAME).read_bytes()


# ------------------------------------------------------------------ Atom and RSS


def _render_xml(kind: Format, spec: _FeedSpec, settings: Settings) -> bytes:
    site = settings.site
    generator = FeedGenerator()
    generator.generator(GENERATOR)
    generator.docs(RSS_SPEC_URL)
    generator.id(spec.feed_id)
    generator.title(spec.title)
    # RSS takes the channel <link> from the LAST link added: the site, not the feed.
    generator.link(href=spec.feed_url, rel="self", type=ATOM_TYPE if kind == "atom" else RSS_TYPE)
    generator.link(href=site.url, rel="alternate", type="text/html")
    generator.language(site.language)
    description = _clean(site.description).strip()
    if kind == "rss":
        generator.description(description or spec.title)
    elif description:
        generator.subtitle(description)
    generator.author(_atom_author(site.author, site.title))
    generator.updated(_newest_update(spec.entries))
    if kind == "rss" and any(not _author_of(e, settings).email for e in spec.entries):
        generator.load_extension("dc", atom=False, rss=True)

    for entry in spec.entries:
        _add_entry(generator, entry, kind, settings)

    document = generator.atom_str(pretty=True) if kind == "atom" else generator.rss_str(pretty=True)
    return _finish(document, spec.entries, settings, kind)


def _add_entry(generator: Any, entry: Entry, kind: Format, settings: Settings) -> None:
    item = generator.add_entry(order="append")
    # id() would also make an RSS guid with isPermaLink="false"; say which it is.
    item.guid(entry.id, permalink=entry.id == entry.url)
    item.title(_one_line(entry.title) or entry.url)
    item.link(href=entry.url, rel="alternate", type="text/html")
    item.published(_instant(entry.published, entry))
    item.updated(_instant(max(entry.updated, entry.published), entry))
    author = _author_of(entry, settings)
    if kind == "rss" and not author.email:
        item.dc.dc_creator(author.name)
    else:
        item.author(_atom_author(author, settings.site.title))
    for term in _terms(entry):
        item.category(term=term)

    summary = _clean(entry.summary_html).strip()
    content = _clean(entry.content_html).strip()
    if content and (settings.feed.full_content or not summary):
        item.content(content, type="html")
    if summary:
        item.summary(summary, type="html")


def _finish(document: bytes, entries: list[Entry], settings: Settings, kind: Format) -> bytes:
    """Add what feedgen leaves out: the stylesheet instruction (``feed.xslt``), each
    Atom entry's language when it is not the feed's, and its link's rel and type
    (feedgen 1.0 drops both from entry links)."""
    # huge_tree: the document is feedgen's own output, and a long post's content is one
    # text node that lxml otherwise refuses past 10 MB ("Text node too long").
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, remove_blank_text=True, huge_tree=True
    )
    root = etree.fromstring(document, parser)
    if kind == "atom":
        for element, entry in zip(root.iterfind(f"{{{_ATOM_NS}}}entry"), entries, strict=True):
            if entry.lang and entry.lang != settings.site.language:
                element.set(_XML_LANG, entry.lang)
            for link in element.iterfind(f"{{{_ATOM_NS}}}link"):
                if link.get("rel") is None:
                    link.set("rel", "alternate")
                    link.set("type", "text/html")
    if settings.feed.xslt:
        # Browsers are removing XSLT, and apply it only from the feed's own origin: the
        # HTML feeds page (pages.py, web/app.py) is what people see by default.
        href = urls.url_for(settings.site.url, "feed_stylesheet")
        stylesheet = etree.ProcessingInstruction(
            "xml-stylesheet", f'type="text/xsl" href="{href}"'
        )
        root.addprevious(stylesheet)
    return etree.tostring(
        root.getroottree(), xml_declaration=True, encoding="UTF-8", pretty_print=True
    )


def _atom_author(author: Author, fallback_name: str) -> dict[str, str]:
    fields = {"name": _one_line(author.name) or _one_line(fallback_name)}
    if author.email:
        fields["email"] = _one_line(author.email)
    return fields


# ------------------------------------------------------------------ JSON Feed


def _json_item(entry: Entry, settings: Settings) -> dict[str, Any]:
    summary_html = _clean(entry.summary_html).strip()
    content_html = _clean(entry.content_html).strip()
    if not settings.feed.full_content and summary_html:
        content_html = summary_html
    item: dict[str, Any] = {"id": entry.id, "url": entry.url, "title": _one_line(entry.title)}
    if content_html:
        item["content_html"] = content_html
    else:
        item["content_text"] = _clean(entry.summary_text).strip()
    summary_text = _clean(entry.summary_text).strip()
    if summary_text:
        item["summary"] = summary_text
    item["date_published"] = _instant(entry.published, entry).isoformat()
    item["date_modified"] = _instant(max(entry.updated, entry.published), entry).isoformat()
    item["authors"] = [_json_author(_author_of(entry, settings), settings.site.title)]
    terms = _terms(entry)
    if terms:
        item["tags"] = terms
    if entry.image:
        item["image"] = entry.image
    item["language"] = entry.lang or settings.site.language
    return item


def _json_author(author: Author, fallback_name: str) -> dict[str, str]:
    fields = {"name": _one_line(author.name) or _one_line(fallback_name)}
    if author.email:
        fields["url"] = "mailto:" + author.email
    return fields


# ------------------------------------------------------------------ shared helpers


def _spec(
    entries: Sequence[Entry],
    settings: Settings,
    feed_url: str,
    title: str | None,
    feed_id: str | None,
) -> _FeedSpec:
    return _FeedSpec(
        entries=_newest_first(entries),
        title=_one_line(title if title is not None else settings.site.title) or settings.site.url,
        feed_url=feed_url,
        feed_id=feed_id or settings.site.url,
    )


def _newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.published, e.id), reverse=True)


def _newest_update(entries: Sequence[Entry]) -> datetime:
    if not entries:
        return _EMPTY_FEED_UPDATED
    return max(_instant(max(e.updated, e.published), e) for e in entries)


def _instant(moment: datetime, entry: Entry) -> datetime:
    """The same instant, written the way every validator reads it.

    The author's offset is kept when it is a whole half hour (RFC 822 dates
    with other offsets are flagged); anything else is given in UTC.
    """
    offset = moment.utcoffset()
    if offset is None:
        raise ContentError(
            f"entry {entry.id!r} has a date without a time zone ({moment.isoformat()})",
            path=entry.source,
        )
    moment = moment.replace(microsecond=0)
    if offset % timedelta(minutes=30):
        return moment.astimezone(UTC)
    return moment


def _author_of(entry: Entry, settings: Settings) -> Author:
    if _one_line(entry.author.name):
        return entry.author
    return settings.site.author


def _terms(entry: Entry) -> list[str]:
    """Categories, then tags, each once."""
    seen: dict[str, None] = {}
    for term in (*entry.categories, *entry.tags):
        cleaned = _one_line(term)
        if cleaned:
            seen.setdefault(cleaned, None)
    return list(seen)


def _by_category(entries: list[Entry]) -> dict[str, tuple[list[str], list[Entry]]]:
    """slug -> (the names that give that slug, sorted; their entries, newest first)."""
    names: dict[str, set[str]] = {}
    members: dict[str, list[Entry]] = {}
    for entry in entries:
        for slug, name in {category_slug(n): _one_line(n) for n in entry.categories}.items():
            names.setdefault(slug, set()).add(name)
            members.setdefault(slug, []).append(entry)
    return {slug: (sorted(names[slug]), members[slug]) for slug in sorted(members)}


def _clean(text: str) -> str:
    return _NOT_XML_TEXT.sub("", text)


def _one_line(text: str) -> str:
    return " ".join(_clean(text).split())


# ------------------------------------------------------------------ reading one back


@dataclass(frozen=True)
class FeedItem:
    title: str
    url: str
    published: datetime | None


@dataclass(frozen=True)
class FeedSummary:
    """What a person who opens a feed in a browser is shown of it (see
    :mod:`feedpub.web.app`): its title and latest items, read from the file itself."""

    title: str
    items: tuple[FeedItem, ...]


_RSS_DATE_FORMAT = "%a, %d %b %Y %H:%M:%S %z"


def read_feed_summary(data: bytes, *, limit: int = 20) -> FeedSummary:
    """The title and the first ``limit`` items of an Atom, RSS or JSON feed that
    feedpub wrote. Raises ContentError when ``data`` is none of them."""
    if data.lstrip()[:1] == b"{":
        return _json_summary(data, limit)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise ContentError(f"not a feed: {error}") from None
    atom = f"{{{_ATOM_NS}}}"
    if root.tag == f"{atom}feed":
        items = [
            FeedItem(
                title=entry.findtext(f"{atom}title") or "",
                url=next((link.get("href", "") for link in entry.iterfind(f"{atom}link")
                          if link.get("rel", "alternate") == "alternate"), ""),
                published=_iso_date(entry.findtext(f"{atom}published")
                                    or entry.findtext(f"{atom}updated")),
            )
            for entry in root.iterfind(f"{atom}entry")
        ]
        return FeedSummary(root.findtext(f"{atom}title") or "", tuple(items[:limit]))
    channel = root.find("channel")
    if root.tag != "rss" or channel is None:
        raise ContentError(f"not a feed: the document is <{root.tag}>")
    items = [
        FeedItem(
            title=item.findtext("title") or "",
            url=item.findtext("link") or "",
            published=_rss_date(item.findtext("pubDate")),
        )
        for item in channel.iterfind("item")
    ]
    return FeedSummary(channel.findtext("title") or "", tuple(items[:limit]))


def _json_summary(data: bytes, limit: int) -> FeedSummary:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ContentError(f"not a feed: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise ContentError("not a feed: a JSON Feed has an items list")
    items = [
        FeedItem(title=str(item.get("title", "")), url=str(item.get("url", "")),
                 published=_iso_date(item.get("date_published")))
        for item in document["items"] if isinstance(item, dict)
    ]
    return FeedSummary(str(document.get("title", "")), tuple(items[:limit]))


def _iso_date(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _rss_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text.strip().replace(" GMT", " +0000"), _RSS_DATE_FORMAT)
    except ValueError:
        return None
