"""The only code that writes into ``public/``.

Generators (feeds, edition pages) hand it :class:`Output` values; it lands
them. Its guarantees:

- **Atomic.** Each file is written to a temporary file beside it, fsynced and
  renamed over the old one, so a reader (a web server, a feed reader) sees the
  old bytes or the new, never a part.
- **All or nothing before anything.** Every path of a set is checked before the
  first is written: a folder where a file goes fails the whole set, naming it.
- **Unchanged is untouched.** A file that already holds the bytes is left
  alone, so its modification time (and a server's ``Last-Modified``) stays true
  and an unchanged rebuild writes nothing.
- **Only feedpub's files are removed.** :func:`prune` deletes files of names
  feedpub writes, in folders it owns; :class:`Manifest` remembers each file it
  wrote (with its size and time) and removes one only while it is still exactly
  what feedpub wrote. Anything else a person put in ``public/`` stays.
- **Nothing left half-way.** A temporary file that a killed build left behind
  (``.name.PID-XXXX.tmp``) is removed by the next write into ``public/``, pages on
  or off, as soon as the process that wrote it is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from feedpub.errors import FeedpubError


@dataclass(frozen=True)
class Output:
    """A file for ``public/``: its path below it (POSIX, no leading ``/``) and its bytes,
    or the file to copy them from (an image beside a post)."""

    relpath: str
    data: bytes | Path


def write_outputs(public_dir: Path, outputs: Sequence[Output]) -> list[Path]:
    """Land every output below ``public_dir``; return the files whose bytes changed.

    Raises FeedpubError, writing nothing, when a path leaves ``public_dir`` or is
    blocked (a folder where a file goes, or a file where a folder goes).
    """
    with Staging(public_dir) as staging:
        for output in outputs:
            staging.add(output)
        return staging.commit()


class Staging:
    """A set of files for ``public/`` written beside their targets under temporary names,
    then landed together by :meth:`commit`: what a build renders in batches (to keep
    its memory small) still lands all at once or not at all.

    A file that already holds the bytes is not staged. Leaving the ``with`` block
    without committing removes what was staged.
    """

    def __init__(self, public_dir: Path) -> None:
        self.public_dir = public_dir
        self._staged: dict[str, tuple[Path, Path]] = {}
        self._clear_folders: set[Path] = set()
        self._made_folders: set[Path] = set()
        self._touched = time.monotonic()
        _sweep(public_dir)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def __contains__(self, relpath: str) -> bool:
        return relpath in self._staged

    def add(self, output: Output) -> None:
        path = _target(self.public_dir, output.relpath)
        self._check_clear(path)
        data = output.data.read_bytes() if isinstance(output.data, Path) else output.data
        previous = self._staged.pop(output.relpath, None)  # the last one added wins
        if previous is not None:
            previous[0].unlink(missing_ok=True)
        try:
            if path.read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FeedpubError(f"cannot read the file: {exc.strerror}", path=path) from None
        if not path.parent.is_dir():
            self._made_folders.add(_first_missing(path.parent, self.public_dir))
        self._staged[output.relpath] = (_write_temporary(path, data), path)
        self._keep_fresh()

    def commit(self) -> list[Path]:
        """Make the staged bytes durable, rename each over its target, and make the renames
        durable. Returns the files written."""
        staged = list(self._staged.values())
        for temp, path in staged:
            if not temp.exists():  # all or nothing: not one rename if a staged file is gone
                raise FeedpubError(
                    "its staged copy was removed before it could land; build again", path=path
                )
        _make_durable([temp for temp, _ in staged], self.public_dir)
        for temp, path in staged:
            try:
                temp.replace(path)
            except OSError as exc:
                raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
        self._staged.clear()
        self._made_folders.clear()
        _make_durable(sorted({path.parent for _, path in staged}), self.public_dir)
        return [path for _, path in staged]

    def discard(self) -> None:
        for temp, _ in self._staged.values():
            temp.unlink(missing_ok=True)
        self._staged.clear()
        for folder in self._made_folders:  # only the folders staging made, if still empty
            for inner, _, _ in os.walk(folder, topdown=False):
                with contextlib.suppress(OSError):
                    Path(inner).rmdir()
        self._made_folders.clear()

    def _keep_fresh(self) -> None:
        """Another process's sweep removes temporary files older than
        :data:`TEMPORARY_FILE_MAX_AGE`, its writer alive or not; a set staged for longer
        (a first build drawing thousands of formulas) stays younger than that."""
        if time.monotonic() - self._touched < TEMPORARY_FILE_MAX_AGE / 4:
            return
        for temp, _ in self._staged.values():
            os.utime(temp)
        self._touched = time.monotonic()

    def _check_clear(self, path: Path) -> None:
        blocked = path.is_dir()
        for parent in path.parents:
            if blocked or parent in self._clear_folders:
                break
            blocked = parent.is_file()
            if not blocked:
                self._clear_folders.add(parent)
        if blocked:
            raise FeedpubError(
                "is in the way of a file feedpub writes (a folder where a file goes, or the "
                "reverse); move it away and build again",
                path=path,
            )


def prune(folder: Path, *, keep: Collection[str], owned: Iterable[str],
          wanted: Collection[str]) -> None:
    """In each subfolder of ``folder``, delete the files called one of ``owned`` when the
    subfolder is not in ``keep`` or the name is not in ``wanted``; then remove subfolders
    (and ``folder``) left empty.

    What ``build`` calls for the feeds of categories that no post has any more, and
    for formats dropped from ``feed.formats``.
    """
    if not folder.is_dir():
        return
    owned = tuple(owned)
    for child in sorted(folder.iterdir()):
        if not child.is_dir():
            continue
        for name in owned:
            if child.name not in keep or name not in wanted:
                (child / name).unlink(missing_ok=True)
        if not any(child.iterdir()):
            child.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def atomic_write(path: Path, data: bytes) -> bool:
    """Replace ``path`` with ``data`` all at once (temp file, fsync, rename).

    Returns False, touching nothing, when the file already holds exactly ``data``.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FeedpubError(f"cannot read the file: {exc.strerror}", path=path) from None
    temp = _write_temporary(path, data)
    try:
        _fsync(temp)
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
    _fsync(path.parent)
    return True


