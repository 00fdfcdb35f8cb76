from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.config import (
    KNOWN_KEYS,
    Author,
    DatabaseConfig,
    FeedConfig,
    MaildirConfig,
    SchedulerConfig,
    SmtpConfig,
    TransportConfig,
    load_settings,
    parse_smtp_url,
    parse_transport,
)
from feedpub.errors import ConfigError
from feedpub.i18n import site_language
from feedpub.scaffold import init_site
from tests.conftest import BASIC_CONFIG, SiteFactory


def test_defaults_fill_what_the_file_leaves_out(make_site: SiteFactory) -> None:
    site = make_site(config='[site]\ntitle = "T"\nurl = "https://ex.org/blog"\n')
    settings = load_settings(site, env={})
    assert settings.site.url == "https://ex.org/blog/"
    assert settings.newsletters[0].name == "weekly"
    assert settings.feed.formats == ("atom", "rss", "json")
    assert settings.database.url == f"sqlite:///{site.resolve() / 'feedpub.db'}"
    assert settings.mail.transport == MaildirConfig(site.resolve() / "outbox")
    assert settings.mail.from_email == "news@ex.org"
    assert settings.web.url == "https://ex.org/blog/"
    assert settings.secret is None


def test_a_table_the_file_leaves_out_has_the_dataclass_defaults(make_site: SiteFactory) -> None:
    site = make_site(config='[site]\ntitle = "T"\nurl = "https://ex.org/"\n')
    settings = load_settings(site, env={})
    assert settings.feed == FeedConfig()
    assert settings.scheduler == SchedulerConfig()
    assert (settings.site.language, settings.site.timezone, settings.site.summary_length) == (
        "en", "UTC", 280,
    )
    assert settings.mail.rate_limit == 20.0
    assert settings.web.confirm_days == 7
    assert settings.newsletters[0].schedule == "0 9 * * MON"


def test_the_known_keys_are_the_dataclass_fields() -> None:
    assert KNOWN_KEYS[""] == {
        "site", "feed", "mail", "database", "web", "scheduler", "newsletter", "bounces",
        "pages", "admin", "limits",
    }
    assert KNOWN_KEYS["site.author"] == {"name", "email"}
    assert KNOWN_KEYS["mail"] == {
        "from", "reply_to", "transport", "rate_limit", "envelope_from", "postal_address",
        "max_html_bytes", "dkim_selector", "dkim_domain", "dkim_key_file",
        "dkim_ed25519_selector", "dkim_ed25519_key_file",
        "verp_domain", "verp_local_part", "soft_bounce_limit", "soft_bounce_days",
        "allow_local_addresses",
    }
    assert KNOWN_KEYS["scheduler"] == {"misfire_grace_hours", "tick_seconds"}


IMPORT_RULE = (
    "import sys, feedpub.content; "
    "loaded = {m.split('.')[0] for m in sys.modules}; "
    "assert not {'smtplib', 'babel', 'apscheduler', 'ssl'} & loaded, sorted(loaded)"
)


