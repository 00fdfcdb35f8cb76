"""The build: the catalog's entries -> feeds and pages -> the writer, into ``public/``.

Feeds need only the entries they show; with ``[pages]`` on, every published post
gets a page too, and the files beside posts (``static/``, ``content/images/``,
page bundles) are copied where their links resolve. Entries are converted
through the catalog's cache, on every core; pages are rendered only when what
they are made from changed (:class:`feedpub.writer.Manifest`), and every file is
rendered before any is written, so a failure leaves the old set whole. An
unchanged rebuild renders and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from feedpub import entries, urls, writer
from feedpub.catalog import Catalog, EntryRef, Progress, load_catalog
from feedpub.config import Settings
from feedpub.entries import Entry
from feedpub.errors import ContentError

if TYPE_CHECKING:
    from feedpub import assets
    from feedpub.pages import EditionLink, Page

# feeds, pages, mathml and assets (feedgen, Jinja2, the TeX converter) are imported where they
# are used: an unchanged rebuild uses none of them.


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
    catalog: Catalog | None = None, editions: Mapping[str, Sequence[EditionLink]] | None = None,
) -> BuildReport:
    """Render what changed and write every feed (and, with ``[pages]`` on, every page and
    asset) into ``public/``.

    ``catalog`` is the site as already scanned for ``now`` (else it is scanned here);
    ``editions`` lists each newsletter's editions for its page (else they are read
    from the store, if there is one).
    """
    if catalog is None:
        catalog = load_catalog(settings, now, jobs=jobs, progress=progress)
    written = _write_feeds_if_changed(catalog, settings)
    if settings.pages.enabled:
        if editions is None:
            editions = stored_editions(settings)
        written += write_pages(catalog, settings, editions=editions)
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
    from feedpub import feeds

    feed_set = feeds.render_feeds(published, settings)
    written = writer.write_outputs(settings.public_dir, feed_set.outputs)
    writer.prune(
        settings.public_dir / urls.CATEGORIES_DIR, keep=feed_set.categories,
        owned=feeds.CATEGORY_FILES, wanted=feed_set.category_files,
    )
    return written


def _write_feeds_if_changed(catalog: Catalog, settings: Settings) -> list[Path]:
    """:func:`write_feeds` of the entries the feeds show, unless the feeds in ``public/``
    were written from the same entries, settings and code (an unchanged rebuild then
    neither loads the entries nor renders a feed)."""
    shown = feed_selection(catalog.published, settings.feed.limit)
    key = hashlib.sha256("\0".join([
        catalog.fingerprint, _feeds_code(), repr(settings),
        *(f"{ref.source}:{ref.digest}" for ref in shown),
    ]).encode()).hexdigest()
    with writer.Manifest.open(settings.public_dir, settings.cache_dir, name="feeds") as manifest:
        if manifest.holds_only(key):
            return []
        written = write_feeds(catalog.load(shown), settings)
        landed = [path.relative_to(settings.public_dir).as_posix()
                  for path in _feed_files(settings)]
        manifest.forget_others(landed)
        for relpath in landed:
            manifest.record(relpath, key)
    return written


def _feed_files(settings: Settings) -> list[Path]:
    """The feed files now in ``public/``: the site's and its categories'."""
    from feedpub import feeds

    public = settings.public_dir
    names = {urls.path_for(name) for name in ("atom", "rss", "json", "feed_stylesheet")}
    found = [public / name for name in sorted(names) if (public / name).is_file()]
    categories = public / urls.CATEGORIES_DIR
    if categories.is_dir():
        found += sorted(path for name in feeds.CATEGORY_FILES
                        for path in categories.glob(f"*/{name}") if path.is_file())
    return found


@functools.cache
def _feeds_code() -> str:
    """What renders the feeds besides the entries and settings: feedpub's feed code and the
    libraries it uses (found without importing them)."""
    digest = hashlib.sha256()
    for module in ("feedpub.feeds", "feedpub.urls"):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        digest.update(Path(spec.origin).read_bytes())
    for package in ("feedgen", "lxml"):
        digest.update(f"{package}={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()


def write_pages(
    catalog: Catalog, settings: Settings, *, editions: Mapping[str, Sequence[EditionLink]]
) -> list[Path]:
    """Every page and asset of the site into ``public/``: only those whose inputs changed
    are rendered or copied; those of posts that are gone are removed. Returns the files
    whose bytes changed.

    Pages are rendered a batch at a time, each batch's entries loaded and let go, and
    staged beside their targets; all of them land together at the end.
    """
    from feedpub import mathml, pages

    catalog.settle()  # a post that cannot be converted leaves the lists before planning
    found = _assets(catalog, settings)
    # A file of the site's own (static/index.html) takes the place of the page feedpub
    # would write there.
    taken = {asset.relpath for asset in found}
    planned = [page for page in pages.plan_pages(settings, catalog.published, editions=editions)
               if page.relpath not in taken]
    public = settings.public_dir
    with (writer.Manifest.open(public, settings.cache_dir) as manifest,
          writer.Staging(public) as staging):
        stale = [page for page in planned if not manifest.is_current(page.relpath, page.key)]
        for batch in _page_batches(stale):
            needed = {source for page in batch for source in page.sources}
            loaded = catalog.load((ref for ref in catalog.published if ref.source in needed),
                                  keep=False)
            by_source = {entry.source: entry for entry in loaded}
            for page in batch:
                staging.add(writer.Output(page.relpath, page.render(by_source)))
            # The images email shows for math (pages show MathML), for the posts just rendered.
            for image in mathml.math_images(
                loaded, exists=lambda relpath: relpath in staging or (public / relpath).exists()
            ):
                staging.add(image)
        copies = [
            (asset, key) for asset in found
            if not manifest.is_current(asset.relpath, key := _asset_key(asset))
        ]
        for asset, _ in copies:
            staging.add(writer.Output(asset.relpath, asset.source))
        written = staging.commit()
        for page in stale:
            manifest.record(page.relpath, page.key)
        for asset, key in copies:
            manifest.record(asset.relpath, key)
        manifest.remove_others({page.relpath for page in planned} | {a.relpath for a in found})
    return written


_PAGE_BATCH_SOURCES = 250
"""Posts whose entries are held at once while their pages render."""


def _page_batches(stale: Sequence[Page]) -> Iterator[list[Page]]:
    batch: list[Page] = []
    sources = 0
    for page in stale:
        batch.append(page)
        sources += len(page.sources)
        if sources >= _PAGE_BATCH_SOURCES:
            yield batch
            batch, sources = [], 0
    if batch:
        yield batch


def stored_editions(settings: Settings) -> dict[str, list[EditionLink]]:
    """Each newsletter's editions with a web page, from the store; none without one."""
    if settings.database.missing_sqlite_file:
        return {}
    from feedpub.pages import EditionLink
    from feedpub.store import open_existing_store
    from feedpub.store.editions import web_editions

    store = open_existing_store(settings.database.url)
    if store is None:
        return {}
    try:
        with store.read() as conn:
            return {
                newsletter.name: [
                    EditionLink(subject, created_at, unquote(web_path))
                    for subject, created_at, web_path in web_editions(conn, newsletter.name)
                ]
                for newsletter in settings.newsletters
            }
    finally:
        store.close()


def _assets(catalog: Catalog, settings: Settings) -> list[assets.Asset]:
    from feedpub import assets

    layout = assets.SiteLayout(settings.site_dir, settings.site.url)
    site_url = settings.site.url
    bundles = assets.bundle_folders(
        layout, [(ref.source, ref.url[len(site_url):]) for ref in catalog.published]
    )
    return assets.find_assets(layout, settings.posts_dir, bundles)


def _asset_key(asset: assets.Asset) -> str:
    stat = asset.source.stat()
    return f"{asset.source}:{stat.st_size}:{stat.st_mtime_ns}"


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

