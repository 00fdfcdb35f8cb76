"""Settings from ``feedpub.toml`` and ``FEEDPUB_*`` environment overrides, validated once.

The bottom of the import graph: this module imports nothing of feedpub's but
errors and pure parsers, so reading a post (and every build worker) stays free
of smtplib, Babel and APScheduler. The dataclass fields are the one source of
each table's keys and defaults.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from feedpub.errors import ConfigError
from feedpub.i18n import parse_locale
from feedpub.schedules import parse_schedule

CONFIG_NAME = "feedpub.toml"
SECRET_FILE_NAME = ".feedpub-secret"
FEED_FORMATS = ("atom", "rss", "json")
DATABASE_URL_VARIABLE = "FEEDPUB_DATABASE_URL"
MAIL_TRANSPORT_VARIABLE = "FEEDPUB_MAIL_TRANSPORT"
ADMIN_PASSWORD_HASH_VARIABLE = "FEEDPUB_ADMIN_PASSWORD_HASH"
LANGUAGE_EXAMPLES = "en, de, pt-BR, zh-TW, zh-CN or ja"


# --- the transport: parsed once, here ---------------------------------------------

TRANSPORT_KEY = "mail.transport"
TlsMode = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[TlsMode, int] = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT = 30.0
DEFAULT_POOL = 4
_SMTP_OPTIONS = ("tls", "timeout", "pool", "helo")


@dataclass(frozen=True)
class MaildirConfig:
    """``maildir:PATH``: each message becomes a file in a folder."""

    path: Path
    """Absolute once loaded: a relative path is taken from the site folder."""

    def describe(self) -> str:
        return f"maildir:{self.path}"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class SmtpConfig:
    """``smtp://user:pass@host:port?tls=…``: a mail server and how to talk to it."""

    host: str
    port: int
    tls: TlsMode = "starttls"
    user: str | None = None
    password: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT
    pool: int = DEFAULT_POOL
    helo: str | None = None
    """The name given in EHLO; default: this machine's fully qualified name."""

    def describe(self) -> str:
        """The URL without the password, for messages and logs."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{user}{host}:{self.port}?tls={self.tls}"

    def __str__(self) -> str:
        return self.describe()


TransportConfig: TypeAlias = MaildirConfig | SmtpConfig


def parse_transport(text: str) -> TransportConfig:
    """``maildir:PATH`` or an SMTP URL (:func:`parse_smtp_url`); a ConfigError naming
    ``mail.transport`` otherwise. A relative Maildir path stays relative here."""
    if text.startswith("maildir:"):
        folder = text[len("maildir:") :]
        if not folder.strip():
            raise ConfigError("'maildir:' needs a folder, e.g. 'maildir:outbox'", key=TRANSPORT_KEY)
        return MaildirConfig(Path(folder))
    if text.lstrip().partition(":")[0].lower() not in ("smtp", "smtps"):
        raise ConfigError(
            f"must be 'maildir:PATH' or 'smtp://user:pass@host:port?tls=starttls', "
            f"not {_redact(text)!r}",
            key=TRANSPORT_KEY,
        )
    return parse_smtp_url(text)


def parse_smtp_url(url: str) -> SmtpConfig:
    """``smtp://user:pass@host:port?tls=starttls|ssl|none&timeout=30&pool=4&helo=NAME``.

    The user and password are percent-decoded (write ``@`` as ``%40``); the port
    defaults to 587, 465 or 25 after ``tls``; ``smtps://`` means ``tls=ssl``.
    """
    shown = _redact(url)

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{problem} in {shown!r}", key=TRANSPORT_KEY)

    try:
        parts = urlsplit(url)
    except ValueError:
        raise fail("cannot read the URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise fail("the scheme must be smtp:// or smtps://")
    host = parts.hostname
    if not host:
        raise fail("no host name")
    try:
        port = parts.port
    except ValueError:
        raise fail(
            "the port must be a number from 1 to 65535 (percent-encode '/', '?', '#' "
            "and '@' in a password)"
        ) from None
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise fail("the query must look like '?tls=starttls&timeout=30'") from None
    for key, values in query.items():
        if key not in _SMTP_OPTIONS:
            raise fail(f"unknown option {key!r} (known: {', '.join(_SMTP_OPTIONS)})")
        if len(values) > 1:
            raise fail(f"option {key!r} is given twice")
    options = {key: values[0] for key, values in query.items()}

    implied: TlsMode = "ssl" if scheme == "smtps" else "starttls"
    tls = options.get("tls", implied).lower()
    if tls not in DEFAULT_PORTS:
        raise fail(f"tls must be starttls, ssl or none, not {tls!r}")
    if scheme == "smtps" and tls != "ssl":
        raise fail(f"smtps:// always uses tls=ssl, not tls={tls}")
    mode: TlsMode = "ssl" if tls == "ssl" else "none" if tls == "none" else "starttls"

    timeout = _number(options.get("timeout"), float, DEFAULT_TIMEOUT)
    if timeout is None or not (math.isfinite(timeout) and timeout > 0):
        raise fail(f"timeout must be a number of seconds above 0, not {options['timeout']!r}")
    pool = _number(options.get("pool"), int, DEFAULT_POOL)
    if not isinstance(pool, int) or not 1 <= pool <= 100:
        raise fail(f"pool must be a whole number from 1 to 100, not {options['pool']!r}")
    helo = options.get("helo") or None

    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else ""
    if password and not user:
        raise fail("a password is given without a user")
    return SmtpConfig(
        host=host,
        port=port or DEFAULT_PORTS[mode],
        tls=mode,
        user=user,
        password=password,
        timeout=timeout,
        pool=pool,
        helo=helo,
    )


def _number(text: str | None, kind: type[int] | type[float], default: float) -> float | None:
    if text is None:
        return default
    try:
        return kind(text)
    except ValueError:
        return None


def _redact(url: str) -> str:
    """The URL with its password as ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


