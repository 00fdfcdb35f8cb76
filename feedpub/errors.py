"""One tree of exceptions; the CLI turns each into one line and an exit status."""

from __future__ import annotations

from pathlib import Path


class FeedpubError(Exception):
    """Base of every error feedpub raises on purpose.

    ``path``, ``line`` and ``key`` locate the problem where there is a place to
    point at; ``str()`` renders ``path:line: key: message`` so a terminal or an
    editor can jump to it.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ConfigError(FeedpubError):
    """feedpub.toml, an environment override or a template is wrong."""

    exit_code = 2


class ContentError(FeedpubError):
    """A post cannot be read: front matter, dates, encoding, duplicates."""

    exit_code = 1


class InvalidAddress(FeedpubError):
    """An email address that email-validator rejects; the message says why."""

    exit_code = 1


class CsvError(FeedpubError):
    """A CSV file that cannot be imported at all (no header, no email column)."""

    exit_code = 1


class TokenError(FeedpubError):
    """A link that is tampered with, expired, or meant for something else."""

    exit_code = 1


class StoreError(FeedpubError):
    """The database cannot be reached, migrated or holds something unexpected."""

    exit_code = 1


class DeliveryError(FeedpubError):
    """A message could not be handed to its transport."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: int | None = None,
        path: Path | str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.permanent = permanent
        self.code = code
