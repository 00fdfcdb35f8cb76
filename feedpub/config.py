"""Settings from ``feedpub.toml`` and ``FEEDPUB_*`` environment overrides, validated once."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from feedpub.errors import ConfigError
from feedpub.mail.i18n import parse_locale
from feedpub.mail.transports import parse_smtp_url
from feedpub.schedules import parse_schedule

CONFIG_NAME = "feedpub.toml"
SECRET_FILE_NAME = ".feedpub-secret"
FEED_FORMATS = ("atom", "rss", "json")
DATABASE_URL_VARIABLE = "FEEDPUB_DATABASE_URL"
MAIL_TRANSPORT_VARIABLE = "FEEDPUB_MAIL_TRANSPORT"
LANGUAGE_EXAMPLES = "en, de, pt-BR, zh-TW, zh-CN or ja"

KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"site", "feed", "mail", "database", "web", "scheduler", "newsletter"}),
    "site": frozenset({
        "title", "url", "description", "language", "timezone", "author", "permalink",
        "excerpt_separator", "summary_length",
    }),
    "site.author": frozenset({"name", "email"}),
    "feed": frozenset({"limit", "full_content", "formats"}),
    "mail": frozenset({
        "from", "reply_to", "transport", "rate_limit", "envelope_from", "postal_address",
        "max_html_bytes", "dkim_selector", "dkim_domain", "dkim_key_file",
    }),
    "database": frozenset({"url"}),
    "web": frozenset({"url", "confirm_days"}),
    "scheduler": frozenset({"misfire_grace_hours", "tick_seconds"}),
    "newsletter": frozenset({
        "name", "title", "schedule", "categories", "subject", "full_content", "description",
    }),
}
"""Every key feedpub.toml may set, by table (``""`` is the top level); others are typos."""
_ARRAYS_OF_TABLES = frozenset({"newsletter"})


@dataclass(frozen=True)
class Author:
    name: str
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


@dataclass(frozen=True)
class DkimConfig:
    selector: str
    domain: str
    key_file: Path


@dataclass(frozen=True)
class MailConfig:
    from_address: str = "feedpub <news@localhost>"
    reply_to: str | None = None
    transport: str = "maildir:outbox"
    """``maildir:PATH`` (relative to the site) or ``smtp://user:pass@host:port?tls=…``."""
    rate_limit: float = 20.0
    """Messages per second, all workers together; 0 means unlimited."""
    envelope_from: str | None = None
    """Return-Path for bounces; defaults to the From address."""
    postal_address: str = ""
    max_html_bytes: int = 102_000
    dkim: DkimConfig | None = None

    @property
    def from_email(self) -> str:
        return parseaddr(self.from_address)[1]

    @property
    def from_domain(self) -> str:
        return self.from_email.rpartition("@")[2]


@dataclass(frozen=True)
class DatabaseConfig:
    url: str


@dataclass(frozen=True)
class WebConfig:
    url: str
    """Where ``feedpub serve`` is reachable from subscribers; links in email point here."""
    confirm_days: int = 7


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
    schedule: str = "0 9 * * MON"
    categories: tuple[str, ...] = ()
    subject: str | None = None
    """A jinja2 template; None means the site title and the first entry's title."""
    full_content: bool = True
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