# --- the settings ------------------------------------------------------------------


@dataclass(frozen=True)
class Author:
    name: str
    """Defaults to the site's title."""
    email: str | None = None


@dataclass(frozen=True)
class SiteConfig:
    title: str
    url: str
    """Absolute, with a trailing slash."""
    description: str = ""
    language: str = "en"
    timezone: str = "UTC"
    author: Author = field(default_factory=lambda: Author(name=""))
    permalink: str = "/{year}/{month}/{day}/{slug}/"
    excerpt_separator: str = "<!--more-->"
    summary_length: int = 280
    """Characters (grapheme clusters) in a summary cut from the body."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"


@dataclass(frozen=True)
class FeedConfig:
    limit: int = 20
    full_content: bool = True
    formats: tuple[str, ...] = FEED_FORMATS
    xslt: bool = False
    """Write ``feed.xsl`` and point the XML feeds at it, for browsers that still apply
    XSLT. Off: people who open a feed get the HTML feeds page (``feeds/``) instead."""


@dataclass(frozen=True)
class DkimConfig:
    selector: str
    domain: str
    key_file: Path
    """An RSA private key (PEM), whose public key is published at
    ``selector._domainkey.domain``."""
    ed25519_selector: str | None = None
    """With ``ed25519_key_file``: a second signature, Ed25519 (RFC 8463), for the receivers
    that check it; its public key needs a DNS record of its own, so a selector of its own."""
    ed25519_key_file: Path | None = None


@dataclass(frozen=True)
class MailConfig:
    from_address: str
    """Defaults to the site's title at ``news@`` the site's host."""
    reply_to: str | None = None
    transport: TransportConfig = MaildirConfig(Path("outbox"))
    """Written ``maildir:PATH`` (relative to the site) or ``smtp://user:pass@host:port?tls=…``."""
    rate_limit: float = 20.0
    """Messages per second, all workers together; 0 means unlimited."""
    envelope_from: str | None = None
    """Return-Path for bounces; defaults to the From address."""
    postal_address: str = ""
    max_html_bytes: int = 102_000
    dkim: DkimConfig | None = None
    verp_domain: str | None = None
    """Set it to give each message its own return path, ``bounces+TOKEN@verp_domain``,
    so that a bounce names its delivery (the domain must deliver that mail to feedpub)."""
    verp_local_part: str = "bounces"
    soft_bounce_limit: int = 3
    """This many soft bounces within ``soft_bounce_days`` mark a subscriber bounced."""
    soft_bounce_days: int = 14
    allow_local_addresses: bool = False
    """Accept subscribers at a local domain (``root@localhost``, ``ada@mailhost``),
    e.g. to try feedpub against a local mail server."""

    @property
    def from_email(self) -> str:
        return parseaddr(self.from_address)[1]

    @property
    def from_domain(self) -> str:
        return self.from_email.rpartition("@")[2]

    @property
    def return_path(self) -> str:
        """The envelope sender (``MAIL FROM``), where bounces go: ``envelope_from``,
        else the From address."""
        return self.envelope_from or self.from_address

    def verp_address(self, token: str) -> str | None:
        """The return path of one message (``bounces+TOKEN@domain``); None without VERP."""
        if not self.verp_domain:
            return None
        return f"{self.verp_local_part}+{token}@{self.verp_domain}"


ImapTls = Literal["ssl", "starttls", "none"]
AfterFetch = Literal["keep", "delete", "move"]


