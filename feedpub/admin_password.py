"""The dashboard's password: an Argon2id hash (argon2-cffi), and where it is kept.

``feedpub admin set-password`` writes the hash into ``[admin] password_hash`` of
``feedpub.toml``; ``FEEDPUB_ADMIN_PASSWORD_HASH`` overrides it. The password
itself is never stored.
"""

from __future__ import annotations

import re
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from feedpub.errors import ConfigError

MIN_LENGTH = 12
"""Shorter passwords are refused: the login is on the open internet."""

_HASHER = PasswordHasher()
"""argon2-cffi's defaults: Argon2id, RFC 9106's low-memory profile (64 MiB, 3 passes)."""

_DUMMY = _HASHER.hash("feedpub: a password nobody has")
"""Checked against when the user name is wrong, so that a wrong name takes as long
as a wrong password."""


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password``; ConfigError when it is too short."""
    if len(password) < MIN_LENGTH:
        raise ConfigError(f"the admin password must be at least {MIN_LENGTH} characters long")
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; always does the work of one Argon2 check."""
    try:
        return _HASHER.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_ADMIN_TABLE = re.compile(r"^\[admin\][ \t]*(#.*)?$", re.MULTILINE)
_NEXT_TABLE = re.compile(r"^\s*\[", re.MULTILINE)
_HASH_LINE = re.compile(r"^password_hash\s*=.*$", re.MULTILINE)


def store_password_hash(config_path: Path, password_hash: str) -> None:
    """Put ``password_hash`` into the ``[admin]`` table of ``config_path``, keeping every
    other line (and comment) of the file as it is."""
    text = config_path.read_text(encoding="utf-8")
    line = f'password_hash = "{password_hash}"'
    table = _ADMIN_TABLE.search(text)
    if table is None:
        text = text.rstrip("\n") + f"\n\n[admin]\n{line}\n"
    else:
        start = table.end()
        following = _NEXT_TABLE.search(text, start + 1)
        end = following.start() if following else len(text)
        body = text[start:end]
        if _HASH_LINE.search(body):
            body = _HASH_LINE.sub(line.replace("\\", "\\\\"), body, count=1)
        else:
            body = f"\n{line}" + body
        text = text[:start] + body + text[end:]
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(config_path)
