"""The files of ``public/`` over HTTP: the right types, validators, 304s and gzip.

Feed readers poll every few minutes with ``If-None-Match`` or
``If-Modified-Since``; most polls should cost a ``stat()`` and a 304. File
bodies are kept in memory, keyed by inode, size and modification time, with a
strong ``ETag`` from a hash of the bytes and a gzip copy made once. The gzip
copy is another representation, so it has its own strong ``ETag`` (the
identity one with ``-gz``): a cache never mixes up the two, and both are
accepted in ``If-None-Match`` since they name the same bytes.
"""

# Paths are plain strings on the hot path: pathlib's parsing was half of a 304's time.
# ruff: noqa: PTH116, PTH118

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import mimetypes
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path, PurePosixPath

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response

FEED_TYPES = {
    "atom.xml": "application/atom+xml; charset=utf-8",
    "rss.xml": "application/rss+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
    "feed.xsl": "text/xsl; charset=utf-8",
}
"""By file name: ``atom.xml`` is a feed wherever it is (``categories/<slug>/atom.xml``)."""
FEED_FILES = frozenset({"atom.xml", "rss.xml", "feed.json"})
"""The files a browser may be shown a page of instead (see :func:`prefers_html`)."""
_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_FEED_MEDIA_TYPES = frozenset({
    "application/atom+xml", "application/rss+xml", "application/rdf+xml",
    "application/feed+json", "application/xml", "text/xml", "application/json",
})
TYPES_BY_SUFFIX = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".xsl": "text/xsl; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CACHE_CONTROL = "public, max-age=300"
"""Five minutes fresh, then a conditional GET: a rebuilt feed shows up soon after."""
GZIP_MIN_BYTES = 256
MAX_CACHED_FILE = 8 * 1024 * 1024
CACHE_BUDGET = 128 * 1024 * 1024
INDEX_NAME = "index.html"


def media_type_for(name: str) -> str:
    """The Content-Type to send for a file called ``name``."""
    if name in FEED_TYPES:
        return FEED_TYPES[name]
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in TYPES_BY_SUFFIX:
        return TYPES_BY_SUFFIX[suffix]
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def is_feed_file(url_path: str) -> bool:
    return PurePosixPath(url_path).name in FEED_FILES


def prefers_html(accept: str) -> bool:
    """Whether a client that sends this ``Accept`` wants a page rather than a feed:
    ``text/html`` ranks above every feed type it names. Browsers send
    ``text/html,…,application/xml;q=0.9,…``; feed readers name the feed types, or
    ``*/*``, or nothing. A tie goes to the feed: a reader must never get a page."""
    page = feed = 0.0
    for item in accept.split(","):
        media_type, _, params = item.partition(";")
        media_type = media_type.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type in _PAGE_TYPES:
            page = max(page, quality)
        elif media_type in _FEED_MEDIA_TYPES:
            feed = max(feed, quality)
    return page > feed


def compressible(media_type: str) -> bool:
    essence = media_type.partition(";")[0].strip()
    return (
        essence.startswith("text/")
        or essence.endswith(("+xml", "/xml", "+json", "/json"))
        or essence == "image/svg+xml"
    )