@dataclass(frozen=True)
class BouncesConfig:
    """Where bounce and complaint reports are fetched from, and who may post them."""

    imap_host: str | None = None
    """The bounce mailbox's IMAP server; None: ``bounces fetch`` has nothing to read."""
    imap_port: int = 993
    imap_tls: ImapTls = "ssl"
    imap_user: str = ""
    imap_password_env: str = "FEEDPUB_IMAP_PASSWORD"
    """The environment variable that holds the IMAP password (never the file)."""
    imap_folder: str = "INBOX"
    after: AfterFetch = "keep"
    """What happens to a handled message: keep it (marked seen), delete it, move it."""
    move_to: str = "feedpub-handled"
    fetch_minutes: int = 10
    """How often ``feedpub schedule`` runs ``bounces fetch`` (when ``imap_host`` is set)."""
    ses_topic_arns: tuple[str, ...] = ()
    """The SNS topics whose SES notifications the webhook accepts; none: refused."""
    postmark_token_env: str = "FEEDPUB_POSTMARK_WEBHOOK_TOKEN"
    mailgun_signing_key_env: str = "FEEDPUB_MAILGUN_SIGNING_KEY"
    sendgrid_public_key_env: str = "FEEDPUB_SENDGRID_PUBLIC_KEY"
    webhook_max_age_seconds: int = 300
    """A signed webhook older than this (by its own timestamp) is refused as a replay."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///feedpub.db"

    @property
    def missing_sqlite_file(self) -> bool:
        """Whether this is an SQLite file that does not exist yet: there is no store, and
        nothing needs SQLAlchemy to say so."""
        prefix = "sqlite:///"
        path = unquote(self.url[len(prefix):].partition("?")[0])  # as SQLAlchemy reads it
        return (self.url.startswith(prefix) and path not in ("", ":memory:")
                and not Path(path).exists())


@dataclass(frozen=True)
class WebConfig:
    url: str
    """Where ``feedpub serve`` is reachable from subscribers; links in email point here.
    Defaults to the site's URL."""
    confirm_days: int = 7
    embed_origins: tuple[str, ...] = ()
    """Other sites (``https://blog.example``) whose pages may carry the subscribe form
    that ``feedpub embed`` prints."""


@dataclass(frozen=True)
class PagesConfig:
    enabled: bool = True
    """False: another tool (Jekyll, Hugo) makes the site's pages; feedpub writes the
    feeds and edition pages only."""
    home_limit: int = 10
    """Posts shown on the home page (the archive lists them all)."""


@dataclass(frozen=True)
class LimitsConfig:
    """What one post may ask of a build; a post beyond a limit is reported and left out,
    and the rest of the site is built and sent."""

    post_bytes: int = 1_000_000
    """The largest post file, in bytes (ten times a book chapter)."""
    nesting: int = 32
    """The deepest nesting of lists, quotes or brackets a post may have; also bounds
    runs of ``*``/``_`` (four per level)."""
    render_seconds: float = 10.0
    """The longest one post's Markdown may take to convert."""


@dataclass(frozen=True)
class AdminConfig:
    """The operator's dashboard at ``/admin`` of ``feedpub serve``."""

    password_hash: str | None = None
    """An Argon2 hash made by ``feedpub admin set-password``; None: the dashboard is off."""
    user: str = "admin"
    """The name to log in with."""
    session_hours: int = 12
    """A login lasts this long."""

    @property
    def enabled(self) -> bool:
        return bool(self.password_hash)


@dataclass(frozen=True)
class SchedulerConfig:
    misfire_grace_hours: float = 6.0
    """A digest missed during downtime is sent late only within this many hours."""
    tick_seconds: int = 60
    """How often instant emails and retries are sent."""


@dataclass(frozen=True)
class NewsletterConfig:
    name: str
    title: str
    """Defaults to the site's title and the newsletter's name."""
    schedule: str = "0 9 * * MON"
    categories: tuple[str, ...] = ()
    subject: str | None = None
    """A jinja2 template; None means the site title and the first entry's title."""
    full_content: bool = True
    """Defaults to ``feed.full_content``."""
    description: str = ""