def test_reading_posts_loads_neither_mail_nor_babel_nor_the_scheduler() -> None:
    """The settings sit at the bottom: build workers import them with every post."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_RULE], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_environment_overrides_the_file(make_site: SiteFactory) -> None:
    site = make_site()
    settings = load_settings(
        site,
        env={
            "FEEDPUB_DATABASE_URL": "postgresql://u@db/feeds",
            "FEEDPUB_MAIL_TRANSPORT": "smtp://mail:25?tls=none",
            "FEEDPUB_SECRET": "s3",
        },
    )
    assert settings.database.url == "postgresql+psycopg://u@db/feeds"
    assert settings.mail.transport == SmtpConfig("mail", 25, "none")
    assert settings.secret == "s3"


def test_secret_file_written_by_init_is_read(make_site: SiteFactory) -> None:
    site = make_site(files={".feedpub-secret": "from-file\n"})
    assert load_settings(site, env={}).secret == "from-file"


@pytest.mark.parametrize(
    ("replace", "by", "key", "line"),
    [
        ('timezone = "UTC"', 'timezone = "Mars/Olympus"', "site.timezone", 6),
        ('url = "https://example.com/"', 'url = "example.com"', "site.url", 3),
        ("limit = 20", "limit = 0", "feed.limit", 11),
        ("full_content = true", 'full_content = "yes"', "feed.full_content", 12),
        ('from = "Test Site <news@example.com>"', 'from = "nobody"', "mail.from", 15),
        ('schedule = "0 9 * * MON"', 'schedule = "weekly"', "newsletter[0].schedule", 22),
    ],
)
def test_a_bad_value_names_key_file_and_line(
    make_site: SiteFactory, replace: str, by: str, key: str, line: int
) -> None:
    assert replace in BASIC_CONFIG
    site = make_site(config=BASIC_CONFIG.replace(replace, by))
    with pytest.raises(ConfigError) as caught:
        load_settings(site, env={})
    error = caught.value
    assert error.key == key
    assert error.line == line
    assert error.path == site.resolve() / "feedpub.toml"
    assert str(error).startswith(f"{site.resolve() / 'feedpub.toml'}:{line}: {key}: ")
    assert error.exit_code == 2


def test_broken_toml_reports_its_line(make_site: SiteFactory) -> None:
    site = make_site(config='[site]\ntitle = "T"\nurl = "https://e.com/\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(site, env={})
    assert caught.value.line == 3
    assert "invalid TOML" in str(caught.value)


def test_missing_config_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="feedpub init"):
        load_settings(tmp_path, env={})


def test_duplicate_newsletter_names_are_refused(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG + '\n[[newsletter]]\nname = "weekly"\n'
    with pytest.raises(ConfigError, match="already named 'weekly'") as caught:
        load_settings(make_site(config=config), env={})
    assert caught.value.line == 25


def test_newsletter_lookup(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG + '\n[[newsletter]]\nname = "daily"\nschedule = "0 7 * * *"\n'
    settings = load_settings(make_site(config=config), env={})
    assert settings.newsletter(None).name == "weekly"
    assert settings.newsletter("daily").schedule == "0 7 * * *"
    with pytest.raises(ConfigError, match="weekly, daily"):
        settings.newsletter("monthly")


def test_require_secret_says_how_to_set_one(make_site: SiteFactory) -> None:
    settings = load_settings(make_site(), env={})
    with pytest.raises(ConfigError, match="FEEDPUB_SECRET"):
        settings.require_secret()


def test_a_key_inside_an_inline_table_points_at_its_line(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG.replace('email = "ada@example.com"', "email = 7")
    with pytest.raises(ConfigError) as caught:
        load_settings(make_site(config=config), env={})
    assert (caught.value.key, caught.value.line) == ("site.author.email", 7)


# --- everything is validated at load -------------------------------------------------


@pytest.mark.parametrize(
    ("replace", "by", "key", "line", "fragment"),
    [
        ('schedule = "0 9 * * MON"', 'schedule = "61 9 * * MON"', "newsletter[0].schedule", 22,
         "(61) is higher than the maximum value (59)"),
        ('schedule = "0 9 * * MON"', 'schedule = "0 9 * * 8"', "newsletter[0].schedule", 22,
         "'8' is not a day of the week"),
        ('schedule = "0 9 * * MON"', 'schedule = "0 9 * * FRI-MON"', "newsletter[0].schedule",
         22, "runs backwards"),
        ('transport = "maildir:outbox"', 'transport = "smtp://h:99999"', "mail.transport", 16,
         "the port must be a number from 1 to 65535"),
        ('transport = "maildir:outbox"', 'transport = "smtp://mail.example.com?tls=tls13"',
         "mail.transport", 16, "tls must be starttls, ssl or none, not 'tls13'"),
        ('transport = "maildir:outbox"', 'transport = "smtps://h?tls=none"', "mail.transport",
         16, "smtps:// always uses tls=ssl"),
        ('transport = "maildir:outbox"', 'transport = "maildir:"', "mail.transport", 16,
         "needs a folder"),
        ('language = "en"', 'language = "xx-!!"', "site.language", 5,
         "unknown language tag 'xx-!!'"),
        ('language = "en"', 'language = ""', "site.language", 5, "must not be empty"),
    ],
)
def test_values_that_would_fail_later_fail_at_load(
    make_site: SiteFactory, replace: str, by: str, key: str, line: int, fragment: str
) -> None:
    assert replace in BASIC_CONFIG
    site = make_site(config=BASIC_CONFIG.replace(replace, by))
    with pytest.raises(ConfigError) as caught:
        load_settings(site, env={})
    error = caught.value
    assert (error.key, error.line, error.path) == (key, line, site.resolve() / "feedpub.toml")
    assert fragment in error.message
    assert "\n" not in str(error)


def test_an_smtp_password_stays_out_of_the_error(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG.replace(
        'transport = "maildir:outbox"', 'transport = "smtp://ada:hunter2@h:99999"'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(make_site(config=config), env={})
    assert "hunter2" not in str(caught.value)
    assert caught.value.line == 16


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        ("smtp://user:p%40ss@smtp.example.com:587?tls=starttls",
         SmtpConfig("smtp.example.com", 587, "starttls", "user", "p@ss")),
        ("smtps://h", SmtpConfig("h", 465, "ssl")),
        ("smtp://h?tls=none", SmtpConfig("h", 25, "none")),
        ("maildir:/var/mail/outbox", MaildirConfig(Path("/var/mail/outbox"))),
    ],
)
def test_good_transports_load(
    make_site: SiteFactory, transport: str, expected: TransportConfig
) -> None:
    config = BASIC_CONFIG.replace('transport = "maildir:outbox"', f'transport = "{transport}"')
    assert load_settings(make_site(config=config), env={}).mail.transport == expected


def test_a_relative_maildir_is_in_the_site_even_from_the_environment(
    make_site: SiteFactory,
) -> None:
    site = make_site()
    settings = load_settings(site, env={"FEEDPUB_MAIL_TRANSPORT": "maildir:mail/out"})
    assert settings.mail.transport == MaildirConfig(site.resolve() / "mail" / "out")


# --- the transport URL -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 587, "starttls")),
        ("smtp://mail.example.com?tls=none", SmtpConfig("mail.example.com", 25, "none")),
        ("smtp://mail.example.com?tls=SSL", SmtpConfig("mail.example.com", 465, "ssl")),
        ("smtps://mail.example.com", SmtpConfig("mail.example.com", 465, "ssl")),
        ("SMTP://Mail.Example.com:2525", SmtpConfig("mail.example.com", 2525, "starttls")),
        ("smtp://[::1]:26?tls=none", SmtpConfig("::1", 26, "none")),
        (
            "smtp://apikey:S3cr%2Ft%3F%23@smtp.example.net:587?timeout=2.5&pool=8&helo=me.example",
            SmtpConfig("smtp.example.net", 587, "starttls", "apikey", "S3cr/t?#", 2.5, 8,
                       "me.example"),
        ),
        (
            "smtp://user%40example.com@h?tls=starttls",
            SmtpConfig("h", 587, "starttls", user="user@example.com"),
        ),
    ],
)
def test_smtp_urls(url: str, expected: SmtpConfig) -> None:
    assert parse_smtp_url(url) == expected
    assert parse_transport(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("smtp://", "no host"),
        ("smtp://h:99999", "port"),
        ("smtp://u:pa/ss@h", "port"),
        ("smtp://h?tls=tls", "tls must be"),
        ("smtps://h?tls=starttls", "smtps://"),
        ("smtp://h?tsl=none", "unknown option 'tsl'"),
        ("smtp://h?tls=none&tls=ssl", "twice"),
        ("smtp://h?timeout=0", "timeout"),
        ("smtp://h?timeout=nan", "timeout"),
        ("smtp://h?timeout=soon", "timeout"),
        ("smtp://h?pool=0", "pool"),
        ("smtp://h?pool=2.5", "pool"),
        ("smtp://:hunter2@h", "without a user"),
        ("ftp://h", "must be"),
        ("maildir:", "needs a folder"),
        ("outbox", "must be"),
        ("smtp://[::1", "cannot read the URL"),
    ],
)
def test_bad_transport_urls_name_the_key(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_transport(url)
    assert bad.value.key == "mail.transport"
    assert complaint in str(bad.value)


def test_a_bad_url_does_not_print_the_password() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_transport("smtp://me:hunter2@mail.example.com?tls=bogus")
    assert "hunter2" not in str(bad.value)
    assert "me:***@mail.example.com" in str(bad.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smtp://me:hunter2@mail.example.com", "smtp://me@mail.example.com:587?tls=starttls"),
        ("smtps://[::1]?pool=2", "smtp://[::1]:465?tls=ssl"),
        ("maildir:/var/mail/outbox", "maildir:/var/mail/outbox"),
    ],
)
def test_a_transport_prints_without_its_password(url: str, shown: str) -> None:
    config = parse_transport(url)
    assert str(config) == config.describe() == shown
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(SmtpConfig("h", 25, user="me", password="hunter2"))


@pytest.mark.parametrize("tag", ["de", "pt-BR", "zh-TW", "zh-Hant-TW", "es-419", "ar", "EN"])
def test_language_tags_without_a_catalog_are_accepted(make_site: SiteFactory, tag: str) -> None:
    config = BASIC_CONFIG.replace('language = "en"', f'language = "{tag}"')
    assert load_settings(make_site(config=config), env={}).site.language == tag


MAIL_KEYS = (
    "allow_local_addresses, dkim_domain, dkim_ed25519_key_file, dkim_ed25519_selector, "
    "dkim_key_file, dkim_selector, envelope_from, from, "
    "max_html_bytes, postal_address, rate_limit, reply_to, soft_bounce_days, "
    "soft_bounce_limit, transport, verp_domain, verp_local_part"
)


@pytest.mark.parametrize(
    "tag",
    ["en", "zh-TW", "pt_BR", "de-CH-1996", "en-GB-oxendict", "sr-Latn", "und", "xx", "tlh",
     "x-private", "en-US-u-ca-gregory", "zh-Hant-", "日本語", " en"],
)
def test_load_accepts_a_language_exactly_when_the_newsletters_can_use_it(
    make_site: SiteFactory, tag: str
) -> None:
    try:
        site_language(tag, ZoneInfo("UTC"))
        usable = True
    except ConfigError:
        usable = False
    site = make_site(config=BASIC_CONFIG.replace('language = "en"', f'language = "{tag}"'))
    try:
        load_settings(site, env={})
        loads = True
    except ConfigError as error:
        assert (error.key, error.line) == ("site.language", 5)
        loads = False
    assert loads == usable


@pytest.mark.parametrize(
    ("replace", "by", "key", "line", "hint"),
    [
        ('title = "Test Site"', 'title = "Test Site"\ntitel = "typo"', "site.titel", 3,
         "did you mean 'title'?"),
        ('title = "Test Site"', 'titel = "Test Site"', "site.titel", 2,
         "did you mean 'title'?"),
        ("full_content = true", "full_contents = false", "feed.full_contents", 12,
         "did you mean 'full_content'?"),
        ('email = "ada@example.com"', 'emial = "ada@example.com"', "site.author.emial", 7,
         "did you mean 'email'?"),
        ("rate_limit = 0", "rate_limit = 0\nsmtp_host = 'mail'", "mail.smtp_host", 18,
         f"known: {MAIL_KEYS}"),
    ],
)
def test_an_unknown_key_is_named_with_a_suggestion(
    make_site: SiteFactory, replace: str, by: str, key: str, line: int, hint: str
) -> None:
    assert replace in BASIC_CONFIG
    site = make_site(config=BASIC_CONFIG.replace(replace, by))
    with pytest.raises(ConfigError) as caught:
        load_settings(site, env={})
    error = caught.value
    assert (error.key, error.line) == (key, line)
    assert str(error) == f"{site.resolve() / 'feedpub.toml'}:{line}: {key}: unknown key ({hint})"


def test_an_unknown_key_in_the_second_newsletter_points_at_its_line(
    make_site: SiteFactory,
) -> None:
    config = BASIC_CONFIG + '\n[[newsletter]]\nname = "daily"\nschedulle = "0 7 * * *"\n'
    with pytest.raises(ConfigError, match=r"did you mean 'schedule'\?") as caught:
        load_settings(make_site(config=config), env={})
    assert (caught.value.key, caught.value.line) == ("newsletter[1].schedulle", 26)


@pytest.mark.parametrize(
    ("header", "key", "hint"),
    [
        ("[feeds]", "feeds", "did you mean 'feed'?"),
        ("[smtp]", "smtp", "known: admin, bounces, database, feed, limits, mail, newsletter, "
                           "pages, scheduler, site, web"),
        ("[site.social]", "site.social", "known: "),
    ],
)
def test_an_unknown_table_is_named(
    make_site: SiteFactory, header: str, key: str, hint: str
) -> None:
    config = BASIC_CONFIG + f'\n{header}\nhost = "x"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings(make_site(config=config), env={})
    error = caught.value
    assert (error.key, error.line) == (key, 24)
    assert error.message.startswith("unknown table (")
    assert hint in error.message


def test_every_documented_key_is_known(make_site: SiteFactory) -> None:
    config = """\
