"""Entries -> the publication's web pages: each post, the home page, the archive by
year, a page per category and per newsletter, a 404 page, ``sitemap.xml``,
``robots.txt`` and one small stylesheet.

Pages are *planned* before they are rendered: each :class:`Page` knows where it
goes, a key that changes whenever its bytes could (its posts' file digests, its
neighbours' titles, the settings and templates it reads), the posts whose
entries it needs, and how to render itself. The build renders only the pages
whose key changed (see :class:`feedpub.writer.Manifest`), so an unchanged
rebuild loads no entry and renders nothing, and every page is rendered once.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

import markupsafe

from feedpub import __version__, templating, urls
from feedpub.catalog import EntryRef
from feedpub.config import Settings
from feedpub.entries import Entry, category_slug
from feedpub.i18n import Language, site_language, text_direction

STYLESHEET = "style.css"
PAGE_TEMPLATES = ("base.html", "post.html", "home.html", "archive.html", "year.html",
                  "category.html", "newsletter.html", "404.html", "_subscribe.html",
                  "_list.html", "feeds.html", "_feed_addresses.html", STYLESHEET)
"""The templates pages are made from (``embed.html`` makes no page)."""


@dataclass(frozen=True)
class EditionLink:
    """An edition as its newsletter's page lists it."""

    title: str
    created_at: datetime
    relpath: str
    """Its web page below ``public/`` (``editions/<newsletter>/<id>.html``)."""


@dataclass(frozen=True)
class Page:
    relpath: str
    """Where it goes below ``public/``."""
    key: str
    """Changes whenever the page's bytes could."""
    sources: tuple[str, ...]
    """The posts whose entries rendering needs."""
    render: Callable[[Mapping[str, Entry]], bytes] = field(compare=False, repr=False)


def page_relpath(settings: Settings, url: str) -> str:
    """The file below ``public/`` that serves ``url`` (a page of this site)."""
    path = unquote(url[len(settings.site.url):])
    return path + "index.html" if path.endswith("/") or not path else path


def plan_pages(
    settings: Settings,
    published: Sequence[EntryRef],
    *,
    editions: Mapping[str, Sequence[EditionLink]] | None = None,
) -> list[Page]:
    """Every page of the site for the ``published`` posts (newest first).

    ``editions`` lists each newsletter's editions (from the store, when there is
    one); a newsletter without them gets a page that says so.
    """
    site = _Site(settings)
    pages = [site.post_page(ref, index, published) for index, ref in enumerate(published)]
    pages.append(site.home_page(published))
    pages += site.archive_pages(published)
    pages += site.category_pages(published)
    pages.append(site.feeds_page(published))
    for newsletter in settings.newsletters:
        listed = (editions or {}).get(newsletter.name, ())
        pages.append(site.newsletter_page(newsletter.name, listed))
    pages += [site.not_found_page(), site.stylesheet(), site.robots(), site.sitemap(published)]
    return pages