@dataclass(frozen=True)
class Settings:
    site_dir: Path
    config_path: Path
    site: SiteConfig
    feed: FeedConfig
    mail: MailConfig
    database: DatabaseConfig
    web: WebConfig
    scheduler: SchedulerConfig
    newsletters: tuple[NewsletterConfig, ...]
    secret: str | None = None
    bounces: BouncesConfig = BouncesConfig()
    pages: PagesConfig = PagesConfig()
    admin: AdminConfig = AdminConfig()
    limits: LimitsConfig = LimitsConfig()

    @property
    def content_dir(self) -> Path:
        return self.site_dir / "content"

    @property
    def posts_dir(self) -> Path:
        return self.content_dir / "posts"

    @property
    def public_dir(self) -> Path:
        return self.site_dir / "public"

    @property
    def templates_dir(self) -> Path:
        return self.site_dir / "templates"

    @property
    def cache_dir(self) -> Path:
        return self.site_dir / ".feedpub-cache"

    def newsletter(self, name: str | None) -> NewsletterConfig:
        """The newsletter called ``name``; the first one when ``name`` is None."""
        if name is None:
            return self.newsletters[0]
        for newsletter in self.newsletters:
            if newsletter.name == name:
                return newsletter
        known = ", ".join(n.name for n in self.newsletters)
        raise ConfigError(
            f"no newsletter named {name!r} (this site has: {known})",
            path=self.config_path,
            key="newsletter",
        )

    def require_secret(self) -> str:
        if not self.secret:
            raise ConfigError(
                "no secret to sign subscriber links: set FEEDPUB_SECRET or run "
                f"`feedpub init` to write {SECRET_FILE_NAME}",
                path=self.site_dir / SECRET_FILE_NAME,
            )
        return self.secret


# --- the file's shape, from the dataclasses -----------------------------------------

_TABLES: dict[str, type[Any]] = {
    "site": SiteConfig,
    "site.author": Author,
    "feed": FeedConfig,
    "mail": MailConfig,
    "database": DatabaseConfig,
    "web": WebConfig,
    "scheduler": SchedulerConfig,
    "newsletter": NewsletterConfig,
    "bounces": BouncesConfig,
    "pages": PagesConfig,
    "admin": AdminConfig,
    "limits": LimitsConfig,
}
"""Each table of feedpub.toml and the dataclass whose fields are its keys."""
_ARRAYS_OF_TABLES = frozenset({"newsletter"})
_TOML_NAMES: dict[tuple[type[Any], str], str] = {(MailConfig, "from_address"): "from"}
"""Fields whose key in the file is not their name."""
_FLATTENED: dict[tuple[type[Any], str], type[Any]] = {(MailConfig, "dkim"): DkimConfig}
"""Fields set by prefixed keys in the same table (``dkim_selector`` -> ``dkim.selector``)."""


def _toml_key(schema: type[Any], name: str) -> str:
    return _TOML_NAMES.get((schema, name), name)


def _toml_keys(schema: type[Any], prefix: str = "") -> Iterator[str]:
    for item in fields(schema):
        inner = _FLATTENED.get((schema, item.name))
        if inner is not None:
            yield from _toml_keys(inner, f"{prefix}{item.name}_")
        else:
            yield prefix + _toml_key(schema, item.name)


KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(table for table in _TABLES if "." not in table),
    **{table: frozenset(_toml_keys(schema)) for table, schema in _TABLES.items()},
}
"""Every key feedpub.toml may set, by table (``""`` is the top level); others are typos."""


def _field_default(schema: type[Any], name: str) -> Any:
    """The dataclass default of a field; None when the field has none (it is required)."""
    for item in fields(schema):
        if item.name == name:
            if item.default is not MISSING:
                return item.default
            if item.default_factory is not MISSING:
                return item.default_factory()
            return None
    raise AssertionError(f"{schema.__name__} has no field {name!r}")


def toml_error(error: tomllib.TOMLDecodeError) -> tuple[str, int | None]:
    """A TOML syntax error's message without its position, and the 1-based line it names."""
    text = str(error)
    line: int | None = getattr(error, "lineno", None)
    position = re.search(r"\s*\(at line (\d+), column \d+\)", text)
    if position:
        text = text[: position.start()] + text[position.end() :]
        if line is None:
            line = int(position[1])
    return text, line


# --- reading typed values, naming file, line and key on error -----------------------