class _Reader:
    """Reads typed values out of one parsed TOML document, naming key and line on error."""

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

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return value

    def string(
        self, data: Mapping[str, Any], key: str, dotted: str, default: str | None = None
    ) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.error(dotted, "is required")
        if not isinstance(value, str):
            raise self.error(dotted, f"must be a string, not {type(value).__name__}")
        return value

    def optional_string(self, data: Mapping[str, Any], key: str, dotted: str) -> str | None:
        if data.get(key) is None:
            return None
        return self.string(data, key, dotted)

    def integer(
        self, data: Mapping[str, Any], key: str, dotted: str, default: int, minimum: int = 0
    ) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(dotted, f"must be a whole number, not {value!r}")
        if value < minimum:
            raise self.error(dotted, f"must be at least {minimum}, not {value}")
        return value

    def number(self, data: Mapping[str, Any], key: str, dotted: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(dotted, f"must be a number, not {value!r}")
        if value < 0:
            raise self.error(dotted, f"must not be negative, not {value}")
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, dotted: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(dotted, f"must be true or false, not {value!r}")
        return value

    def strings(
        self, data: Mapping[str, Any], key: str, dotted: str, default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        value = data.get(key, list(default))
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(dotted, "must be a list of strings")
        return tuple(value)


def _absolute_url(reader: _Reader, value: str, dotted: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.error(dotted, f"must be an absolute http(s) URL, not {value!r}")
    return value if value.endswith("/") else value + "/"


def _address(reader: _Reader, value: str, dotted: str) -> str:
    _, email = parseaddr(value)
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise reader.error(
            dotted, f"must be an email address such as 'Name <news@example.com>', not {value!r}"
        )
    return value


def _resolve_sqlite(url: str, site_dir: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str((site_dir / url[len(prefix) :]).resolve())
    return url


def _resolve_maildir(transport: str, site_dir: Path) -> str:
    if transport.startswith("maildir:"):
        path = Path(transport[len("maildir:") :])
        return "maildir:" + str(path if path.is_absolute() else (site_dir / path).resolve())
    return transport


Blame = Callable[[str], ConfigError]


def _overridable(
    r: _Reader,
    env: Mapping[str, str],
    variable: str,
    table: Mapping[str, Any],
    key: str,
    dotted: str,
    default: str,
) -> tuple[str, Blame]:
    """A string the environment may override, and how to blame it: a bad value from
    the environment names its variable, not a line of the file that it replaced."""
    value = env.get(variable)
    if value:
        return value, lambda message: ConfigError(message, key=variable)
    return r.string(table, key, dotted, default), lambda message: r.error(dotted, message)


def _check_language(r: _Reader, language: str) -> None:
    """Parse the tag as the newsletter templates will; a tag without a catalog (``de``,
    ``pt-BR``) is fine and gets English words."""
    if not language.strip():
        raise r.error("site.language", f"must not be empty: use a tag such as {LANGUAGE_EXAMPLES}")
    try:
        parse_locale(language)
    except ValueError as exc:
        raise r.error("site.language", f"{exc}: use a tag such as {LANGUAGE_EXAMPLES}") from None


def _check_transport(transport: str, blame: Blame) -> None:
    if transport.startswith("maildir:"):
        if not transport[len("maildir:") :].strip():
            raise blame("'maildir:' needs a folder, e.g. 'maildir:outbox'")
        return
    if urlsplit(transport).scheme not in ("smtp", "smtps"):
        raise blame(
            f"must be 'maildir:PATH' or 'smtp://user:pass@host:port?tls=starttls', "
            f"not {transport!r}"
        )
    try:
        parse_smtp_url(transport)
    except ConfigError as error:
        raise blame(error.message) from None


def _read_secret(site_dir: Path, env: Mapping[str, str]) -> str | None:
    if env.get("FEEDPUB_SECRET"):
        return env["FEEDPUB_SECRET"]
    secret_file = site_dir / SECRET_FILE_NAME
    if secret_file.is_file():
        return secret_file.read_text(encoding="utf-8").strip() or None
    return None


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
        line = getattr(exc, "lineno", None)
        match = re.search(r"\(at line (\d+)", str(exc))
        if line is None and match:
            line = int(match.group(1))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
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

    site = r.table(data, "site")
    timezone = r.string(site, "timezone", "site.timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.error("site.timezone", f"unknown IANA time zone {timezone!r}") from None
    author_data = site.get("author", {})
    if isinstance(author_data, str):
        author_data = {"name": author_data}
    if not isinstance(author_data, dict):
        raise r.error("site.author", "must be a table such as { name = '…', email = '…' }")
    permalink = r.string(site, "permalink", "site.permalink", "/{year}/{month}/{day}/{slug}/")
    if "{slug}" not in permalink:
        raise r.error("site.permalink", "must contain {slug}")
    unknown = set(re.findall(r"\{(\w+)\}", permalink)) - {
        "year", "month", "day", "slug", "category",
    }
    if unknown:
        raise r.error(
            "site.permalink",
            f"unknown placeholder {{{sorted(unknown)[0]}}} "
            "(use {year}, {month}, {day}, {slug}, {category})",
        )
    title = r.string(site, "title", "site.title")
    language = r.string(site, "language", "site.language", "en")
    _check_language(r, language)
    site_url = _absolute_url(r, r.string(site, "url", "site.url"), "site.url")
    site_config = SiteConfig(
        title=title,
        url=site_url,
        description=r.string(site, "description", "site.description", ""),
        language=language,
        timezone=timezone,
        author=Author(
            name=r.string(author_data, "name", "site.author.name", title),
            email=r.optional_string(author_data, "email", "site.author.email"),
        ),
        permalink=permalink,
        excerpt_separator=r.string(
            site, "excerpt_separator", "site.excerpt_separator", "<!--more-->"
        ),
        summary_length=r.integer(site, "summary_length", "site.summary_length", 280, minimum=20),
    )

    feed = r.table(data, "feed")
    formats = r.strings(feed, "formats", "feed.formats", FEED_FORMATS)
    for name in formats:
        if name not in FEED_FORMATS:
            raise r.error("feed.formats", f"unknown format {name!r} (use atom, rss, json)")
    feed_config = FeedConfig(
        limit=r.integer(feed, "limit", "feed.limit", 20, minimum=1),
        full_content=r.boolean(feed, "full_content", "feed.full_content", True),
        formats=formats,
    )

    mail = r.table(data, "mail")
    transport, blame_transport = _overridable(
        r, env, MAIL_TRANSPORT_VARIABLE, mail, "transport", "mail.transport", "maildir:outbox"
    )
    _check_transport(transport, blame_transport)
    dkim = None
    if mail.get("dkim_selector") or mail.get("dkim_domain") or mail.get("dkim_key_file"):
        key_file = Path(r.string(mail, "dkim_key_file", "mail.dkim_key_file"))
        dkim = DkimConfig(
            selector=r.string(mail, "dkim_selector", "mail.dkim_selector"),
            domain=r.string(mail, "dkim_domain", "mail.dkim_domain"),
            key_file=key_file if key_file.is_absolute() else site_dir / key_file,
        )
    from_address = _address(
        r, r.string(mail, "from", "mail.from", f"{title} <news@{urlsplit(site_url).hostname}>"),
        "mail.from",
    )
    reply_to = r.optional_string(mail, "reply_to", "mail.reply_to")
    envelope_from = r.optional_string(mail, "envelope_from", "mail.envelope_from")
    mail_config = MailConfig(
        from_address=from_address,
        reply_to=_address(r, reply_to, "mail.reply_to") if reply_to else None,
        transport=_resolve_maildir(transport, site_dir),
        rate_limit=r.number(mail, "rate_limit", "mail.rate_limit", 20.0),
        envelope_from=_address(r, envelope_from, "mail.envelope_from") if envelope_from else None,
        postal_address=r.string(mail, "postal_address", "mail.postal_address", ""),
        max_html_bytes=r.integer(
            mail, "max_html_bytes", "mail.max_html_bytes", 102_000, minimum=10_000
        ),
        dkim=dkim,
    )

    database = r.table(data, "database")
    db_url, blame_db_url = _overridable(
        r, env, DATABASE_URL_VARIABLE, database, "url", "database.url", "sqlite:///feedpub.db"
    )
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", db_url):
        raise blame_db_url(f"must be sqlite:///FILE or postgresql+psycopg://…, not {db_url!r}")
    if db_url.startswith("postgresql://"):
        db_url = "postgresql+psycopg://" + db_url[len("postgresql://") :]

    web = r.table(data, "web")
    web_config = WebConfig(
        url=_absolute_url(r, r.string(web, "url", "web.url", site_url), "web.url"),
        confirm_days=r.integer(web, "confirm_days", "web.confirm_days", 7, minimum=1),
    )

    scheduler = r.table(data, "scheduler")
    scheduler_config = SchedulerConfig(
        misfire_grace_hours=r.number(
            scheduler, "misfire_grace_hours", "scheduler.misfire_grace_hours", 6.0
        ),
        tick_seconds=r.integer(scheduler, "tick_seconds", "scheduler.tick_seconds", 60, minimum=1),
    )

    raw_newsletters = data.get("newsletter", [{"name": "weekly"}])
    if not isinstance(raw_newsletters, list) or not raw_newsletters:
        raise r.error("newsletter", "must be one or more [[newsletter]] tables")
    newsletters: list[NewsletterConfig] = []
    for index, item in enumerate(raw_newsletters):
        prefix = f"newsletter[{index}]"
        if not isinstance(item, dict):
            raise r.error(prefix, "must be a table")
        name = r.string(item, "name", f"{prefix}.name")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise r.error(
                f"{prefix}.name",
                f"{name!r} must be lower-case letters, digits, '-' or '_' (it is used in URLs)",
            )
        if any(n.name == name for n in newsletters):
            raise r.error(f"{prefix}.name", f"another newsletter is already named {name!r}")
        schedule = r.string(item, "schedule", f"{prefix}.schedule", "0 9 * * MON")
        try:
            parse_schedule(schedule, ZoneInfo(timezone))
        except ConfigError as error:
            raise r.error(f"{prefix}.schedule", error.message) from None
        newsletters.append(
            NewsletterConfig(
                name=name,
                title=r.string(item, "title", f"{prefix}.title", f"{title}: {name}"),
                schedule=schedule,
                categories=r.strings(item, "categories", f"{prefix}.categories"),
                subject=r.optional_string(item, "subject", f"{prefix}.subject"),
                full_content=r.boolean(
                    item, "full_content", f"{prefix}.full_content", feed_config.full_content
                ),
                description=r.string(item, "description", f"{prefix}.description", ""),
            )
        )

    return Settings(
        site_dir=site_dir,
        config_path=path,
        site=site_config,
        feed=feed_config,
        mail=mail_config,
        database=DatabaseConfig(url=_resolve_sqlite(db_url, site_dir)),
        web=web_config,
        scheduler=scheduler_config,
        newsletters=tuple(newsletters),
        secret=_read_secret(site_dir, env),
    )