def safe_relative(url_path: str) -> tuple[str, ...] | None:
    """``url_path`` (already percent-decoded) as a path inside the folder, or None.

    Refuses ``..`` and ``.`` segments, hidden files (``.feedpub-…`` temp
    files among them), backslashes and NUL; empty segments (``//etc``) are
    dropped so that nothing becomes an absolute path.
    """
    if "\x00" in url_path or "\\" in url_path:
        return None
    parts = [part for part in url_path.split("/") if part]
    if any(part.startswith(".") for part in parts):
        return None
    return tuple(parts)


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` does not; ``*`` does)."""
    wildcard: bool | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            wildcard = quality > 0
    return bool(wildcard)


def _tags(header: str) -> list[str]:
    """The entity tags of ``If-None-Match``, without ``W/`` (it uses weak comparison)."""
    tags = []
    for item in header.split(","):
        tag = item.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


@functools.lru_cache(maxsize=1024)
def _http_dates(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


@dataclass(frozen=True)
class PublicFile:
    """One file of ``public/`` as it is served."""

    path: str
    key: tuple[int, int, int]
    """(inode, size, mtime_ns): a rebuilt file has another."""
    media_type: str
    mtime: int
    etag: str
    gzip_etag: str | None
    body: bytes | None
    """None for a file too large to keep in memory: it is streamed from disk."""
    gzipped: bytes | None

    @property
    def last_modified(self) -> str:
        return _http_dates(self.mtime)

    @property
    def page_etag(self) -> str:
        """The validator of the page a browser is shown for this feed: another
        representation of the same file, so another tag."""
        return self.etag[:-1] + '-page"'

    def not_modified(self, headers: Headers, *, page: bool = False) -> bool:
        """RFC 9110 §13.2.2: ``If-None-Match`` when present, else ``If-Modified-Since``.
        ``page``: for the page shown for a feed rather than the file itself."""
        if_none_match = headers.get("if-none-match")
        if if_none_match is not None:
            tags = _tags(if_none_match)
            if page:
                return "*" in tags or self.page_etag in tags
            return "*" in tags or self.etag in tags or (
                self.gzip_etag is not None and self.gzip_etag in tags
            )
        if_modified_since = headers.get("if-modified-since")
        if if_modified_since is not None:
            since = _parse_http_date(if_modified_since)
            return since is not None and self.mtime <= since.timestamp()
        return False


@dataclass(frozen=True)
class Found:
    """A regular file inside the folder, as ``locate`` found it."""

    path: str
    status: os.stat_result


def _key(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def _digest_tag(data: bytes, suffix: str = "") -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()[:18]).decode("ascii")
    return f'"{digest}{suffix}"'


class PublicFiles:
    """Serves one folder; safe to share between the threads and tasks of one process."""

    def __init__(
        self,
        root: Path,
        *,
        cache_control: str = CACHE_CONTROL,
        max_cached_file: int = MAX_CACHED_FILE,
        cache_budget: int = CACHE_BUDGET,
    ) -> None:
        self.root = root
        self.cache_control = cache_control
        self.max_cached_file = max_cached_file
        self.cache_budget = cache_budget
        self._cache: OrderedDict[str, PublicFile] = OrderedDict()
        self._root: tuple[tuple[int, int], str] | None = None
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def _real_root(self) -> str | None:
        """The folder's real path, worked out again whenever the folder (or the symlink
        that it is) is replaced."""
        try:
            marker = os.lstat(self.root)
        except OSError:
            return None
        key = (marker.st_ino, marker.st_mtime_ns)
        known = self._root
        if known is not None and known[0] == key:
            return known[1]
        real = os.path.realpath(self.root)
        self._root = (key, real)
        return real

    @staticmethod
    def _walk(path: str, root: str) -> tuple[str, os.stat_result]:
        """(where ``path`` really is, its status): a symlink is followed only if it
        leads somewhere inside ``root``."""
        status = os.lstat(path)
        if not stat.S_ISLNK(status.st_mode):
            return path, status
        real = os.path.realpath(path)
        if real != root and not real.startswith(root + os.sep):
            raise PermissionError(f"{path} leads out of {root}")
        return real, os.stat(real)

    def locate(self, url_path: str) -> tuple[Found | None, bool]:
        """(the file ``url_path`` names, or None; whether it is a folder missing its ``/``).

        Each path segment costs one ``lstat``; only symlinks are resolved, and one
        that leads out of the folder ends the search.
        """
        relative = safe_relative(url_path)
        root = self._real_root()
        if relative is None or root is None:
            return None, False
        path = root
        try:
            status = os.stat(root)
            for part in relative:
                path, status = self._walk(os.path.join(path, part), root)
            if stat.S_ISDIR(status.st_mode):
                index, index_status = self._walk(os.path.join(path, INDEX_NAME), root)
                if url_path and not url_path.endswith("/"):
                    return None, stat.S_ISREG(index_status.st_mode)
                path, status = index, index_status
        except (OSError, ValueError):
            return None, False
        if not stat.S_ISREG(status.st_mode):
            return None, False
        return Found(path, status), False

    def load(self, found: Found) -> PublicFile | None:
        """The file's bytes and validators (from memory while it is unchanged)."""
        path, status = found.path, found.status
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached.key == _key(status):
                self._cache.move_to_end(path)
                return cached
        if status.st_size > self.max_cached_file:
            return self._streamed(path, status)
        try:
            with open(path, "rb") as handle:  # noqa: PTH123
                status = os.fstat(handle.fileno())
                data = handle.read()
        except OSError:
            return None
        media_type = media_type_for(Path(path).name)
        etag = _digest_tag(data)
        gzipped = None
        if compressible(media_type) and len(data) >= GZIP_MIN_BYTES:
            packed = gzip.compress(data, compresslevel=6, mtime=0)
            if len(packed) < len(data):
                gzipped = packed
        loaded = PublicFile(
            path=path,
            key=_key(status),
            media_type=media_type,
            mtime=int(status.st_mtime),
            etag=etag,
            gzip_etag=etag[:-1] + '-gz"' if gzipped is not None else None,
            body=data,
            gzipped=gzipped,
        )
        self._remember(loaded)
        return loaded

    def _streamed(self, path: str, status: os.stat_result) -> PublicFile:
        return PublicFile(
            path=path,
            key=_key(status),
            media_type=media_type_for(Path(path).name),
            mtime=int(status.st_mtime),
            etag=f'"{status.st_size:x}-{status.st_mtime_ns:x}"',
            gzip_etag=None,
            body=None,
            gzipped=None,
        )

    def _remember(self, loaded: PublicFile) -> None:
        size = len(loaded.body or b"") + len(loaded.gzipped or b"")
        with self._lock:
            previous = self._cache.pop(loaded.path, None)
            if previous is not None:
                self._cached_bytes -= len(previous.body or b"") + len(previous.gzipped or b"")
            self._cache[loaded.path] = loaded
            self._cached_bytes += size
            while self._cached_bytes > self.cache_budget and len(self._cache) > 1:
                _, evicted = self._cache.popitem(last=False)
                self._cached_bytes -= len(evicted.body or b"") + len(evicted.gzipped or b"")

    def response(self, file: PublicFile, headers: Headers) -> Response:
        """200 (identity or gzip), or 304 when the client's copy is current.

        A feed varies with ``Accept`` too: a browser asking for the same URL is shown
        a page (``feedpub serve``), so no cache may hand one the other's answer."""
        use_gzip = file.gzipped is not None and gzip_accepted(headers.get("accept-encoding", ""))
        common = {
            "ETag": file.gzip_etag if use_gzip and file.gzip_etag else file.etag,
            "Last-Modified": file.last_modified,
            "Cache-Control": self.cache_control,
        }
        vary = ["Accept"] if is_feed_file(file.path) else []
        if file.gzipped is not None:
            vary.append("Accept-Encoding")
        if vary:
            common["Vary"] = ", ".join(vary)
        if file.not_modified(headers):
            return Response(status_code=304, headers=common)
        if file.body is None:
            return FileResponse(file.path, headers=common, media_type=file.media_type)
        if use_gzip and file.gzipped is not None:
            return Response(file.gzipped, headers={**common, "Content-Encoding": "gzip"},
                            media_type=file.media_type)
        return Response(file.body, headers=common, media_type=file.media_type)