class _Site:
    """What every page of one build shares: templates, language, the settings' key."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.language: Language = site_language(
            settings.site.language, settings.site.tz, config_path=settings.config_path
        )
        self.root = urlsplit(settings.site.url).path or "/"
        self.env = templating.template_environment(settings, self.language, "pages")
        self.env.globals.update(self._globals())
        self.env.filters["local"] = self.local
        self.env.filters["local_html"] = lambda html: markupsafe.Markup(self.local_html(html))
        self.shared_key = _digest(
            __version__, repr(settings.site), repr(settings.feed), repr(settings.newsletters),
            settings.web.url, repr(settings.pages), _templates_digest(settings),
        )

    def local(self, url: str) -> str:
        """A URL of this site as a path from its root (``/2025/01/x/``), so that pages work
        wherever ``public/`` is served: a preview, a staging host, ``feedpub serve``."""
        site_url = self.settings.site.url
        return self.root + url[len(site_url):] if url.startswith(site_url) else url

    def local_html(self, html: str) -> str:
        """An entry's HTML (every URL absolute, for feeds) with this site's URLs local, and
        the boxes that scroll sideways (code, tables) reachable from the keyboard."""
        html = _site_url_in_attributes(self.settings.site.url).sub(
            lambda match: match.group(1) + self.root, html
        )
        return _SCROLLING_BOX.sub(r'\g<0> tabindex="0"', html)

    def _globals(self) -> dict[str, Any]:
        settings = self.settings
        site_url = self.root
        return {
            "site": settings.site,
            "lang": self.language.tag,
            "dir": self.language.direction,
            "feeds": feed_links(settings),
            "absolute_home": settings.site.url,
            "newsletters": settings.newsletters,
            "subscribe_url": urls.url_for(settings.web.url, "subscribe"),
            "home_url": urls.url_for(site_url, "home"),
            "archive_url": urls.url_for(site_url, "archive"),
            "feeds_url": urls.url_for(site_url, "feeds_page"),
            "stylesheet_url": urls.url_for(site_url, "stylesheet") + "?v=" + self._css_version(),
            "honeypot": HONEYPOT_FIELD,
            "format_date": self.language.date,
            "text_direction": text_direction,
            "category_url": lambda name: urls.url_for(
                site_url, "category_page", category=category_slug(name)
            ),
        }

    def _css_version(self) -> str:
        return _digest(self._template_source(STYLESHEET))[:10]

    def _template_source(self, name: str) -> str:
        loader = self.env.loader
        assert loader is not None
        return loader.get_source(self.env, name)[0]

    def _render(self, template: str, **context: Any) -> bytes:
        return templating.render_template(self.env, template, context).encode("utf-8")

    def _page(self, relpath: str, key_parts: Sequence[Any], sources: Sequence[str],
              render: Callable[[Mapping[str, Entry]], bytes]) -> Page:
        key = _digest(self.shared_key, relpath, json.dumps(key_parts, default=str))
        return Page(relpath, key, tuple(sources), render)

    # --- the pages -------------------------------------------------------------------

    def post_page(self, ref: EntryRef, index: int, published: Sequence[EntryRef]) -> Page:
        newer = published[index - 1] if index > 0 else None
        older = published[index + 1] if index + 1 < len(published) else None
        neighbours = [(r.url, r.title) if r else None for r in (newer, older)]

        def render(entries: Mapping[str, Entry]) -> bytes:
            return self._render("post.html", entry=entries[ref.source], newer=newer,
                                older=older, canonical=ref.url,
                                json_ld=_blog_posting(entries[ref.source], self.settings))

        return self._page(page_relpath(self.settings, ref.url), [ref.digest, neighbours],
                          [ref.source], render)

    def home_page(self, published: Sequence[EntryRef]) -> Page:
        latest = list(published[: self.settings.pages.home_limit])

        def render(entries: Mapping[str, Entry]) -> bytes:
            return self._render("home.html", entries=[entries[r.source] for r in latest],
                                more=len(published) > len(latest),
                                canonical=self.settings.site.url)

        return self._page("index.html", [r.digest for r in latest] + [len(published)],
                          [r.source for r in latest], render)

    def archive_pages(self, published: Sequence[EntryRef]) -> list[Page]:
        years: dict[int, list[EntryRef]] = {}
        for ref in published:
            years.setdefault(ref.published.astimezone(self.settings.site.tz).year, []).append(ref)
        counts = [(year, len(refs)) for year, refs in years.items()]
        archive_url = urls.url_for(self.settings.site.url, "archive")

        def render_index(_: Mapping[str, Entry]) -> bytes:
            return self._render("archive.html", years=counts, canonical=archive_url)

        pages = [self._page(page_relpath(self.settings, archive_url), counts, (), render_index)]
        for year, refs in years.items():
            pages.append(self._list_page(
                "year.html", urls.url_for(self.settings.site.url, "year", year=str(year)),
                refs, year=year,
            ))
        return pages

    def category_pages(self, published: Sequence[EntryRef]) -> list[Page]:
        names: dict[str, set[str]] = {}
        members: dict[str, dict[str, EntryRef]] = {}
        for ref in published:
            for name in ref.categories:
                slug = category_slug(name)
                names.setdefault(slug, set()).add(" ".join(name.split()))
                members.setdefault(slug, {}).setdefault(ref.source, ref)
        return [
            self._list_page(
                "category.html",
                urls.url_for(self.settings.site.url, "category_page", category=slug),
                list(members[slug].values()), category=", ".join(sorted(names[slug])),
                category_feeds=_category_feeds(self.settings, slug),
            )
            for slug in sorted(members)
        ]

    def _list_page(self, template: str, url: str, refs: Sequence[EntryRef],
                   **context: Any) -> Page:
        rows = [(r.url, r.title, r.published.isoformat()) for r in refs]

        def render(_: Mapping[str, Entry]) -> bytes:
            return self._render(template, posts=refs, canonical=url, **context)

        return self._page(page_relpath(self.settings, url), [rows, sorted(context.items(),
                          key=lambda item: item[0])], (), render)

    def feeds_page(self, published: Sequence[EntryRef]) -> Page:
        """``feeds/``: what a feed is, the addresses to copy, the latest posts. People who
        open a feed in a browser land here (a static host cannot tell them from feed
        readers; ``feedpub serve`` shows them its own page of that feed)."""
        latest = list(published[: self.settings.feed.limit])
        names: dict[str, str] = {}
        for ref in published:
            for name in ref.categories:
                names.setdefault(category_slug(name), " ".join(name.split()))
        topics = [(names[slug], _category_feeds(self.settings, slug))
                  for slug in sorted(names)]
        return self._list_page("feeds.html", urls.url_for(self.settings.site.url, "feeds_page"),
                               latest, topics=[(name, feeds) for name, feeds in topics if feeds])

    def newsletter_page(self, name: str, editions: Sequence[EditionLink]) -> Page:
        newsletter = self.settings.newsletter(name)
        url = urls.url_for(self.settings.site.url, "newsletter_page", newsletter=name)
        rows = [(e.title, e.created_at.isoformat(), e.relpath) for e in editions]

        def render(_: Mapping[str, Entry]) -> bytes:
            links = [(e, self.root + urls.quote_path(e.relpath)) for e in editions]
            return self._render("newsletter.html", newsletter=newsletter, editions=links,
                                canonical=url)

        return self._page(page_relpath(self.settings, url), rows, (), render)

    def not_found_page(self) -> Page:
        return self._page("404.html", [], (), lambda _: self._render("404.html", canonical=None))

    def stylesheet(self) -> Page:
        css = self._template_source(STYLESHEET).encode("utf-8")
        return self._page(urls.path_for("stylesheet"), [_digest(css)], (), lambda _: css)

    def robots(self) -> Page:
        sitemap = urls.url_for(self.settings.site.url, "sitemap")
        text = f"User-agent: *\nAllow: /\n\nSitemap: {sitemap}\n"
        return self._page("robots.txt", [text], (), lambda _: text.encode("utf-8"))

    def sitemap(self, published: Sequence[EntryRef]) -> Page:
        site_url = self.settings.site.url
        rows: list[tuple[str, str | None]] = [(site_url, None),
                                               (urls.url_for(site_url, "archive"), None)]
        rows += [(ref.url, ref.published.date().isoformat()) for ref in published]
        document = _sitemap(rows)
        return self._page(urls.path_for("sitemap"), [_digest(document)], (), lambda _: document)


def embed_snippet(settings: Settings) -> str:
    """The subscribe form for a page of another site: plain HTML that posts to
    ``feedpub serve`` (which accepts it from the origins in ``web.embed_origins``)."""
    site = _Site(settings)
    site.env.globals["subscribe_url"] = urls.url_for(settings.web.url, "subscribe")
    return site._render("embed.html").decode("utf-8")


# --- pieces ----------------------------------------------------------------------------

HONEYPOT_FIELD = "homepage"
"""The field people leave empty and form-filling bots do not, in every subscribe form
(the pages', the embedded one's and ``feedpub serve``'s)."""


@dataclass(frozen=True)
class FeedLink:
    """A feed for ``<link rel="alternate">`` and the lists of feeds on pages."""

    title: str
    media_type: str
    url: str


_FEED_KINDS = {
    "atom": ("Atom", "application/atom+xml"),
    "rss": ("RSS", "application/rss+xml"),
    "json": ("JSON Feed", "application/feed+json"),
}


def feed_links(settings: Settings) -> tuple[FeedLink, ...]:
    """The site's feeds at their public URLs (the ones their ``self`` links name)."""
    site = settings.site
    return tuple(
        FeedLink(f"{site.title} ({_FEED_KINDS[name][0]})", _FEED_KINDS[name][1],
                 urls.feed_url(site.url, name))
        for name in settings.feed.formats
        if name in _FEED_KINDS
    )


def _category_feeds(settings: Settings, slug: str) -> list[FeedLink]:
    return [
        FeedLink(_FEED_KINDS[name][0], _FEED_KINDS[name][1],
                 urls.category_feed_url(settings.site.url, slug, name))
        for name in settings.feed.formats
        if name in ("atom", "rss")
    ]


def _blog_posting(entry: Entry, settings: Settings) -> str:
    """The post as schema.org ``BlogPosting`` JSON-LD, safe inside ``<script>``."""
    document: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "BlogPosting",
        "headline": entry.title,
        "url": entry.url,
        "mainEntityOfPage": entry.url,
        "datePublished": entry.published.isoformat(),
        "dateModified": entry.updated.isoformat(),
        "inLanguage": entry.lang,
        "author": {"@type": "Person", "name": entry.author.name or settings.site.title},
        "publisher": {"@type": "Organization", "name": settings.site.title,
                      "url": settings.site.url},
    }
    if entry.summary_text:
        document["description"] = entry.summary_text
    if entry.image:
        document["image"] = entry.image
    if entry.categories:
        document["keywords"] = list(entry.categories)
    text = json.dumps(document, ensure_ascii=False, indent=1)
    # "</" would end the script element early; JSON allows "<\/" for it.
    return text.replace("</", "<\\/")


