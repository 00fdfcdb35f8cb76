"""The read model of the site: every post scanned once, parsed once, cached.

Every command asks the catalog and none scans ``content/`` on its own. A scan
reads only the front matter of posts that changed since the last one (on every
core); each post's Markdown is converted once, when its entry is first
wanted, and that one conversion gives both the entry (feeds, email, pages) and
what ``check`` looks at (the outline and the findings that depend on the post
alone), so the two agree by construction.

Everything is kept in a cache inside the site, keyed by the file's content and
by everything else that changes the result (the site config, templates,
feedpub's code and the versions of the libraries that render). A cache that
cannot be read is rebuilt, never trusted. Only entries that are asked for are
loaded back with their HTML, which keeps memory flat for large sites.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import multiprocessing
import os
import select
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from feedpub import __version__, content, entries
from feedpub.config import Settings
from feedpub.entries import Entry
from feedpub.errors import ContentError, FeedpubError

if TYPE_CHECKING:
    from feedpub.lint import Finding, LintReport
    from feedpub.outline import Outline

Progress = Callable[[int, int], None]
"""Called with (done, total) while posts are read or rendered."""

_PARALLEL_THRESHOLD = 64
_CHUNK = 48
_RENDERING_PACKAGES = ("markdown", "pymdown-extensions", "pygments", "nh3", "uniseg", "pyyaml")
_CACHE_NAME = "catalog-v2.sqlite"


@dataclass(frozen=True)
class EntryRef:
    """What choosing entries needs, without their HTML."""

    id: str
    url: str
    slug: str
    published: datetime
    categories: tuple[str, ...]
    source: str
    """The post's path relative to the site folder, POSIX separators."""
    draft: bool
    lines: tuple[tuple[str, int], ...] = ()
    """(front matter key, line) for the keys findings point at: slug, id, date, draft."""
    title: str = ""
    """Plain text, one line (as the entry has it)."""
    digest: str = ""
    """The SHA-256 of the post's file: changes whenever its entry could."""

    def line_of(self, key: str) -> int | None:
        return dict(self.lines).get(key)

    def is_published(self, now: datetime) -> bool:
        """The one publishing rule: not a draft, and dated at or before ``now``."""
        return not self.draft and self.published <= now


