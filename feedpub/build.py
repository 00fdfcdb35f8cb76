"""The build: the catalog's entries -> feeds -> the writer, into ``public/``.

Only the entries a feed shows are converted (through the catalog's cache, on
every core), and every feed is rendered before any is written, so a failure
leaves the old set whole. An unchanged rebuild writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from feedpub import entries, feeds, urls, writer
from feedpub.catalog import Catalog, EntryRef, Progress, load_catalog
from feedpub.config import Settings
from feedpub.entries import Entry
from feedpub.errors import ContentError


@dataclass(frozen=True)
class BuildReport:
    written: list[Path]
    posts: int
    published: int
    read: int
    """Posts read because they changed since the last build."""
    rendered: int
    """Entries whose Markdown was rendered (only what the feeds show, if not cached)."""
    errors: list[ContentError]


def build(
    settings: Settings, now: datetime, *, jobs: int | None = None, progress: Progress | None = None,
    catalog: Catalog | None = None,
) -> BuildReport:
    """Render what changed and write every feed into ``public/``.

    ``catalog`` is the site as already scanned for ``now`` (else it is scanned here).
    """
    if catalog is None:
        catalog = load_catalog(settings, now, jobs=jobs, progress=progress)
    shown = feed_selection(catalog.published, settings.feed.limit)
    written = write_feeds(catalog.load(shown), settings)
    return BuildReport(
        written=written,
        posts=catalog.files,
        published=len(catalog.published),
        read=catalog.read,
        rendered=catalog.rendered,
        errors=catalog.errors,
    )


def write_feeds(published: Sequence[Entry], settings: Settings) -> list[Path]:
    """Render every feed of ``published`` and land it in ``public/``; remove the feeds of
    categories no entry has any more. Returns the files whose bytes changed."""
    feed_set = feeds.render_feeds(published, settings)
    written = writer.write_outputs(settings.public_dir, feed_set.outputs)
    writer.prune(
        settings.public_dir / urls.CATEGORIES_DIR, keep=feed_set.categories,
        owned=feeds.CATEGORY_FILES, wanted=feed_set.category_files,
    )
    return written


def feed_selection(published: Sequence[EntryRef], limit: int) -> list[EntryRef]:
    """The newest ``limit`` entries overall and of each category, newest first."""
    chosen: dict[str, EntryRef] = {ref.id: ref for ref in published[:limit]}
    per_category: dict[str, int] = {}
    for ref in published:
        for category in {entries.category_slug(name) for name in ref.categories}:
            count = per_category.get(category, 0)
            if count < limit:
                per_category[category] = count + 1
                chosen.setdefault(ref.id, ref)
    return [ref for ref in published if ref.id in chosen]

