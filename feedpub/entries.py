"""Post -> Entry: permalink, stable id, safe HTML with absolute URLs, summary."""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

from feedpub import assets
from feedpub.config import Author, SiteConfig
from feedpub.content import Post, remove_xml_forbidden

if TYPE_CHECKING:
    from feedpub.markup import LinkResolver
    from feedpub.outline import Outline

# feedpub.markup (Python-Markdown, Pygments, lxml) is imported where a post is converted:
# a rebuild that converts nothing never loads it.


@dataclass(frozen=True)
class Entry:
    id: str
    """Stable: the post's ``id`` key, else ``tag:HOST,DATE:SLUG``."""
    slug: str
    title: str
    """Plain text, one line."""
    url: str
    """Absolute permalink."""
    published: datetime
    updated: datetime
    author: Author
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    content_html: str
    """Sanitized for feed readers; every URL absolute."""
    summary_html: str
    summary_text: str
    image: str | None
    """Absolute URL."""
    lang: str
    source: str
    """The post's path relative to the site folder."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Author):
                value = [value.name, value.email]
            elif isinstance(value, tuple):
                value = list(value)
            data[item.name] = value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            id=data["id"],
            slug=data["slug"],
            title=data["title"],
            url=data["url"],
            published=datetime.fromisoformat(data["published"]),
            updated=datetime.fromisoformat(data["updated"]),
            author=Author(*data["author"]),
            categories=tuple(data["categories"]),
            tags=tuple(data["tags"]),
            content_html=data["content_html"],
            summary_html=data["summary_html"],
            summary_text=data["summary_text"],
            image=data["image"],
            lang=data["lang"],
            source=data["source"],
        )


_SPOKEN_SYMBOLS = str.maketrans({"+": " plus ", "#": " sharp ", "&": " and ", "@": " at "})


@functools.lru_cache(maxsize=4096)
def category_slug(name: str) -> str:
    """``Machine Learning`` -> ``machine-learning``; letters of any script are kept, and
    symbols that tell categories apart are spelt out (``C++`` -> ``c-plus-plus``)."""
    folded = unicodedata.normalize("NFC", name).translate(_SPOKEN_SYMBOLS).casefold()
    words = "".join(ch if ch.isalnum() else " " for ch in folded).split()
    return "-".join(words) or "uncategorized"


def permalink(post: Post, site: SiteConfig) -> str:
    """The post's absolute URL: ``site.permalink`` filled in, in the site's time zone."""
    local = post.date.astimezone(site.tz)
    category = category_slug(post.categories[0]) if post.categories else ""
    path = site.permalink.format(
        year=f"{local.year:04d}",
        month=f"{local.month:02d}",
        day=f"{local.day:02d}",
        slug=quote(post.slug, safe=""),
        category=quote(category, safe=""),
    )
    while "//" in path:
        path = path.replace("//", "/")
    return urljoin(site.url, path.lstrip("/"))


def entry_id(post: Post, site: SiteConfig) -> str:
    """The ``id`` key, else a tag: URI (RFC 4151) that no edit of title or body can change."""
    if post.id:
        return post.id
    day = post.date.astimezone(site.tz).date().isoformat()
    return f"tag:{site.host},{day}:{quote(post.slug, safe='')}"


def link_resolver(post: Post, site: SiteConfig) -> LinkResolver:
    """Where the post's relative file links point once published (:mod:`feedpub.assets`)."""
    depth = len(PurePosixPath(post.relpath).parts)
    layout = assets.SiteLayout(site_dir=post.path.parents[depth - 1], site_url=site.url)
    bundle_page = permalink_path(post, site) if assets.is_bundle(post.relpath) else None
    return functools.partial(assets.resolve_link, layout, post.relpath, bundle_page)


def permalink_path(post: Post, site: SiteConfig) -> str:
    """The permalink below the site's URL, percent-encoded, no leading ``/``."""
    return permalink(post, site)[len(site.url):]


def plain_title(post: Post) -> str:
    """The title as feeds, pages and email show it: one line of text."""
    return " ".join(remove_xml_forbidden(post.title).split())


def make_entry(post: Post, site: SiteConfig) -> Entry:
    """The post as feeds and email show it."""
    return _make_entry(post, site, outline=False)[0]


def make_entry_with_outline(post: Post, site: SiteConfig) -> tuple[Entry, Outline]:
    """:func:`make_entry` and the outline ``check`` reads, from one conversion of the body."""
    entry, outline = _make_entry(post, site, outline=True)
    assert outline is not None
    return entry, outline


def _make_entry(
    post: Post, site: SiteConfig, *, outline: bool
) -> tuple[Entry, Outline | None]:
    from feedpub import markup

    url = permalink(post, site)
    ident = entry_id(post, site)
    id_prefix = "p" + hashlib.sha1(ident.encode("utf-8")).hexdigest()[:8] + "-"
    resolve = link_resolver(post, site)
    body_outline = None
    if outline:
        content_html, body_outline = markup.render_with_outline(
            post.body, base_url=url, id_prefix=id_prefix, first_line=post.body_line,
            resolve_link=resolve,
        )
    else:
        content_html = markup.render_markdown(post.body, base_url=url, id_prefix=id_prefix,
                                              resolve_link=resolve)
    summary_source = post.summary or markup.split_excerpt(post.body, site.excerpt_separator)
    if summary_source and summary_source.strip():
        summary_html = markup.render_markdown(
            summary_source, base_url=url, id_prefix=id_prefix + "s-", resolve_link=resolve
        )
    else:
        summary_html = markup.summarize_html(content_html, length=site.summary_length)
    entry = Entry(
        id=ident,
        slug=post.slug,
        title=plain_title(post),
        url=url,
        published=post.date,
        updated=post.updated if post.updated and post.updated > post.date else post.date,
        author=Author(post.author, post.author_email) if post.author else site.author,
        categories=post.categories,
        tags=post.tags,
        content_html=content_html,
        summary_html=summary_html,
        summary_text=markup.html_to_text(summary_html),
        image=(resolve(post.image) or urljoin(url, post.image)) if post.image else None,
        lang=post.lang or site.language,
        source=post.relpath,
    )
    return entry, body_outline