@dataclass(frozen=True)
class Analysis:
    """One post converted once: its entry, and what ``check`` needs from that parse."""

    entry: Entry
    outline: Outline
    findings: tuple[Finding, ...]
    """Findings that depend on the post alone (not on ``now`` or on other files)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_COMMIT_EVERY = 500
"""Conversions cached per commit."""

_LINT_BATCH = 500
"""Posts whose analyses ``lint`` holds at once."""


@dataclass
class Catalog:
    """Every post of the site, sorted out for one ``now``."""

    settings: Settings
    now: datetime
    published: list[EntryRef]
    """Newest first."""
    drafts: list[EntryRef]
    future: list[EntryRef]
    errors: list[ContentError]
    """Posts that cannot be read or that clash with another (slug, id, permalink)."""
    files: int
    """Post files found, readable or not."""
    read: int
    """Posts read in this scan because they changed; the rest came from the cache."""
    jobs: int | None = None
    progress: Progress | None = None
    fingerprint: str = ""
    """What the entries were converted with besides their own text (see
    :func:`render_fingerprint`)."""
    rendered: int = 0
    """Posts converted by :meth:`analyses` so far; the rest came from the cache."""
    _analyses: dict[str, Analysis] = field(default_factory=dict, repr=False)
    _rejected: set[str] = field(default_factory=set, repr=False)

    @property
    def readable(self) -> list[EntryRef]:
        """Every readable post: published, drafts and future ones."""
        return [*self.published, *self.drafts, *self.future]

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category of a published post, sorted without regard to case."""
        found = {name for ref in self.published for name in ref.categories}
        return tuple(sorted(found, key=lambda name: (name.casefold(), name)))

    def load(self, refs: Iterable[EntryRef], *, keep: bool = True) -> list[Entry]:
        """The full entries for ``refs``, in the same order, converting those not cached.
        With ``keep`` false, the catalog does not hold on to them (see :meth:`analyses`)."""
        refs = list(refs)
        if keep:
            return [analysis.entry for analysis in self.analyses(refs)]
        # Straight from the cache, without the outlines and findings (a tenth of the cost).
        found = self._cached_entries([ref.source for ref in refs])
        missing = [ref for ref in refs if ref.source not in found]
        found.update((a.entry.source, a.entry) for a in self.analyses(missing, keep=False))
        return [found[ref.source] for ref in refs if ref.source in found]

    def analyses(self, refs: Iterable[EntryRef], *, keep: bool = True) -> list[Analysis]:
        """Each post's one conversion, in the order of ``refs``.

        A post that cannot be converted (too deep, too slow, or a crash in the
        converter) is left out: it becomes one of :attr:`errors` and leaves
        :attr:`published`, :attr:`drafts` and :attr:`future`, and the others go on.
        With ``keep`` false, the catalog does not hold on to them (a build going
        through every post, a batch at a time).
        """
        wanted = [ref.source for ref in refs]
        found = {source: self._analyses[source] for source in wanted if source in self._analyses}
        missing = [source for source in dict.fromkeys(wanted)
                   if source not in found and source not in self._rejected]
        if missing:
            found.update(self._fill(missing, keep=keep))
        return [found[source] for source in wanted if source in found]

    def _cached_entries(self, sources: list[str]) -> dict[str, Entry]:
        found = {source: self._analyses[source].entry
                 for source in sources if source in self._analyses}
        wanted = [source for source in sources if source not in found]
        with closing(_open_cache(_cache_path(self.settings))) as db:
            for relpath, entry_json, analysis_json in _converted_rows(db, wanted):
                if entry_json is not None and analysis_json is not None:
                    found[relpath] = Entry.from_json(json.loads(entry_json))
        return found

    def settle(self) -> None:
        """Convert every published post not converted yet, so a post that cannot be
        converted is among :attr:`errors` before pages are planned from the list."""
        with closing(_open_cache(_cache_path(self.settings))) as db:
            pending = {row[0] for row in db.execute(
                "SELECT relpath FROM entries WHERE entry IS NULL OR analysis IS NULL")}
        missing = [ref.source for ref in self.published
                   if ref.source in pending and ref.source not in self._analyses]
        if missing:
            self._fill(missing, keep=False, collect=False)

    def _reject(self, error: ContentError) -> None:
        """Leave a post that cannot be converted out of every list, as an error."""
        source = error.path.as_posix() if error.path is not None else ""
        if source in self._rejected:
            return
        self._rejected.add(source)
        self.errors.append(error)
        self.published = [ref for ref in self.published if ref.source != source]
        self.drafts = [ref for ref in self.drafts if ref.source != source]
        self.future = [ref for ref in self.future if ref.source != source]

    def lint(self, *, sources: Collection[str] | None = None) -> LintReport:
        """What ``feedpub check`` reports: every finding for the site's posts, or for
        those whose source file is in ``sources``.

        Findings of a post alone come with its one conversion (cached with it);
        those that depend on ``now`` or on other files are worked out here, and
        each post the catalog rejects is an error with the catalog's own message.
        """
        from feedpub import lint

        refs = [ref for ref in self.readable if sources is None or ref.source in sources]
        missing = [ref.source for ref in refs
                   if ref.source not in self._analyses and ref.source not in self._rejected]
        # Converted first, all at once, so posts that cannot be leave ``readable`` here;
        # then read back a batch at a time, so a big site's analyses are never all held.
        self._fill(missing, keep=False, collect=False)
        refs = [ref for ref in self.readable if sources is None or ref.source in sources]
        exists = functools.cache(Path.exists)
        findings: list[Finding] = []
        for start in range(0, len(refs), _LINT_BATCH):
            batch = refs[start : start + _LINT_BATCH]
            for ref, analysis in zip(batch, self.analyses(batch, keep=False), strict=True):
                findings.extend(analysis.findings)
                findings.extend(lint.context_findings(
                    ref, analysis.outline, settings=self.settings, now=self.now, exists=exists,
                ))
        for error in self.errors:
            finding = lint.content_error_finding(error, self.settings)
            if sources is None or finding.path in sources:
                findings.append(finding)
        posts = self.files if sources is None else len(sources)
        return lint.LintReport(tuple(sorted(set(findings), key=lint.Finding.sort_key)), posts)

    def _fill(
        self, sources: list[str], *, keep: bool, collect: bool = True
    ) -> dict[str, Analysis]:
        """The analyses of ``sources``: from the cache, else converted (and cached). With
        ``collect`` false, they are only converted and cached, and none is returned."""
        found: dict[str, Analysis] = {}
        cached: set[str] = set()
        with closing(_open_cache(_cache_path(self.settings))) as db:
            for relpath, entry_json, analysis_json in _converted_rows(db, sources):
                if entry_json is not None and analysis_json is not None:
                    cached.add(relpath)
                    if collect:
                        found[relpath] = _analysis_from_json(entry_json, analysis_json)
            unconverted = [source for source in sources if source not in cached]
            paths = [self.settings.site_dir / source for source in unconverted]
            for result in _run_chunks(
                _convert_chunk, self.settings, paths, self.jobs, self.progress
            ):
                if isinstance(result, ContentError):
                    # Remembered with the post, so the next scan leaves it out from the start
                    # (and the run after the file changes tries it again).
                    self._reject(result)
                    db.execute(
                        "UPDATE entries SET entry = NULL, analysis = ? WHERE relpath = ?",
                        (_failure_to_json(result), str(result.path and result.path.as_posix())),
                    )
                    continue
                source, entry_json, analysis_json = result
                db.execute(
                    "UPDATE entries SET entry = ?, analysis = ? WHERE relpath = ?",
                    (entry_json, analysis_json, source),
                )
                if collect:
                    found[source] = _analysis_from_json(entry_json, analysis_json)
                self.rendered += 1
                if self.rendered % _COMMIT_EVERY == 0:
                    db.commit()  # a build stopped half-way keeps what it converted
            db.commit()
        if keep:
            self._analyses.update(found)
        return found