class _Reader:
    """Reads one parsed TOML document, naming key and line on error."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, dotted: str) -> int | None:
        """The line where ``dotted`` (``site.url``, ``newsletter[1].name``) is set."""
        *tables, leaf = dotted.split(".")
        table = ".".join(re.sub(r"\[\d+\]$", "", part) for part in tables)
        index_match = re.search(r"\[(\d+)\]$", tables[-1]) if tables else None
        wanted_index = int(index_match.group(1)) if index_match else 0
        leaf = re.sub(r"\[\d+\]$", "", leaf)
        key = re.compile(rf"^\s*\"?{re.escape(leaf)}\"?\s*=")
        inline = re.compile(rf"[{{,]\s*{re.escape(leaf)}\s*=")
        in_table = not table
        seen = -1
        for number, line in enumerate(self.lines, start=1):
            header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
            if header:
                if header.group(1) == table:
                    seen += 1
                in_table = header.group(1) == table and seen == wanted_index
                if in_table and not leaf:
                    return number
                continue
            if in_table and key.match(line):
                return number
        parent = tables[-1] if tables else ""
        for number, line in enumerate(self.lines, start=1):
            if parent and re.match(rf"^\s*{re.escape(parent)}\s*=", line) and inline.search(line):
                return number
        return None

    def error(self, dotted: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line_of(dotted), key=dotted)

    def unknown(self, dotted: str, known: frozenset[str], *, table: bool) -> ConfigError:
        """A key or table feedpub does not read, with the nearest known name."""
        name = re.sub(r"^.*\.", "", dotted)
        kind = "table" if table else "key"
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        line = self.line_of(dotted)
        if line is None and table:
            line = self.line_of(dotted + ".")
        return ConfigError(f"unknown {kind} ({hint})", path=self.path, line=line, key=dotted)

    def check_known(self, data: Mapping[str, Any], schema: str = "", dotted: str = "") -> None:
        """Refuse keys that no setting reads: a typo must not pass for a default."""
        known = KNOWN_KEYS[schema]
        for key, value in data.items():
            here = f"{dotted}.{key}" if dotted else key
            if key not in known:
                raise self.unknown(here, known, table=isinstance(value, dict))
            inner = f"{schema}.{key}" if schema else key
            if inner not in KNOWN_KEYS:
                continue
            if inner in _ARRAYS_OF_TABLES and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict):
                        self.check_known(item, inner, f"{here}[{index}]")
            elif isinstance(value, dict):
                self.check_known(value, inner, here)

    def table(self, data: Mapping[str, Any], name: str) -> _Table:
        """The table ``name`` (``site``, ``mail``…); an empty one when the file leaves it out."""
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, "must be a table")
        return _Table(self, value, name, _TABLES[name])


_FROM_FIELD: Any = object()
"""Stands for "the dataclass field's default" in :class:`_Table`'s reads."""


class _Table:
    """The keys of one table that fill one dataclass: each key's name in the file, its
    place in messages and its default come from the dataclass's fields."""

    def __init__(
        self, reader: _Reader, data: Mapping[str, Any], where: str, schema: type[Any],
        prefix: str = "",
    ) -> None:
        self.reader = reader
        self.data = data
        self.where = where
        self.schema = schema
        self.prefix = prefix

    def part(self, name: str) -> _Table:
        """The dataclass of field ``name``, set by prefixed keys of this same table."""
        return _Table(
            self.reader, self.data, self.where, _FLATTENED[(self.schema, name)],
            prefix=f"{self.prefix}{name}_",
        )

    def key(self, name: str) -> str:
        return self.prefix + _toml_key(self.schema, name)

    def dotted(self, name: str) -> str:
        return f"{self.where}.{self.key(name)}"

    def error(self, name: str, message: str) -> ConfigError:
        return self.reader.error(self.dotted(name), message)

    def default(self, name: str) -> Any:
        return _field_default(self.schema, name)

    def given(self, name: str) -> bool:
        return self.data.get(self.key(name)) is not None

    def _value(self, name: str, default: Any) -> Any:
        if default is _FROM_FIELD:
            default = self.default(name)
        return self.data.get(self.key(name), default)

    def string(self, name: str, default: str | None = _FROM_FIELD) -> str:
        value = self._value(name, default)
        if value is None:
            raise self.error(name, "is required")
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, not {type(value).__name__}")
        return value

    def optional_string(self, name: str) -> str | None:
        return self.string(name) if self.given(name) else None

    def integer(self, name: str, *, minimum: int = 0) -> int:
        value = self._value(name, _FROM_FIELD)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be a whole number, not {value!r}")
        if value < minimum:
            raise self.error(name, f"must be at least {minimum}, not {value}")
        return value

    def number(self, name: str) -> float:
        value = self._value(name, _FROM_FIELD)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, not {value!r}")
        if value < 0:
            raise self.error(name, f"must not be negative, not {value}")
        return float(value)

    def boolean(self, name: str, default: bool = _FROM_FIELD) -> bool:
        value = self._value(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, not {value!r}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._value(name, _FROM_FIELD)
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "must be a list of strings")
        return tuple(value)


# --- checks that need more than a type ---------------------------------------------


def _absolute_url(table: _Table, name: str, default: str | None = _FROM_FIELD) -> str:
    value = table.string(name, default)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(name, f"must be an absolute http(s) URL, not {value!r}")
    return value if value.endswith("/") else value + "/"


def _address(table: _Table, name: str, value: str) -> str:
    _, email = parseaddr(value)
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise table.error(
            name, f"must be an email address such as 'Name <news@example.com>', not {value!r}"
        )
    return value


def _optional_address(table: _Table, name: str) -> str | None:
    value = table.optional_string(name)
    return _address(table, name, value) if value else None


