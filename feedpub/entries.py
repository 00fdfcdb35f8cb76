"""Post -> Entry: permalink, stable id, safe HTML with absolute URLs, summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from feedpub.config import Author


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