def _converted_rows(
    db: sqlite3.Connection, sources: list[str]
) -> Iterator[tuple[str, str | None, str | None]]:
    """(relpath, entry JSON, analysis JSON) of the cached posts among ``sources``."""
    for start in range(0, len(sources), 500):
        batch = sources[start : start + 500]
        marks = ",".join("?" * len(batch))
        yield from db.execute(
            f"SELECT relpath, entry, analysis FROM entries WHERE relpath IN ({marks})", batch
        )


def load_catalog(
    settings: Settings, now: datetime, *, jobs: int | None = None,
    progress: Progress | None = None,
) -> Catalog:
    """Scan the site: read the front matter of every post that changed since the last
    scan, and sort all of them out for ``now``. Markdown is converted later, by
    :meth:`Catalog.analyses`, for what is wanted."""
    files = content.find_post_names(settings.posts_dir)
    scan = _Scan(settings, render_fingerprint(settings))
    with closing(_open_cache(_cache_path(settings))) as db:
        changed = scan.unchanged(db, files)
        scan.read(db, changed, jobs, progress)
        db.commit()

    refs, duplicates = _drop_duplicates(scan.refs)
    errors = sorted([*scan.errors, *duplicates],
                    key=lambda error: (str(error.path), error.line or 0))
    # Against one instant, not each other: comparing datetimes of many offsets is slow.
    published = sorted(
        (ref for ref in refs if ref.is_published(now)),
        key=lambda ref: (ref.published - _EPOCH, ref.id),
        reverse=True,
    )
    return Catalog(
        settings=settings,
        now=now,
        published=published,
        drafts=[ref for ref in refs if ref.draft],
        future=[ref for ref in refs if not ref.draft and ref.published > now],
        errors=errors,
        files=len(files),
        read=len(changed),
        jobs=jobs,
        progress=progress,
        fingerprint=scan.fingerprint,
    )


