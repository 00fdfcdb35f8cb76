"""The build: posts -> entries (through a cache, on every core) -> feeds in ``public/``.

Rendering Markdown is nearly all of a build's time, so each rendered entry is
kept in a cache inside the site, keyed by the file's content and by everything
else that changes the result (the site config, templates, feedpub's code and
the versions of the libraries that render). Only entries a feed shows are ever
loaded back with their HTML, which keeps memory flat for large sites.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from feedpub import __version__, content, entries, markup
from feedpub.config import Settings
from feedpub.entries import Entry
from feedpub.errors import ContentError, FeedpubError

Progress = Callable[[int, int], None]
"""Called with (done, total) while posts are rendered."""

_PARALLEL_THRESHOLD = 64
_CHUNK = 48
_RENDERING_PACKAGES = ("markdown", "pymdown-extensions", "pygments", "nh3", "uniseg", "pyyaml")


@dataclass(frozen=True)
class EntryRef:
    """What choosing entries needs, without their HTML."""

    id: str
    url: str
    slug: str
    published: datetime
    categories: tuple[str, ...]
    source: str
    draft: bool


@dataclass
class Catalog:
    """Every post of the site, sorted out for a given ``now``.

    Scanning reads front matter only; an entry's Markdown is rendered when it is
    first loaded, and kept in the cache from then on.
    """

    published: list[EntryRef]
    """Newest first."""
    drafts: list[EntryRef]
    future: list[EntryRef]
    errors: list[ContentError]
    read: int
    """Posts read in this scan because they changed; the rest came from the cache."""
    settings: Settings
    jobs: int | None = None
    progress: Progress | None = None
    rendered: int = 0
    """Entries rendered by :meth:`load` so far; the rest came from the cache."""

    @property
    def cache_path(self) -> Path:
        return _cache_path(self.settings)

    def load(self, refs: Iterable[EntryRef]) -> list[Entry]:
        """The full entries for ``refs``, in the same order, rendering those not cached."""
        wanted = [ref.source for ref in refs]
        if not wanted:
            return []
        found: dict[str, Entry] = {}
        with closing(_open_cache(self.cache_path)) as db:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                marks = ",".join("?" * len(batch))
                rows = db.execute(
                    f"SELECT relpath, entry FROM entries WHERE relpath IN ({marks})", batch
                )
                for relpath, data in rows:
                    if data is not None:
                        found[relpath] = Entry.from_json(json.loads(data))
            missing = [source for source in wanted if source not in found]
            paths = [self.settings.site_dir / source for source in missing]
            for result in _run_chunks(
                _render_chunk, self.settings, paths, self.jobs, self.progress
            ):
                if isinstance(result, ContentError):
                    # The file changed since the scan; the next build reads it again.
                    raise result
                entry = Entry.from_json(json.loads(result[0]))
                db.execute(
                    "UPDATE entries SET entry = ? WHERE relpath = ?", (result[0], entry.source)
                )
                found[entry.source] = entry
                self.rendered += 1
            db.commit()
        return [found[source] for source in wanted]


@dataclass(frozen=True)
class Collection:
    entries: list[Entry]
    """Published, newest first."""
    errors: list[ContentError] = field(default_factory=list)


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


def scan(
    settings: Settings, now: datetime, *, jobs: int | None = None, progress: Progress | None = None
) -> Catalog:
    """Read the front matter of every post that changed since the last scan and sort all
    of them out; Markdown is rendered later, by :meth:`Catalog.load`, for what is shown."""
    fingerprint = render_fingerprint(settings)
    files = content.find_post_files(settings.posts_dir)
    errors: list[ContentError] = []
    with closing(_open_cache(_cache_path(settings))) as db:
        cached = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT relpath, size, mtime_ns, sha, fingerprint, ref FROM entries"
            )
        }
        refs: list[EntryRef] = []
        work: list[tuple[Path, str, int, int, str]] = []
        # String slicing, not Path.relative_to: this loop is most of a rebuild's time.
        prefix = len(str(settings.site_dir)) + 1
        present: set[str] = set()
        for path in files:
            relpath = str(path)[prefix:].replace(os.sep, "/")
            present.add(relpath)
            stat = path.stat()
            row = cached.get(relpath)
            if (
                row is not None
                and row[3] == fingerprint
                and (row[0], row[1]) == (stat.st_size, stat.st_mtime_ns)
            ):
                refs.append(_ref_from_json(json.loads(row[4])))
                continue
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if row and row[3] == fingerprint and row[2] == sha:
                db.execute(
                    "UPDATE entries SET size = ?, mtime_ns = ? WHERE relpath = ?",
                    (stat.st_size, stat.st_mtime_ns, relpath),
                )
                refs.append(_ref_from_json(json.loads(row[4])))
                continue
            work.append((path, relpath, stat.st_size, stat.st_mtime_ns, sha))

        pending = {item[1]: item for item in work}
        paths = [item[0] for item in work]
        for result in _run_chunks(_read_chunk, settings, paths, jobs, progress):
            if isinstance(result, ContentError):
                errors.append(result)
                continue
            ref = _ref_from_json(json.loads(result[0]))
            _, relpath, size, mtime_ns, sha = pending[ref.source]
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (relpath, size, mtime_ns, sha, fingerprint, result[0]),
            )
            refs.append(ref)
        gone = [relpath for relpath in cached if relpath not in present]
        db.executemany("DELETE FROM entries WHERE relpath = ?", [(g,) for g in gone])
        db.commit()

    refs, duplicates = _drop_duplicates(refs)
    errors.extend(duplicates)
    errors.sort(key=lambda error: (str(error.path), error.line or 0))
    published = sorted(
        (ref for ref in refs if not ref.draft and ref.published <= now),
        key=lambda ref: (ref.published, ref.id),
        reverse=True,
    )
    return Catalog(
        published=published,
        drafts=[ref for ref in refs if ref.draft],
        future=[ref for ref in refs if not ref.draft and ref.published > now],
        errors=errors,
        read=len(work),
        settings=settings,
        jobs=jobs,
        progress=progress,
    )


def collect_entries(settings: Settings, now: datetime, *, jobs: int | None = None) -> Collection:
    """Every published entry, newest first, with the posts that could not be read."""
    catalog = scan(settings, now, jobs=jobs)
    return Collection(entries=catalog.load(catalog.published), errors=catalog.errors)


def build(
    settings: Settings, now: datetime, *, jobs: int | None = None, progress: Progress | None = None
) -> BuildReport:
    """Render what changed and write every feed into ``public/``."""
    from feedpub import feeds

    catalog = scan(settings, now, jobs=jobs, progress=progress)
    shown = feed_selection(catalog.published, settings.feed.limit)
    written = feeds.write_feeds(catalog.load(shown), settings)
    total = len(catalog.published) + len(catalog.drafts) + len(catalog.future)
    return BuildReport(
        written=written,
        posts=total + len(catalog.errors),
        published=len(catalog.published),
        read=catalog.read,
        rendered=catalog.rendered,
        errors=catalog.errors,
    )


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


def render_fingerprint(settings: Settings) -> str:
    """Changes whenever something other than a post's own text could change its entry."""
    digest = hashlib.sha256()
    digest.update(__version__.encode())
    for module in (content, markup, entries):
        if module.__file__:
            digest.update(Path(module.__file__).read_bytes())
    for package in _RENDERING_PACKAGES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(package.encode())
    digest.update(repr(settings.site).encode())
    if settings.templates_dir.is_dir():
        for path in sorted(settings.templates_dir.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(settings.templates_dir).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    relpath TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ref TEXT NOT NULL,
    entry TEXT
)
"""


def _cache_path(settings: Settings) -> Path:
    return settings.cache_dir / "entries-v2.sqlite"


def _open_cache(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
    except sqlite3.DatabaseError:
        # A cache that cannot be read is rebuilt rather than trusted.
        db.close()
        path.unlink(missing_ok=True)
        db = sqlite3.connect(path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
    return db


def _ref_to_json(ref: EntryRef) -> list[object]:
    return [ref.id, ref.url, ref.slug, ref.published.isoformat(), list(ref.categories),
            ref.source, ref.draft]


def _ref_from_json(data: list[object]) -> EntryRef:
    ident, url, slug, published, categories, source, draft = data
    assert isinstance(categories, list)
    return EntryRef(
        str(ident), str(url), str(slug), datetime.fromisoformat(str(published)),
        tuple(str(c) for c in categories), str(source), bool(draft),
    )


def _drop_duplicates(refs: list[EntryRef]) -> tuple[list[EntryRef], list[ContentError]]:
    """The first post (by file name) keeps an id, permalink or slug; later ones are errors."""
    kept: list[EntryRef] = []
    errors: list[ContentError] = []
    owners: dict[tuple[str, str], str] = {}
    for ref in sorted(refs, key=lambda r: r.source):
        claims = [("id", ref.id), ("permalink", ref.url), ("slug", ref.slug.casefold())]
        clash = next(((what, value) for what, value in claims if (what, value) in owners), None)
        if clash:
            what, value = clash
            errors.append(
                ContentError(
                    f"{what} {value!r} is already used by {owners[clash]}; give one of them "
                    f"its own {'slug' if what != 'id' else 'id'}",
                    path=ref.source,
                    key="id" if what == "id" else "slug",
                )
            )
            continue
        for claim in claims:
            owners[claim] = ref.source
        kept.append(ref)
    return kept, errors


_WorkerResult = tuple[str] | tuple[str, str | None, int | None, str | None]
"""JSON text, or an error's parts (exceptions with keyword arguments do not survive
pickling)."""
_Worker = Callable[[Settings, list[Path]], list[_WorkerResult]]


def _error_parts(error: FeedpubError, path: Path) -> _WorkerResult:
    return (error.message, str(error.path or path), error.line, error.key)


def _read_chunk(settings: Settings, paths: list[Path]) -> list[_WorkerResult]:
    """Front matter only: what choosing entries needs."""
    results: list[_WorkerResult] = []
    for path in paths:
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir)
        except FeedpubError as error:
            results.append(_error_parts(error, path))
            continue
        ref = EntryRef(
            entries.entry_id(post, settings.site), entries.permalink(post, settings.site),
            post.slug, post.date, post.categories, post.relpath, post.draft,
        )
        results.append((json.dumps(_ref_to_json(ref), ensure_ascii=False),))
    return results


def _render_chunk(settings: Settings, paths: list[Path]) -> list[_WorkerResult]:
    results: list[_WorkerResult] = []
    for path in paths:
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir)
            entry = entries.make_entry(post, settings.site)
        except FeedpubError as error:
            results.append(_error_parts(error, path))
            continue
        results.append((json.dumps(entry.to_json(), ensure_ascii=False),))
    return results


def _decode(result: _WorkerResult) -> tuple[str] | ContentError:
    if len(result) == 1:
        return (str(result[0]),)
    message, path, line, key = result
    return ContentError(str(message), path=path, line=line, key=key)


def _run_chunks(
    work: _Worker, settings: Settings, paths: list[Path], jobs: int | None,
    progress: Progress | None,
) -> Iterator[tuple[str] | ContentError]:
    total = len(paths)
    if not total:
        return
    jobs = jobs or os.cpu_count() or 1
    chunks = [paths[i : i + _CHUNK] for i in range(0, total, _CHUNK)]
    done = 0
    if progress:
        progress(0, total)
    if jobs == 1 or total < _PARALLEL_THRESHOLD:
        results: Iterable[list[_WorkerResult]] = (work(settings, c) for c in chunks)
        for chunk_results in results:
            for result in chunk_results:
                yield _decode(result)
            done += len(chunk_results)
            if progress:
                progress(done, total)
        return
    # forkserver: a build may run inside the scheduler, whose threads make fork unsafe.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["feedpub.build"])
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for chunk_results in pool.map(work, [settings] * len(chunks), chunks):
            for result in chunk_results:
                yield _decode(result)
            done += len(chunk_results)
            if progress:
                progress(done, total)
