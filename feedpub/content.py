"""Files -> Post: front matter, dates, slugs. Knows nothing of what comes downstream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Post:
    path: Path
    """Absolute path of the source file."""
    relpath: str
    """Path relative to the site folder (POSIX separators), used in every message."""
    title: str
    title_from_filename: bool
    date: datetime
    """Aware: an offset given in the file is kept, a naive date takes site.timezone."""
    updated: datetime | None
    slug: str
    id: str | None
    """The ``id`` key when the author set one."""
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    author: str | None
    summary: str | None
    """The ``summary`` / ``description`` / ``excerpt`` key, as written (Markdown)."""
    draft: bool
    image: str | None
    lang: str | None
    body: str
    """Markdown after the front matter, LF line endings."""
    body_line: int
    """1-based line number in the file of the body's first line."""
    key_lines: Mapping[str, int] = field(default_factory=dict)
    """1-based line number of each front matter key, for messages that point at it."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Front matter keys feedpub does not use, kept as they were."""