@dataclass
class _Scan:
    """One scan against the cache: what is unchanged, and reading what is not."""

    settings: Settings
    fingerprint: str
    refs: list[EntryRef] = field(default_factory=list)
    errors: list[ContentError] = field(default_factory=list)

    def unchanged(self, db: sqlite3.Connection, files: list[str]) -> list[_Changed]:
        """Take the refs of unchanged posts from the cache; return the others. Forgets
        posts that are gone."""
        cached = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT relpath, size, mtime_ns, sha, fingerprint, ref,"
                " CASE WHEN entry IS NULL THEN analysis END FROM entries"
            )
        }
        changed: list[_Changed] = []
        # String slicing, not Path.relative_to: this loop is most of a rebuild's time.
        prefix = len(str(self.settings.site_dir)) + 1
        present: set[str] = set()
        for name in files:
            relpath = name[prefix:].replace(os.sep, "/")
            present.add(relpath)
            stat = os.stat(name)  # noqa: PTH116 - no Path for each of 10,000 posts
            row = cached.get(relpath)
            sha = None
            if row is not None and row[3] == self.fingerprint:
                if (row[0], row[1]) == (stat.st_size, stat.st_mtime_ns):
                    self._keep(row)
                    continue
                sha = _file_sha(Path(name))
                if row[2] == sha:
                    # Touched, not changed: remember the new stat, keep the parse.
                    db.execute(
                        "UPDATE entries SET size = ?, mtime_ns = ? WHERE relpath = ?",
                        (stat.st_size, stat.st_mtime_ns, relpath),
                    )
                    self._keep(row)
                    continue
            sha = sha or _file_sha(Path(name))
            changed.append(_Changed(Path(name), relpath, stat.st_size, stat.st_mtime_ns, sha))
        gone = [relpath for relpath in cached if relpath not in present]
        db.executemany("DELETE FROM entries WHERE relpath = ?", [(g,) for g in gone])
        return changed

    def _keep(self, row: tuple[Any, ...]) -> None:
        """An unchanged post from the cache: its ref, or the error its conversion gave."""
        ref = _ref_from_json(json.loads(row[4]))
        if row[5] is not None and (failure := _failure_from_json(row[5], ref.source)):
            self.errors.append(failure)
        else:
            self.refs.append(ref)

    def read(self, db: sqlite3.Connection, changed: list[_Changed], jobs: int | None,
             progress: Progress | None) -> None:
        """Read the front matter of changed posts on every core and cache their refs."""
        by_source = {item.relpath: item for item in changed}
        paths = [item.path for item in changed]
        for result in _run_chunks(_read_chunk, self.settings, paths, jobs, progress):
            if isinstance(result, ContentError):
                self.errors.append(result)
                continue
            ref = _ref_from_json(json.loads(result[0]))
            item = by_source[ref.source]
            ref = dataclasses.replace(ref, digest=item.sha)
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (item.relpath, item.size, item.mtime_ns, item.sha, self.fingerprint,
                 json.dumps(_ref_to_json(ref), ensure_ascii=False)),
            )
            self.refs.append(ref)


@dataclass(frozen=True)
class _Changed:
    path: Path
    relpath: str
    size: int
    mtime_ns: int
    sha: str


def lint_site(
    settings: Settings, now: datetime, *, jobs: int | None = None,
    progress: Progress | None = None,
) -> LintReport:
    """What ``feedpub check`` does: scan the site and report every finding."""
    return load_catalog(settings, now, jobs=jobs, progress=progress).lint()


_RENDERING_MODULES = ("content", "markup", "outline", "assets", "entries", "lint", "mathml")
"""feedpub's modules whose code makes an entry and its findings: read for the fingerprint,
not imported (a rebuild with nothing to convert needs none of Markdown, Pygments, lxml)."""


def render_fingerprint(settings: Settings) -> str:
    """Changes whenever something other than a post's own text could change its entry
    or its findings."""
    digest = hashlib.sha256()
    digest.update(__version__.encode())
    for name in _RENDERING_MODULES:
        spec = importlib.util.find_spec(f"feedpub.{name}")
        if spec is not None and spec.origin is not None:
            digest.update(Path(spec.origin).read_bytes())
    for package in _RENDERING_PACKAGES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(package.encode())
    digest.update(repr(settings.site).encode())
    digest.update(repr(settings.limits).encode())
    digest.update(repr(settings.mail.max_html_bytes).encode())
    if settings.templates_dir.is_dir():
        for path in sorted(settings.templates_dir.rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(settings.templates_dir).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


# --- the cache ----------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    relpath TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ref TEXT NOT NULL,
    entry TEXT,
    analysis TEXT
)
"""


def _cache_path(settings: Settings) -> Path:
    return settings.cache_dir / _CACHE_NAME


def catalog_cache_path(settings: Settings) -> Path:
    """The catalog's cache (SQLite, WAL mode): it changes whenever a scan finds changes."""
    return _cache_path(settings)


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
            ref.source, ref.draft, [list(pair) for pair in ref.lines], ref.title, ref.digest]


