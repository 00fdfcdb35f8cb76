"""`feedpub subscribers …` through click, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from feedpub.cli import main
from feedpub.store import (
    Mode,
    Status,
    find_subscriber,
    get_events,
    get_subscriptions,
    open_store,
)
from feedpub.web import actions
from tests.conftest import BASIC_CONFIG, SiteFactory

CONFIG = BASIC_CONFIG + '\n[[newsletter]]\nname = "daily"\nschedule = "0 7 * * *"\n'
NOW = "2026-01-05T09:00:00+00:00"


@pytest.fixture
def site(make_site: SiteFactory, cli_env: Callable[..., Any], database_url: str) -> Path:
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    return make_site(config=CONFIG)


def feedpub(site: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--site", str(site), *args], input=input)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_add_reports_each_bad_address_and_adds_the_rest(site: Path, database_url: str) -> None:
    result = feedpub(site, "subscribers", "add", "ada@example.com", "not-an-address",
                     "Grace Hopper <GRACE@Example.org>", "--now", NOW)
    assert result.exit_code == 1
    assert error_lines(result) == [
        "error: 'not-an-address' is not a valid email address: "
        "An email address must have an @-sign."
    ]
    assert result.stdout.splitlines() == [
        "added ada@example.com (pending, weekly)",
        "added GRACE@example.org (pending, weekly)",
    ]
    with open_store(database_url) as store, store.read() as conn:
        grace = find_subscriber(conn, "grace@example.org")
        assert grace is not None
        assert (grace.name, grace.status, grace.source) == ("Grace Hopper", Status.PENDING, "cli")
        assert [s.newsletter for s in get_subscriptions(conn, grace.id)] == ["weekly"]


def test_add_confirmed_to_a_newsletter_in_a_mode(site: Path, database_url: str) -> None:
    result = feedpub(site, "subscribers", "add", "zoe@bücher.de", "--confirmed", "--newsletter",
                     "daily", "--mode", "instant", "--categories", "python, 日本語",
                     "--name", "Zoë", "--now", NOW)
    assert result.exit_code == 0, result.output
    with open_store(database_url) as store, store.read() as conn:
        zoe = find_subscriber(conn, "ZOE@xn--bcher-kva.de")
        assert zoe is not None
        assert (zoe.name, zoe.status) == ("Zoë", Status.ACTIVE)
        assert zoe.confirmed_at is not None and zoe.confirmed_at.isoformat() == NOW
        subs = get_subscriptions(conn, zoe.id)
    assert [(s.newsletter, s.mode, s.categories) for s in subs] == [
        ("daily", Mode.INSTANT, ("python", "日本語"))
    ]


def test_an_unknown_newsletter_is_a_configuration_error(site: Path, database_url: str) -> None:
    result = feedpub(site, "subscribers", "add", "ada@example.com", "--newsletter", "monthly")
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: {site.resolve() / 'feedpub.toml'}: newsletter: no newsletter named 'monthly' "
        "(this site has: weekly, daily)"
    ]
    listed = feedpub(site, "subscribers", "list")
    assert listed.stdout == ""


def test_name_goes_with_one_address_only(site: Path) -> None:
    result = feedpub(site, "subscribers", "add", "a@example.com", "b@example.com", "--name", "A")
    assert result.exit_code == 2
    assert "--name" in result.stderr


def test_add_does_not_resubscribe_without_being_told(site: Path, database_url: str) -> None:
    assert feedpub(site, "subscribers", "add", "ada@example.com", "--confirmed",
                   "--now", NOW).exit_code == 0
    assert feedpub(site, "subscribers", "remove", "ADA@example.com",
                   "--now", "2026-01-06T00:00:00+00:00").exit_code == 0
    refused = feedpub(site, "subscribers", "add", "ada@example.com", "--confirmed",
                      "--newsletter", "daily", "--now", "2026-01-07T00:00:00+00:00")
    assert refused.exit_code == 1
    assert error_lines(refused) == [
        "error: ada@example.com is unsubscribed since 2026-01-06; not resubscribed "
        "(add --resubscribe if they asked to come back)"
    ]
    again = feedpub(site, "subscribers", "add", "ada@example.com", "--confirmed",
                    "--resubscribe", "--newsletter", "daily", "--now", "2026-01-08T00:00:00+00:00")
    assert again.exit_code == 0
    with open_store(database_url) as store, store.read() as conn:
        ada = find_subscriber(conn, "ada@example.com")
        assert ada is not None and ada.status == Status.ACTIVE
        assert [s.newsletter for s in get_subscriptions(conn, ada.id)] == ["daily", "weekly"]
        assert [e.event for e in get_events(conn, ada.id)] == ["active", "unsubscribed", "active"]


IMPORT_CSV = (
    "email,name,status,newsletter,mode,categories\r\n"
    "ada@example.com,\"Lovelace, Ada\",active,weekly,,\r\n"
    "ada@example.com,,active,daily,instant,python\r\n"
    "broken@,Broken,active,weekly,,\r\n"
    "wang@例子.中国,王小明,active,weekly,,\r\n"
    "gone@example.com,,unsubscribed,weekly,,\r\n"
    "who@example.com,,maybe,weekly,,\r\n"
)


def test_import_reports_lines_and_counts_and_is_idempotent(site: Path, database_url: str) -> None:
    path = site / "list.csv"
    path.write_text(IMPORT_CSV, encoding="utf-8")
    first = feedpub(site, "subscribers", "import", str(path), "--now", NOW)
    assert first.exit_code == 1
    assert error_lines(first) == [
        f"error: {path}:4: 'broken@' is not a valid email address: "
        "There must be something after the @-sign.",
        f"error: {path}:7: status 'maybe' is not one of: pending, active, unsubscribed, bounced",
    ]
    assert first.stdout.splitlines() == ["added 3, updated 1, unchanged 0, skipped 2"]

    second = feedpub(site, "subscribers", "import", str(path))
    assert second.stdout.splitlines() == ["added 0, updated 0, unchanged 4, skipped 2"]

    path.write_text("email\ngone@example.com\n", encoding="utf-8")
    kept = feedpub(site, "subscribers", "import", str(path))
    assert kept.exit_code == 0
    assert kept.stdout.splitlines() == [
        "added 0, updated 0, unchanged 1, skipped 0",
        "1 row(s) asked to reactivate unsubscribed or bounced addresses and were left as they "
        "are (--resubscribe to allow)",
    ]
    back = feedpub(site, "subscribers", "import", str(path), "--resubscribe")
    assert back.stdout.splitlines() == ["added 0, updated 1, unchanged 0, skipped 0"]
    with open_store(database_url) as store, store.read() as conn:
        gone = find_subscriber(conn, "gone@example.com")
        assert gone is not None and gone.status == Status.ACTIVE


def test_import_from_stdin_and_missing_files(site: Path) -> None:
    piped = feedpub(site, "subscribers", "import", "-", input="email\nada@example.com\nbad\n")
    assert piped.exit_code == 1
    assert piped.stdout.splitlines() == ["added 1, updated 0, unchanged 0, skipped 1"]
    assert error_lines(piped)[0].startswith("error: stdin:3: 'bad' is not a valid email address")
    missing = feedpub(site, "subscribers", "import", str(site / "nope.csv"))
    assert missing.exit_code == 2
    assert "nope.csv" in missing.stderr and "Traceback" not in missing.output


def test_import_without_an_email_column_is_one_error(site: Path) -> None:
    path = site / "people.csv"
    path.write_text("mail,name\nada@example.com,Ada\n", encoding="utf-8")
    result = feedpub(site, "subscribers", "import", str(path))
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {path}:1: no email column in the header ('mail', 'name'); "
        "expected columns: email, name, status, newsletter, mode, categories"
    ]


def test_export_then_import_into_another_site_gives_the_same_export(
    make_site: SiteFactory, site: Path, tmp_path: Path, cli_env: Callable[..., Any]
) -> None:
    path = site / "list.csv"
    path.write_text(IMPORT_CSV, encoding="utf-8")
    feedpub(site, "subscribers", "import", str(path))
    feedpub(site, "subscribers", "add", "Pending Person <p@example.com>")
    exported = feedpub(site, "subscribers", "export")
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert {(r["email"], r["status"], r["newsletter"], r["mode"]) for r in rows} == {
        ("ada@example.com", "active", "weekly", "digest"),
        ("ada@example.com", "active", "daily", "instant"),
        ("wang@例子.中国", "active", "weekly", "digest"),
        ("gone@example.com", "unsubscribed", "weekly", "digest"),
        ("p@example.com", "pending", "weekly", "digest"),
    }

    other = SiteFactory(tmp_path / "other")(config=CONFIG)
    cli_env("FEEDPUB_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    backup = tmp_path / "backup.csv"
    backup.write_text(exported.stdout, encoding="utf-8")
    imported = feedpub(other, "subscribers", "import", str(backup))
    assert imported.exit_code == 0, imported.output
    assert feedpub(other, "subscribers", "export").stdout == exported.stdout
    active_only = feedpub(other, "subscribers", "export", "--status", "active")
    assert {r["email"] for r in csv.DictReader(io.StringIO(active_only.stdout))} == {
        "ada@example.com", "wang@例子.中国"
    }


def test_list_as_text_and_json(site: Path) -> None:
    feedpub(site, "subscribers", "add", "Ada Lovelace <ada@example.com>", "--confirmed")
    feedpub(site, "subscribers", "add", "bob@example.com", "--newsletter", "daily", "--mode",
            "instant")
    text = feedpub(site, "subscribers", "list")
    assert text.stdout.splitlines() == [
        "ada@example.com\tactive\tweekly\tAda Lovelace",
        "bob@example.com\tpending\tdaily(instant)",
    ]
    pending = feedpub(site, "subscribers", "list", "--status", "pending", "--json")
    data = json.loads(pending.stdout)
    assert [d["email"] for d in data] == ["bob@example.com"]
    assert data[0]["subscriptions"] == [
        {"newsletter": "daily", "mode": "instant", "categories": []}
    ]
    assert data[0]["created_at"].endswith("+00:00")
    assert json.loads(feedpub(site, "subscribers", "list", "--status", "bounced",
                              "--json").stdout) == []


def test_remove_unsubscribes_and_forget_erases(site: Path, database_url: str) -> None:
    feedpub(site, "subscribers", "add", "Ada <ada@example.com>", "bob@example.com", "--confirmed")
    result = feedpub(site, "subscribers", "remove", "ADA@example.com", "nobody@example.com",
                     "also bad")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["unsubscribed ada@example.com"]
    assert error_lines(result)[0] == "error: no subscriber 'nobody@example.com'"
    assert "'also bad' is not a valid email address" in error_lines(result)[1]
    again = feedpub(site, "subscribers", "remove", "ada@example.com")
    assert again.stdout.splitlines() == ["already unsubscribed: ada@example.com"]

    forgot = feedpub(site, "subscribers", "remove", "--forget", "bob@example.com",
                     "ada@example.com")
    assert forgot.exit_code == 0
    assert forgot.stdout.splitlines() == ["forgot bob@example.com", "forgot ada@example.com"]
    listed = feedpub(site, "subscribers", "list").stdout
    assert "example.com" not in listed and "Ada" not in listed
    assert listed.count("@forgotten.invalid") == 2
    with open_store(database_url) as store, store.read() as conn:
        assert find_subscriber(conn, "ada@example.com") is None


def test_an_unreachable_database_is_one_line(make_site: SiteFactory,
                                             cli_env: Callable[..., Any], tmp_path: Path) -> None:
    site = make_site(config=CONFIG)
    cli_env("FEEDPUB_DATABASE_URL", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    result = feedpub(site, "subscribers", "list")
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1
    assert error_lines(result)[0].startswith("error: database.url: cannot open database")


def test_help_teaches_with_examples(site: Path) -> None:
    for command in ("add", "import", "export", "list", "remove"):
        result = feedpub(site, "subscribers", command, "--help")
        assert result.exit_code == 0
        assert f"feedpub subscribers {command}" in result.stdout
    assert "status      pending | active" in feedpub(site, "subscribers", "import",
                                                       "--help").stdout


def test_a_forgotten_address_stays_forgotten_until_asked_back(site: Path, database_url: str
                                                              ) -> None:
    feedpub(site, "subscribers", "add", "Bob <bob@example.com>", "ada@example.com",
            "--confirmed", "--now", NOW)
    old = feedpub(site, "subscribers", "export").stdout
    (site / "old.csv").write_text(old, encoding="utf-8")
    assert feedpub(site, "subscribers", "remove", "--forget", "BOB@example.com",
                   "--now", NOW).exit_code == 0

    imported = feedpub(site, "subscribers", "import", str(site / "old.csv"), "--now", NOW)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.splitlines() == [
        "added 0, updated 0, unchanged 2, skipped 0",
        "1 row(s) asked to reactivate unsubscribed or bounced addresses and were left as "
        "they are (--resubscribe to allow)",
    ]
    added = feedpub(site, "subscribers", "add", "bob@example.com", "grace@example.org",
                    "--confirmed", "--now", NOW)
    assert added.exit_code == 1
    assert error_lines(added) == [
        "error: bob@example.com was forgotten at their request on 2026-01-05; not added "
        "(add --resubscribe if they asked to come back)"
    ]
    assert added.stdout.splitlines() == ["added grace@example.org (active, weekly)"]
    assert "bob" not in feedpub(site, "subscribers", "list").stdout

    back = feedpub(site, "subscribers", "import", "--resubscribe", str(site / "old.csv"),
                   "--now", NOW)
    assert back.stdout.splitlines() == ["added 1, updated 0, unchanged 1, skipped 0"]
    with open_store(database_url) as store, store.read() as conn:
        bob = find_subscriber(conn, "bob@example.com")
        assert bob is not None and (bob.status, bob.name) == (Status.ACTIVE, "Bob")


def test_a_forgotten_address_may_sign_up_again_through_the_web(
    site: Path, make_site: SiteFactory, database_url: str
) -> None:
    feedpub(site, "subscribers", "add", "bob@example.com", "--confirmed", "--now", NOW)
    feedpub(site, "subscribers", "remove", "--forget", "bob@example.com", "--now", NOW)
    settings = make_site.settings({"FEEDPUB_SECRET": "s", "FEEDPUB_DATABASE_URL": database_url})
    later = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
    with open_store(database_url) as store:
        confirmation = actions.request_subscription(
            store, settings, "Bob@Example.com", actions.Selection((actions.Choice("daily"),)),
            now=later)
        assert confirmation is not None and confirmation.email == "Bob@example.com"
        bob = actions.confirm(store, settings, confirmation.confirm_url.rpartition("/")[2],
                              now=later + timedelta(minutes=5))
        assert bob.status == Status.ACTIVE
        with store.read() as conn:
            assert [s.newsletter for s in get_subscriptions(conn, bob.id)] == ["daily"]
    # Confirming lifted the suppression: adding the address again is an ordinary update.
    again = feedpub(site, "subscribers", "add", "bob@example.com", "--now", NOW)
    assert again.exit_code == 0 and error_lines(again) == []


def test_a_local_address_is_refused_with_the_setting_to_change(site: Path) -> None:
    result = feedpub(site, "subscribers", "add", "user@localhost", "--now", NOW)
    assert result.exit_code == 1
    assert error_lines(result) == [
        "error: 'user@localhost' is a local address (its domain is not on the internet); "
        "set [mail] allow_local_addresses = true in feedpub.toml to accept such addresses"
    ]


def test_a_site_that_allows_local_addresses_adds_them(
    make_site: SiteFactory, cli_env: Callable[..., Any], database_url: str
) -> None:
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    site = make_site(config=CONFIG.replace("[mail]", "[mail]\nallow_local_addresses = true"))
    result = feedpub(site, "subscribers", "add", "user@localhost", "Ada <ada@MailHost>",
                     "not an address@localhost", "--now", NOW)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "added user@localhost (pending, weekly)",
        "added ada@mailhost (pending, weekly)",
    ]
    assert error_lines(result)[0].startswith(
        "error: 'not an address@localhost' is not a valid email address:"
    )