def _write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a new hidden file beside ``path``, with ``path``'s permissions."""
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"
        )
    except OSError as exc:
        raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        temp.chmod(mode)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
    return temp


_FSYNC_EACH_UP_TO = 128
"""Beyond this many files, one flush of the whole filesystem is quicker than an fsync each
(each waits for its own journal commit: 10,000 pages took 18 s). Below it (the feeds of a
site with many categories), the flush could cost more: it writes out every program's
unwritten data on that filesystem, not only feedpub's."""


def _make_durable(paths: Sequence[Path], public_dir: Path) -> None:
    try:
        if len(paths) > _FSYNC_EACH_UP_TO:
            _sync_filesystem(public_dir)
            return
        for path in paths:
            _fsync(path)
    except OSError as exc:
        raise FeedpubError(f"cannot write the files: {exc.strerror}", path=public_dir) from None


def _sync_filesystem(folder: Path) -> None:
    """Flush the filesystem that holds ``folder`` (Linux's syncfs; elsewhere, every one)."""
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(descriptor) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(descriptor)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class Manifest:
    """What ``build`` wrote into ``public/``: for each file, the key of what it was made
    from, and its size and modification time right after the write.

    A planned file whose key is unchanged and that is still as written is not
    rendered again; a file written before and no longer planned is removed, unless
    someone changed it since.
    """

    def __init__(self, public_dir: Path, db: sqlite3.Connection) -> None:
        self.public_dir = public_dir
        self._db = db
        self._rows: dict[str, tuple[str, int, int]] = {
            relpath: (key, size, mtime_ns)
            for relpath, key, size, mtime_ns in db.execute(
                "SELECT relpath, key, size, mtime_ns FROM files"
            )
        }

    @classmethod
    @contextmanager
    def open(cls, public_dir: Path, cache_dir: Path, *, name: str = "public") -> Iterator[Manifest]:
        """The manifest called ``name`` kept in ``cache_dir`` (one for the pages and assets,
        one for the feeds); leftovers of a killed write are removed."""
        _sweep(public_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{name}-v1.sqlite"
        try:
            db = _connect(path)
        except sqlite3.DatabaseError:
            path.unlink(missing_ok=True)  # a manifest that cannot be read is started again
            db = _connect(path)
        with closing(db):
            manifest = cls(public_dir, db)
            yield manifest
            db.commit()

    def is_current(self, relpath: str, key: str) -> bool:
        """Whether ``relpath`` was written from ``key`` and is still as written."""
        row = self._rows.get(relpath)
        return row is not None and row[0] == key and self._unchanged(relpath, row)

    def holds_only(self, key: str) -> bool:
        """Whether files were recorded, every one written from ``key`` and still as written."""
        return bool(self._rows) and all(
            row[0] == key and self._unchanged(relpath, row) for relpath, row in self._rows.items()
        )

    def forget_others(self, keep: Collection[str]) -> None:
        """Forget the files not in ``keep``, leaving them on disk."""
        for relpath in [relpath for relpath in self._rows if relpath not in keep]:
            del self._rows[relpath]
            self._db.execute("DELETE FROM files WHERE relpath = ?", (relpath,))

    def record(self, relpath: str, key: str) -> None:
        """Remember that ``relpath`` now holds what ``key`` makes."""
        stat = _target(self.public_dir, relpath).stat()
        self._rows[relpath] = (key, stat.st_size, stat.st_mtime_ns)
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                         (relpath, key, stat.st_size, stat.st_mtime_ns))

    def remove_others(self, keep: Collection[str], *, within: str = "") -> list[Path]:
        """Remove the files this manifest wrote below ``within`` that are not in ``keep``,
        if still as written; forget them either way. Returns the files removed."""
        removed: list[Path] = []
        for relpath, row in sorted(self._rows.items()):
            if relpath in keep or not relpath.startswith(within):
                continue
            if self._unchanged(relpath, row):
                path = _target(self.public_dir, relpath)
                path.unlink()
                removed.append(path)
                _remove_empty_parents(path.parent, self.public_dir)
            del self._rows[relpath]
            self._db.execute("DELETE FROM files WHERE relpath = ?", (relpath,))
        return removed

    def _unchanged(self, relpath: str, row: tuple[str, int, int]) -> bool:
        try:
            stat = _target(self.public_dir, relpath).stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (row[1], row[2])