def _ref_from_json(data: list[Any]) -> EntryRef:
    ident, url, slug, published, categories, source, draft, lines, title, digest = data
    return EntryRef(
        str(ident), str(url), str(slug), datetime.fromisoformat(str(published)),
        tuple(str(c) for c in categories), str(source), bool(draft),
        tuple((str(key), int(line)) for key, line in lines), str(title), str(digest),
    )


def _analysis_to_json(outline: Outline, findings: Iterable[Finding]) -> str:
    document = {
        "outline": outline.to_json(),
        "findings": [finding.to_json() for finding in findings],
    }
    return json.dumps(document, ensure_ascii=False)


def _analysis_from_json(entry_json: str, analysis_json: str) -> Analysis:
    from feedpub import lint
    from feedpub.outline import Outline

    document = json.loads(analysis_json)
    return Analysis(
        entry=Entry.from_json(json.loads(entry_json)),
        outline=Outline.from_json(document["outline"]),
        findings=tuple(lint.Finding.from_json(item) for item in document["findings"]),
    )


# --- duplicates ---------------------------------------------------------------------


def _drop_duplicates(refs: list[EntryRef]) -> tuple[list[EntryRef], list[ContentError]]:
    """The first post (by file name) keeps a permalink or an id; later ones are errors.

    Only what must be unique is claimed: the permalink (it names the page and the
    files written for the post) and the id. Two posts may share a slug
    (``2023-12-31-year-in-review.md``, ``2024-12-31-year-in-review.md``) as long as
    the permalinks keep them apart."""
    kept: list[EntryRef] = []
    errors: list[ContentError] = []
    owners: dict[tuple[str, str], str] = {}
    for ref in sorted(refs, key=lambda r: r.source):
        # The permalink first: its slug is what the writer of a clashing post changes.
        # Without regard to case: the files written for it may be on a disk that has none.
        claims = [("permalink", ref.url.casefold()), ("id", ref.id)]
        clash = next(((what, value) for what, value in claims if (what, value) in owners), None)
        if clash:
            what = clash[0]
            key = "id" if what == "id" else "slug"
            shown = ref.id if what == "id" else ref.url
            errors.append(
                ContentError(
                    f"{what} {shown!r} is already used by {owners[clash]}; give one of them "
                    f"its own {key}",
                    path=ref.source,
                    line=ref.line_of(key),
                    key=key,
                )
            )
            continue
        for claim in claims:
            owners[claim] = ref.source
        kept.append(ref)
    return kept, errors


# --- work on every core ---------------------------------------------------------------

_WorkerResult = (
    tuple[str] | tuple[str, str, str] | tuple[str, str | None, int | None, str | None]
)
"""Ref JSON; the source with its entry and analysis JSON; or an error's parts
(exceptions with keyword arguments do not survive pickling)."""
_Worker = Callable[[Settings, list[Path]], list[_WorkerResult]]
_REF_KEYS = ("slug", "id", "date", "draft", "published")


def _error_parts(error: FeedpubError, path: Path) -> _WorkerResult:
    return (error.message, str(error.path or path), error.line, error.key)