[site]
title = "Ada's notes ✍️"
url = "https://ada.example/"
description = "Notes on engines"
language = "zh-TW"
timezone = "Europe/Berlin"
permalink = "/{year}/{month}/{day}/{slug}/"
excerpt_separator = "<!--more-->"
summary_length = 280

[site.author]
name = "Ada"
email = "ada@example.com"

[feed]
limit = 20
full_content = true
formats = ["atom", "rss", "json"]

[mail]
from = "Ada's notes <news@ada.example>"
reply_to = "ada@example.com"
transport = "smtp://ada:p%40ss@smtp.ada.example:587?tls=starttls&timeout=10&pool=2"
rate_limit = 20
envelope_from = "bounces@ada.example"
postal_address = "Ada, 1 Engine Lane, London"
max_html_bytes = 102000
dkim_selector = "feedpub"
dkim_domain = "ada.example"
dkim_key_file = "dkim.pem"

[database]
url = "sqlite:///feedpub.db"

[web]
url = "https://ada.example/"
confirm_days = 7

[scheduler]
misfire_grace_hours = 6
tick_seconds = 60

[[newsletter]]
name = "weekly"
title = "Ada's notes weekly"
schedule = "0 9 13 * 5"
categories = []
subject = "{{ newsletter.title }}: {{ first.title }}"
full_content = true
description = "Every Friday"