TEMPORARY_FILE_MAX_AGE = 600.0
"""Seconds after which a temporary file is a leftover: a write takes milliseconds, and
a younger one may be another process's write in progress (two runs at once)."""


_SWEEP_INTERVAL = 60.0
"""A process looks for leftovers in one ``public/`` at most this often."""
_swept: dict[Path, float] = {}
_WRITER_PID = re.compile(r"\.(\d+)-[^.]*\.tmp")


def _sweep(public_dir: Path) -> None:
    """:func:`remove_temporary_files`, at most once a minute per folder in a process
    (a build writes into ``public/`` several times; the scheduler builds every tick)."""
    now = time.monotonic()
    if now - _swept.get(public_dir, -_SWEEP_INTERVAL) < _SWEEP_INTERVAL:
        return
    _swept[public_dir] = now
    remove_temporary_files(public_dir)


def remove_temporary_files(public_dir: Path, *, now: float | None = None) -> list[Path]:
    """Delete what an interrupted write (:func:`atomic_write`, :class:`Staging`) left:
    hidden ``.NAME.PID-*.tmp`` files whose writing process is gone, and any older than
    :data:`TEMPORARY_FILE_MAX_AGE`."""
    if not public_dir.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - TEMPORARY_FILE_MAX_AGE
    removed = []
    for path in public_dir.rglob(".*.tmp"):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            if path.stat().st_mtime > cutoff and _writer_alive(path.name):
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # its write finished a moment ago
        removed.append(path)
    return removed


def _writer_alive(name: str) -> bool:
    """Whether the process that named this temporary file may still be writing it (a
    name without a process id, or one of a live process, may be)."""
    match = _WRITER_PID.search(name)
    if match is None:
        return True
    pid = int(match[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS files (relpath TEXT PRIMARY KEY, key TEXT NOT NULL, "
               "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL)")
    return db


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: someone's files are there, or feedpub's others
        folder = folder.parent


def _target(public_dir: Path, relpath: str) -> Path:
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or ".." in parts:
        raise FeedpubError(f"{relpath!r} is not a path inside public/", path=public_dir)
    return public_dir.joinpath(*parts)


def _first_missing(folder: Path, public_dir: Path) -> Path:
    """The outermost folder between ``public_dir`` and ``folder`` that does not exist."""
    missing = folder
    for parent in folder.parents:
        if parent == public_dir or parent.is_dir():
            return missing
        missing = parent
    return missing


def _fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries (which makes a rename durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