class _TooSlow(BaseException):
    """A post's conversion ran past ``[limits] render_seconds`` (a BaseException, so no
    ``except Exception`` inside a converter swallows it)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_TooSlow` in this thread after ``seconds``. Only a process's main
    thread can have a timer signal; elsewhere (a build inside the scheduler's threads)
    the prechecks of :func:`feedpub.content.check_shape` are the only bound."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    armed = True

    def expire(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise _TooSlow

    previous = signal.signal(signal.SIGALRM, expire)
    # Then again every 50 ms: an exception raised inside a __del__ or a gc callback is
    # ignored by Python, so one signal alone might be lost.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        while armed:  # a late signal may interrupt the disarming itself: disarm again
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                armed = False
            except _TooSlow:
                continue
        signal.signal(signal.SIGALRM, previous)


def _unexpected(exc: BaseException, path: Path, settings: Settings) -> _WorkerResult:
    """Any failure of one post as one line naming its file: the others go on."""
    relpath = content.relative_path(path, settings.site_dir)
    if isinstance(exc, RecursionError):
        why = ("is nested too deeply to render (the converter ran out of stack): "
               "simplify its lists, quotes or emphasis")
    elif isinstance(exc, _TooSlow):
        why = (f"took more than {settings.limits.render_seconds:g} s to render (the limit "
               "set by [limits] render_seconds): simplify it or raise the limit")
    elif isinstance(exc, MemoryError):
        why = "needs too much memory to render: simplify it or split it"
    else:
        detail = " ".join(str(exc).split())[:200]
        why = f"could not be rendered ({type(exc).__name__}{': ' + detail if detail else ''})"
    return (why, relpath, None, None)


def _read_chunk(settings: Settings, paths: list[Path]) -> list[_WorkerResult]:
    """Front matter only: what choosing entries needs."""
    results: list[_WorkerResult] = []
    for path in paths:
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir,
                                     limits=settings.limits)
        except FeedpubError as error:
            results.append(_error_parts(error, path))
            continue
        except Exception as exc:  # noqa: BLE001 - one post's crash is that post's error
            results.append(_unexpected(exc, path, settings))
            continue
        lines = tuple((key, post.key_lines[key]) for key in _REF_KEYS if key in post.key_lines)
        ref = EntryRef(
            entries.entry_id(post, settings.site), entries.permalink(post, settings.site),
            post.slug, post.date, post.categories, post.relpath, post.draft, lines,
            entries.plain_title(post),
        )
        results.append((json.dumps(_ref_to_json(ref), ensure_ascii=False),))
    return results


def _convert_chunk(settings: Settings, paths: list[Path]) -> list[_WorkerResult]:
    """Each post converted once: its entry, its outline and its own findings."""
    from feedpub import lint

    results: list[_WorkerResult] = []
    for path in paths:
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir,
                                     limits=settings.limits)
            with _time_limit(settings.limits.render_seconds):
                entry, outline = entries.make_entry_with_outline(post, settings.site)
                findings = lint.post_findings(post, settings=settings, entry=entry,
                                              outline=outline)
        except FeedpubError as error:
            results.append(_error_parts(error, path))
            continue
        except (Exception, _TooSlow) as exc:  # noqa: BLE001 - one post's crash is its error
            results.append(_unexpected(exc, path, settings))
            continue
        results.append((
            entry.source,
            json.dumps(entry.to_json(), ensure_ascii=False),
            _analysis_to_json(outline, findings),
        ))
    return results


def _file_sha(path: Path) -> str:
    """The file's SHA-256, read in blocks (a huge file is refused later, never held)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _failure_to_json(error: ContentError) -> str:
    return json.dumps({"error": [error.message, error.line, error.key]}, ensure_ascii=False)


def _failure_from_json(text: str, source: str) -> ContentError | None:
    try:
        message, line, key = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return ContentError(str(message), path=source, line=line, key=key)


def _die_with_parent(parent: int) -> None:
    """Run in each worker: end it when the process that started the pool is gone, so a
    ``kill -9`` of a build leaves no workers behind (their parent is the forkserver)."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has ended
        else:
            while os.getppid() != 1 and _alive(parent):
                time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decode(result: _WorkerResult) -> list[str] | ContentError:
    if len(result) <= 3:
        return [str(part) for part in result]
    message, path, line, key = result
    return ContentError(str(message), path=path, line=line, key=key)


def _run_chunks(
    work: _Worker, settings: Settings, paths: list[Path], jobs: int | None,
    progress: Progress | None,
) -> Iterator[list[str] | ContentError]:
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
    context.set_forkserver_preload(["feedpub.catalog", "feedpub.markup", "feedpub.lint"])
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        for chunk_results in pool.map(work, [settings] * len(chunks), chunks):
            for result in chunk_results:
                yield _decode(result)
            done += len(chunk_results)
            if progress:
                progress(done, total)