def _sitemap(rows: Sequence[tuple[str, str | None]]) -> bytes:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">']
    for url, lastmod in rows:
        modified = f"<lastmod>{lastmod}</lastmod>" if lastmod else ""
        lines.append(f"  <url><loc>{escape(url)}</loc>{modified}</url>")
    lines.append("</urlset>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _templates_digest(settings: Settings) -> str:
    """Changes when a page template changes, built-in or the site's own."""
    parts: list[str] = []
    builtin = resources.files("feedpub") / "templates" / "pages"
    for name in PAGE_TEMPLATES:
        item = builtin / name
        parts.append(item.read_text(encoding="utf-8") if item.is_file() else "")
    overrides = settings.templates_dir / "pages"
    if overrides.is_dir():
        for path in sorted(overrides.rglob("*")):
            if path.is_file():
                parts += [path.relative_to(overrides).as_posix(),
                          path.read_text(encoding="utf-8", errors="replace")]
    return _digest(*parts)


_SCROLLING_BOX = re.compile(r"<(?:pre|table)(?=[\s>])")


@functools.lru_cache(maxsize=4)
def _site_url_in_attributes(site_url: str) -> re.Pattern[str]:
    # An attribute value, or a srcset candidate after a comma, that starts with the URL.
    return re.compile(r'((?:=")|(?:,\s*))' + re.escape(html.escape(site_url, quote=True)))


def _digest(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()

