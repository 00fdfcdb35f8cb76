"""`feedpub status` through the real CLI: the table, the JSON document, sites without a database,
and a database that cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from feedpub.cli import main
from tests.conftest import SiteFactory, SmtpServer
from tests.test_digest import site_config
from tests.test_status import NEWSLETTERS, NOW, KnownSite, build_known_site


@pytest.fixture
def known_site(
    make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
    cli_env: Callable[..., Any],
) -> Iterator[KnownSite]:
    site = build_known_site(make_site, database_url, smtp_server)
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    try:
        yield site
    finally:
        site.store.close()


def status(root: Path, *args: str, columns: int = 120) -> Result:
    return CliRunner().invoke(
        main, ["--site", str(root), "status", "--now", NOW.isoformat(), *args],
        env={"COLUMNS": str(columns)},
    )


def test_the_table(known_site: KnownSite) -> None:
    result = status(known_site.root)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Test Site ✨  2026-01-05 11:00 (Europe/Berlin)"
    assert lines[1] == "subscribers: 7 active, 1 pending, 1 unsubscribed, 1 bounced"
    assert lines[2] == ("deliveries: 3 sent, 1 failed, 3 queued, 1 sending, "
                        "1 retrying from 01-05 09:02")
    rows = [line.split() for line in lines[3:]]
    assert rows[0] == ["newsletter", "next", "run", "last", "edition", "posts", "sent", "retry",
                       "failed", "queued", "subs"]
    # Each newsletter: its newest edition (an instant post), then its last scheduled digest.
    assert rows[1:] == [
        ["weekly", "01-12", "09:00", "post", "01-05", "11:00", "1", "0", "0", "0", "1", "5"],
        ["digest", "01-05", "09:01", "1", "2", "1", "1", "0"],
        ["daily", "01-06", "07:30", "post", "01-05", "11:00", "1", "0", "0", "0", "0", "3"],
        ["digest", "01-05", "09:01", "1", "0", "0", "0", "2"],
    ]


def test_the_table_fits_eighty_columns(known_site: KnownSite) -> None:
    result = status(known_site.root, columns=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert len(lines) == 3 + 1 + 4  # nothing wrapped
    assert lines[4].split()[:3] == ["weekly", "01-12", "09:00"]


def test_the_json_document_for_monitoring(known_site: KnownSite) -> None:
    result = status(known_site.root, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["subscribers"] == {"pending": 1, "active": 7, "unsubscribed": 1,
                                       "bounced": 1}
    assert document["deliveries"] == {"queued": 3, "sending": 1, "sent": 3, "retrying": 1,
                                      "failed": 1, "skipped": 0}
    daily = document["newsletters"][1]
    assert list(daily) == ["name", "title", "schedule", "next_run", "last_edition",
                           "last_digest", "subscribers", "subscriptions", "retries",
                           "heard_back"]
    assert daily["name"] == "daily" and daily["schedule"] == "30 7 * * *"
    assert daily["next_run"] == {"local": "2026-01-06T07:30:00+01:00",
                                 "utc": "2026-01-06T06:30:00Z"}
    assert daily["last_edition"]["kind"] == "post"
    assert daily["last_edition"]["created_at"] == "2026-01-05T10:00:00Z"
    assert daily["last_digest"]["deliveries"] == {"queued": 2, "sending": 1, "sent": 0,
                                                  "retrying": 0, "failed": 0, "skipped": 0}
    assert daily["subscribers"] == {"pending": 0, "active": 3, "unsubscribed": 0, "bounced": 0}
    assert daily["subscriptions"] == {"digest": 3, "instant": 0}
    assert daily["retries"] == {"count": 0, "next_attempt_at": None}


def test_a_new_site_has_no_database_and_status_does_not_create_one(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    root = make_site(config=site_config(timezone="Europe/Berlin", newsletters=NEWSLETTERS))
    result = status(root)
    assert result.exit_code == 0, result.output
    assert "subscribers: 0 active, 0 pending, 0 unsubscribed, 0 bounced" in result.output
    assert [line.split()[:6] for line in result.output.splitlines()[4:]] == [
        ["weekly", "01-12", "09:00", "none", "yet", "0"],
        ["daily", "01-06", "07:30", "none", "yet", "0"],
    ]
    assert not (root / "feedpub.db").exists()
    document = json.loads(status(root, "--json").output)
    assert document["database"] is None
    assert document["newsletters"][0]["last_edition"] is None


def test_an_unreachable_database_is_one_line_and_exit_1(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    root = make_site(config=site_config())
    cli_env("FEEDPUB_DATABASE_URL", "postgresql+psycopg://nobody:secret@127.0.0.1:9/none")
    result = status(root, "--json")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith("error: database.url: cannot open database postgresql")
    assert "secret" not in result.output


def test_help_documents_the_json_shape() -> None:
    result = CliRunner().invoke(main, ["status", "--help"])
    assert result.exit_code == 0
    for key in ("next_run", "last_edition", "last_digest", "subscriptions", "next_attempt_at",
                "missed"):
        assert key in result.output
