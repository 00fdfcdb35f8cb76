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
  feedpub writes, in folders it owns, and never anything else a person put there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from feedpub.errors import FeedpubError


@dataclass(frozen=True)
class Output:
    """A file for ``public/``: its path below it (POSIX, no leading ``/``) and its bytes."""

    relpath: str
    data: bytes


def write_outputs(public_dir: Path, outputs: Sequence[Output]) -> list[Path]:
    """Land every output below ``public_dir``; return the files whose bytes changed.

    Raises FeedpubError, writing nothing, when a path leaves ``public_dir`` or is
    blocked (a folder where a file goes, or a file where a folder goes).
    """
    targets = [(_target(public_dir, output.relpath), output.data) for output in outputs]
    for path, _ in targets:
        if path.is_dir() or any(parent.is_file() for parent in path.parents):
            raise FeedpubError(
                "is in the way of a file feedpub writes (a folder where a file goes, or the "
                "reverse); move it away and build again",
                path=path,
            )
    return [path for path, data in targets if atomic_write(path, data)]


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
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
    temp = Path(temp_name)
    done = False
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(mode)
        temp.replace(path)
        done = True
    except OSError as exc:
        raise FeedpubError(f"cannot write the file: {exc.strerror}", path=path) from None
    finally:
        if not done:
            temp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return True


def _target(public_dir: Path, relpath: str) -> Path:
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or ".." in parts:
        raise FeedpubError(f"{relpath!r} is not a path inside public/", path=public_dir)
    return public_dir.joinpath(*parts)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