def _resolve_sqlite(url: str, site_dir: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((site_dir / url[len(prefix) :]).resolve())
    return url


def _in_site(transport: TransportConfig, site_dir: Path) -> TransportConfig:
    if isinstance(transport, MaildirConfig) and not transport.path.is_absolute():
        return MaildirConfig((site_dir / transport.path).resolve())
    return transport


Blame = Callable[[str], ConfigError]


def _overridable(
    table: _Table, env: Mapping[str, str], variable: str, name: str
) -> tuple[str | None, Blame]:
    """A string the environment may override (None when neither sets it), and how to
    blame it: a bad value from the environment names its variable, not a line of the
    file that it replaced."""
    value = env.get(variable)
    if value:
        return value, lambda message: ConfigError(message, key=variable)
    return table.optional_string(name), lambda message: table.error(name, message)


def _check_language(site: _Table, language: str) -> None:
    """Parse the tag as the newsletter templates will; a tag without a catalog (``de``,
    ``pt-BR``) is fine and gets English words."""
    if not language.strip():
        raise site.error("language", f"must not be empty: use a tag such as {LANGUAGE_EXAMPLES}")
    try:
        parse_locale(language)
    except ValueError as exc:
        raise site.error("language", f"{exc}: use a tag such as {LANGUAGE_EXAMPLES}") from None


def _check_permalink(site: _Table, permalink: str) -> None:
    if "{slug}" not in permalink:
        raise site.error("permalink", "must contain {slug}")
    unknown = set(re.findall(r"\{(\w+)\}", permalink)) - {
        "year", "month", "day", "slug", "category",
    }
    if unknown:
        raise site.error(
            "permalink",
            f"unknown placeholder {{{sorted(unknown)[0]}}} "
            "(use {year}, {month}, {day}, {slug}, {category})",
        )


def _read_secret(site_dir: Path, env: Mapping[str, str]) -> str | None:
    if env.get("FEEDPUB_SECRET"):
        return env["FEEDPUB_SECRET"]
    secret_file = site_dir / SECRET_FILE_NAME
    if secret_file.is_file():
        return secret_file.read_text(encoding="utf-8").strip() or None
    return None


# --- loading -----------------------------------------------------------------------


def load_settings(site_dir: Path | str, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``feedpub.toml`` in ``site_dir``, apply ``FEEDPUB_*`` overrides, validate."""
    site_dir = Path(site_dir).resolve()
    env = os.environ if env is None else env
    path = site_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no {CONFIG_NAME} here: run `feedpub init {site_dir}` or pass --site DIR",
            path=path,
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 ({exc.reason})", path=path) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = toml_error(exc)
        raise ConfigError(f"invalid TOML: {message}", path=path, line=line) from None
    return parse_settings(data, site_dir=site_dir, path=path, text=text, env=env)


def parse_settings(
    data: Mapping[str, Any],
    *,
    site_dir: Path,
    path: Path,
    text: str = "",
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = {} if env is None else env
    r = _Reader(path, text)
    r.check_known(data)

    site_config = _read_site(r, data)
    feed_config = _read_feed(r, data)
    return Settings(
        site_dir=site_dir,
        config_path=path,
        site=site_config,
        feed=feed_config,
        mail=_read_mail(r, data, site_config, site_dir, env),
        database=_read_database(r, data, site_dir, env),
        web=_read_web(r, data, site_config),
        scheduler=_read_scheduler(r, data),
        newsletters=_read_newsletters(r, data, site_config, feed_config),
        secret=_read_secret(site_dir, env),
        bounces=_read_bounces(r, data),
        pages=_read_pages(r, data),
        admin=_read_admin(r, data, env),
        limits=_read_limits(r, data),
    )


def _read_site(r: _Reader, data: Mapping[str, Any]) -> SiteConfig:
    site = r.table(data, "site")
    timezone = site.string("timezone")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise site.error("timezone", f"unknown IANA time zone {timezone!r}") from None
    author_data = site.data.get("author", {})
    if isinstance(author_data, str):
        author_data = {"name": author_data}
    if not isinstance(author_data, dict):
        raise site.error("author", "must be a table such as { name = '…', email = '…' }")
    author = _Table(r, author_data, "site.author", Author)
    permalink = site.string("permalink")
    _check_permalink(site, permalink)
    title = site.string("title")
    language = site.string("language")
    _check_language(site, language)
    return SiteConfig(
        title=title,
        url=_absolute_url(site, "url"),
        description=site.string("description"),
        language=language,
        timezone=timezone,
        author=Author(name=author.string("name", title), email=author.optional_string("email")),
        permalink=permalink,
        excerpt_separator=site.string("excerpt_separator"),
        summary_length=site.integer("summary_length", minimum=20),
    )


def _read_feed(r: _Reader, data: Mapping[str, Any]) -> FeedConfig:
    feed = r.table(data, "feed")
    formats = feed.strings("formats")
    for name in formats:
        if name not in FEED_FORMATS:
            raise feed.error("formats", f"unknown format {name!r} (use atom, rss, json)")
    return FeedConfig(
        limit=feed.integer("limit", minimum=1),
        full_content=feed.boolean("full_content"),
        formats=formats,
        xslt=feed.boolean("xslt"),
    )


def _read_mail(
    r: _Reader, data: Mapping[str, Any], site: SiteConfig, site_dir: Path,
    env: Mapping[str, str],
) -> MailConfig:
    mail = r.table(data, "mail")
    written, blame = _overridable(mail, env, MAIL_TRANSPORT_VARIABLE, "transport")
    try:
        transport = mail.default("transport") if written is None else parse_transport(written)
    except ConfigError as error:
        raise blame(error.message) from None
    dkim = _read_dkim(mail.part("dkim"), site_dir)
    from_address = mail.string("from_address", f"{site.title} <news@{site.host}>")
    return MailConfig(
        from_address=_address(mail, "from_address", from_address),
        reply_to=_optional_address(mail, "reply_to"),
        transport=_in_site(transport, site_dir),
        rate_limit=mail.number("rate_limit"),
        envelope_from=_optional_address(mail, "envelope_from"),
        postal_address=mail.string("postal_address"),
        max_html_bytes=mail.integer("max_html_bytes", minimum=10_000),
        dkim=dkim,
        verp_domain=_verp_domain(mail),
        verp_local_part=_verp_local_part(mail),
        soft_bounce_limit=mail.integer("soft_bounce_limit", minimum=1),
        soft_bounce_days=mail.integer("soft_bounce_days", minimum=1),
        allow_local_addresses=mail.boolean("allow_local_addresses"),
    )


def _read_dkim(dkim: _Table, site_dir: Path) -> DkimConfig | None:
    """The ``dkim_*`` keys of ``[mail]``: none, or the RSA key's three, and optionally both
    ``dkim_ed25519_*`` keys for a second signature."""

    def given(name: str) -> bool:  # an empty string leaves a key unset, as it always did
        return bool(dkim.data.get(dkim.key(name)))

    if not any(given(item.name) for item in fields(DkimConfig)):
        return None

    def in_site(name: str) -> Path:
        path = Path(dkim.string(name))
        return path if path.is_absolute() else site_dir / path

    selector = dkim.string("selector")
    ed25519_selector: str | None = None
    ed25519_key_file: Path | None = None
    if given("ed25519_selector") or given("ed25519_key_file"):
        ed25519_selector = dkim.string("ed25519_selector")
        ed25519_key_file = in_site("ed25519_key_file")
        if ed25519_selector == selector:
            raise dkim.error("ed25519_selector", (
                f"must differ from {dkim.key('selector')} ({selector!r}): each key is "
                "published in a DNS record of its own, SELECTOR._domainkey.DOMAIN"))
    return DkimConfig(
        selector=selector,
        domain=dkim.string("domain"),
        key_file=in_site("key_file"),
        ed25519_selector=ed25519_selector,
        ed25519_key_file=ed25519_key_file,
    )


def _verp_domain(mail: _Table) -> str | None:
    domain = mail.optional_string("verp_domain")
    if domain is not None and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?",
                                               domain):
        raise mail.error("verp_domain", f"must be a domain such as 'bounces.example.com', "
                                        f"not {domain!r}")
    return domain


def _verp_local_part(mail: _Table) -> str:
    local = mail.string("verp_local_part")
    # A token of up to 30 characters follows "+": the local part must stay within 64.
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", local):
        raise mail.error("verp_local_part", f"must be 1 to 32 letters, digits, '.', '_' or "
                                            f"'-', not {local!r}")
    return local


def _choice(table: _Table, name: str, allowed: tuple[str, ...]) -> Any:
    value = table.string(name)
    if value not in allowed:
        raise table.error(name, f"must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _env_name(table: _Table, name: str) -> str:
    value = table.string(name)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise table.error(name, f"must name an environment variable, not {value!r}")
    return value


def _read_bounces(r: _Reader, data: Mapping[str, Any]) -> BouncesConfig:
    bounces = r.table(data, "bounces")
    port = bounces.integer("imap_port", minimum=1)
    if port > 65535:
        raise bounces.error("imap_port", f"must be at most 65535, not {port}")
    return BouncesConfig(
        imap_host=bounces.optional_string("imap_host") or None,
        imap_port=port,
        imap_tls=_choice(bounces, "imap_tls", ("ssl", "starttls", "none")),
        imap_user=bounces.string("imap_user"),
        imap_password_env=_env_name(bounces, "imap_password_env"),
        imap_folder=bounces.string("imap_folder"),
        after=_choice(bounces, "after", ("keep", "delete", "move")),
        move_to=bounces.string("move_to"),
        fetch_minutes=bounces.integer("fetch_minutes", minimum=1),
        ses_topic_arns=bounces.strings("ses_topic_arns"),
        postmark_token_env=_env_name(bounces, "postmark_token_env"),
        mailgun_signing_key_env=_env_name(bounces, "mailgun_signing_key_env"),
        sendgrid_public_key_env=_env_name(bounces, "sendgrid_public_key_env"),
        webhook_max_age_seconds=bounces.integer("webhook_max_age_seconds", minimum=1),
    )


def _read_database(
    r: _Reader, data: Mapping[str, Any], site_dir: Path, env: Mapping[str, str]
) -> DatabaseConfig:
    database = r.table(data, "database")
    written, blame = _overridable(database, env, DATABASE_URL_VARIABLE, "url")
    url: str = database.default("url") if written is None else written
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", url):
        raise blame(f"must be sqlite:///FILE or postgresql+psycopg://…, not {url!r}")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return DatabaseConfig(url=_resolve_sqlite(url, site_dir))


def _read_web(r: _Reader, data: Mapping[str, Any], site: SiteConfig) -> WebConfig:
    web = r.table(data, "web")
    origins = web.strings("embed_origins")
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise web.error("embed_origins", f"{origin!r} is not an origin such as "
                            "https://blog.example (scheme and host, no path)")
    return WebConfig(
        url=_absolute_url(web, "url", site.url),
        confirm_days=web.integer("confirm_days", minimum=1),
        embed_origins=tuple(origin.rstrip("/") for origin in origins),
    )


def _read_pages(r: _Reader, data: Mapping[str, Any]) -> PagesConfig:
    pages = r.table(data, "pages")
    return PagesConfig(
        enabled=pages.boolean("enabled"),
        home_limit=pages.integer("home_limit", minimum=1),
    )


def _read_limits(r: _Reader, data: Mapping[str, Any]) -> LimitsConfig:
    limits = r.table(data, "limits")
    render_seconds = limits.number("render_seconds")
    if render_seconds <= 0:
        raise limits.error("render_seconds", "must be more than 0")
    return LimitsConfig(
        post_bytes=limits.integer("post_bytes", minimum=1000),
        nesting=limits.integer("nesting", minimum=4),
        render_seconds=render_seconds,
    )


def _read_admin(r: _Reader, data: Mapping[str, Any], env: Mapping[str, str]) -> AdminConfig:
    admin = r.table(data, "admin")
    password_hash, blame = _overridable(admin, env, ADMIN_PASSWORD_HASH_VARIABLE,
                                        "password_hash")
    if password_hash and not password_hash.startswith("$argon2"):
        raise blame("must be an Argon2 hash made by `feedpub admin set-password`")
    user = admin.string("user").strip()
    if not user:
        raise admin.error("user", "must not be empty")
    return AdminConfig(password_hash=password_hash or None, user=user,
                       session_hours=admin.integer("session_hours", minimum=1))


def _read_scheduler(r: _Reader, data: Mapping[str, Any]) -> SchedulerConfig:
    scheduler = r.table(data, "scheduler")
    return SchedulerConfig(
        misfire_grace_hours=scheduler.number("misfire_grace_hours"),
        tick_seconds=scheduler.integer("tick_seconds", minimum=1),
    )


def _read_newsletters(
    r: _Reader, data: Mapping[str, Any], site: SiteConfig, feed: FeedConfig
) -> tuple[NewsletterConfig, ...]:
    raw_newsletters = data.get("newsletter", [{"name": "weekly"}])
    if not isinstance(raw_newsletters, list) or not raw_newsletters:
        raise r.error("newsletter", "must be one or more [[newsletter]] tables")
    newsletters: list[NewsletterConfig] = []
    for index, item in enumerate(raw_newsletters):
        where = f"newsletter[{index}]"
        if not isinstance(item, dict):
            raise r.error(where, "must be a table")
        newsletter = _Table(r, item, where, NewsletterConfig)
        name = newsletter.string("name")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise newsletter.error(
                "name",
                f"{name!r} must be lower-case letters, digits, '-' or '_' (it is used in URLs)",
            )
        if any(n.name == name for n in newsletters):
            raise newsletter.error("name", f"another newsletter is already named {name!r}")
        schedule = newsletter.string("schedule")
        try:
            parse_schedule(schedule, site.tz)
        except ConfigError as error:
            raise newsletter.error("schedule", error.message) from None
        newsletters.append(
            NewsletterConfig(
                name=name,
                title=newsletter.string("title", f"{site.title}: {name}"),
                schedule=schedule,
                categories=newsletter.strings("categories"),
                subject=newsletter.optional_string("subject"),
                full_content=newsletter.boolean("full_content", feed.full_content),
                description=newsletter.string("description"),
            )
        )
    return tuple(newsletters)