[[newsletter]]
name = "daily"
schedule = "30 2 * * *"
"""
    settings = load_settings(make_site(config=config), env={})
    assert settings.site.author == Author("Ada", "ada@example.com")
    assert settings.mail.dkim is not None
    assert [n.schedule for n in settings.newsletters] == ["0 9 13 * 5", "30 2 * * *"]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("FEEDPUB_DATABASE_URL", "bogus://x", "must be sqlite:///FILE or postgresql"),
        ("FEEDPUB_MAIL_TRANSPORT", "ftp://x", "must be 'maildir:PATH' or 'smtp://"),
        ("FEEDPUB_MAIL_TRANSPORT", "smtp://h:99999", "the port must be a number"),
        ("FEEDPUB_MAIL_TRANSPORT", "maildir:", "needs a folder"),
    ],
)
def test_a_bad_environment_override_names_the_variable_not_the_file(
    make_site: SiteFactory, variable: str, value: str, fragment: str
) -> None:
    site = make_site(config=BASIC_CONFIG + '\n[database]\nurl = "sqlite:///feedpub.db"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(site, env={variable: value})
    error = caught.value
    assert (error.key, error.line, error.path) == (variable, None, None)
    assert str(error).startswith(f"{variable}: ")
    assert fragment in error.message
    assert "feedpub.toml" not in str(error)


def test_the_repositorys_own_site_loads() -> None:
    repository = Path(__file__).resolve().parents[1]
    settings = load_settings(repository, env={})
    assert [n.name for n in settings.newsletters] == ["weekly", "releases"]


def test_the_init_template_loads(tmp_path: Path) -> None:
    init_site(tmp_path / "new", now=datetime(2026, 1, 5, tzinfo=UTC), title='Ada "the" 🦄 Blog',
              url="https://ada.example/blog")
    settings = load_settings(tmp_path / "new", env={})
    assert settings.site.title == 'Ada "the" 🦄 Blog'
    assert settings.newsletters[0].schedule == "0 9 * * MON"


@pytest.mark.parametrize(
    ("replace", "by", "line"),
    [
        ('transport = "maildir:outbox"', 'transport = "smtp://h:99999"', 16),
        ('schedule = "0 9 * * MON"', 'schedule = "61 9 * * MON"', 22),
        ('title = "Test Site"', 'title = "Test Site"\ntitel = "typo"', 3),
    ],
)
@pytest.mark.parametrize(
    "command", [["digest", "send"], ["digest", "send", "--dry-run"], ["preview"], ["build"]]
)
def test_the_cli_stops_on_a_config_error_before_touching_anything(
    make_site: SiteFactory,
    cli_env: Callable[..., Any],
    replace: str,
    by: str,
    line: int,
    command: list[str],
) -> None:
    site = make_site(
        config=BASIC_CONFIG.replace(replace, by),
        posts={"2026-01-01-hello.md": "---\ntitle: Hello\n---\nHi.\n"},
    )
    result = CliRunner().invoke(
        main, ["--site", str(site), *command, "--now", "2026-01-05T09:00:00+00:00"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {site.resolve() / 'feedpub.toml'}:{line}: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert not (site / "feedpub.db").exists()
    assert not (site / "public").exists()
    assert not (site / "outbox").exists()


def test_an_sqlite_file_is_known_missing_without_sqlalchemy(tmp_path: Path) -> None:
    folder = tmp_path / "my site"
    folder.mkdir()
    url = "sqlite:///" + quote(str(folder / "feedpub.db"))
    assert DatabaseConfig(url).missing_sqlite_file
    (folder / "feedpub.db").touch()
    assert not DatabaseConfig(url).missing_sqlite_file  # percent-decoded, as SQLAlchemy does
    assert not DatabaseConfig(url + "?timeout=5").missing_sqlite_file
    assert not DatabaseConfig("sqlite:///:memory:").missing_sqlite_file
    assert not DatabaseConfig("postgresql+psycopg://u@db/feeds").missing_sqlite_file
