from __future__ import annotations

from pathlib import Path

import pytest

from feedpub.config import load_settings
from feedpub.errors import ConfigError
from tests.conftest import BASIC_CONFIG, SiteFactory


def test_defaults_fill_what_the_file_leaves_out(make_site: SiteFactory) -> None:
    site = make_site(config='[site]\ntitle = "T"\nurl = "https://ex.org/blog"\n')
    settings = load_settings(site, env={})
    assert settings.site.url == "https://ex.org/blog/"
    assert settings.newsletters[0].name == "weekly"
    assert settings.feed.formats == ("atom", "rss", "json")
    assert settings.database.url == f"sqlite:///{site.resolve() / 'feedpub.db'}"
    assert settings.mail.transport == f"maildir:{site.resolve() / 'outbox'}"
    assert settings.mail.from_email == "news@ex.org"
    assert settings.web.url == "https://ex.org/blog/"
    assert settings.secret is None


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
    assert settings.mail.transport == "smtp://mail:25?tls=none"
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
