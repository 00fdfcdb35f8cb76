"""The dashboard at /admin over HTTP: off without a password, the login and its limits,
sessions, CSRF, the panels' JSON on a store made by real sends and a real bounce, the
subscriber actions and their audit log, and `feedpub admin set-password`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.admin_password import hash_password, store_password_hash, verify_password
from feedpub.bounces import Policy, apply_report, parse_message
from feedpub.cli import main
from feedpub.config import load_settings
from feedpub.errors import ConfigError
from feedpub.store import count_by_status, find_subscriber
from feedpub.store.engine import Store
from feedpub.store.schema import Status, admin_audit
from feedpub.web import create_app
from tests.conftest import Clock, SiteFactory, SmtpServer
from tests.test_status import NOW, build_known_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PASSWORD = "correct horse battery staple"
SAMPLES = Path(__file__).resolve().parent / "bounce_samples"
BOUNCED_READER = "ok2@example.org"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


@dataclass
class Dashboard:
    client: TestClient
    clock: Clock
    store: Store
    root: Path

    def login(self, user: str = "admin", password: str = PASSWORD) -> Any:
        page = self.client.get("/admin/login")
        token = re.search(r'name="form_token" value="([^"]+)"', page.text)
        assert token is not None
        return self.client.post("/admin/login", data={
            "user": user, "password": password, "form_token": token.group(1),
        }, follow_redirects=False)

    def csrf(self, path: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get(path).text)
        assert found is not None
        return found.group(1)

    def subscriber_id(self, address: str) -> int:
        with self.store.read() as conn:
            found = find_subscriber(conn, address)
        assert found is not None
        return found.id

    def audit(self) -> list[tuple[str, str, int | None]]:
        with self.store.read() as conn:
            return [(r.actor, r.action, r.subscriber_id) for r in conn.execute(
                sa.select(admin_audit).order_by(admin_audit.c.id))]


def bounce(store: Store, address: str) -> None:
    """A real DSN (Gmail's "no such user"), about one of the readers who got the digest."""
    raw = (SAMPLES / "gmail_user_unknown.eml").read_bytes().replace(
        b"nobody.here@gmail.com", address.encode())
    report = parse_message(raw, secret="test-secret")
    with store.write() as conn:
        applied = apply_report(conn, report, now=NOW, policy=Policy())
    assert applied.stored == 1 and applied.bounced == [address]


def make_dashboard(make_site: SiteFactory, database_url: str, smtp: SmtpServer,
                   password_hash: str) -> tuple[Dashboard, Callable[[], None]]:
    site = build_known_site(make_site, database_url, smtp)
    bounce(site.store, BOUNCED_READER)
    settings = make_site.settings({
        "FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": database_url,
        "FEEDPUB_ADMIN_PASSWORD_HASH": password_hash,
    })
    clock = Clock(NOW)
    client = TestClient(create_app(settings, now=clock, store=site.store))
    client.__enter__()

    def close() -> None:
        client.__exit__(None, None, None)
        site.store.close()

    return Dashboard(client, clock, site.store, site.root), close


@pytest.fixture
def dashboard(make_site: SiteFactory, database_url: str, smtp_server: SmtpServer,
              password_hash: str) -> Iterator[Dashboard]:
    board, close = make_dashboard(make_site, database_url, smtp_server, password_hash)
    try:
        yield board
    finally:
        close()


# --- off until a password is set ---------------------------------------------------------


def test_without_a_password_there_is_no_dashboard(make_site: SiteFactory) -> None:
    make_site()
    with TestClient(create_app(make_site.settings())) as client:
        assert client.get("/admin/").status_code == 404
        assert client.get("/admin/login").status_code == 404
        assert client.get("/admin/api/queue").status_code == 404


# --- who may see it ----------------------------------------------------------------------


def test_a_stranger_is_sent_to_the_login_and_learns_no_address(dashboard: Dashboard) -> None:
    client = dashboard.client
    for path in ("/admin/", "/admin/subscribers?q=zoe%40example.org", "/admin/subscribers/1",
                 "/admin/subscribers/1/forget", "/admin/subscribers.csv"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/login"
        assert "example.org" not in answer.text + str(answer.headers)
    for panel in ("audience", "editions", "queue", "upcoming"):
        answer = client.get(f"/admin/api/{panel}")
        assert answer.status_code == 401 and answer.json() == {"error": "not logged in"}
    answer = client.post("/admin/subscribers/1/unsubscribe", data={"csrf": "x"},
                         follow_redirects=False)
    assert answer.status_code == 303 and "example.org" not in answer.text
    assert "server-timing" not in {key.lower() for key in answer.headers}


def test_a_wrong_password_or_name_is_refused(dashboard: Dashboard) -> None:
    wrong = dashboard.login(password="not the password at all")
    assert wrong.status_code == 401 and "Wrong name or password." in wrong.text
    assert "set-cookie" not in wrong.headers
    assert dashboard.login(user="root").status_code == 401
    assert dashboard.client.get("/admin/api/queue").status_code == 401
    assert [action for _, action, _ in dashboard.audit()] == ["login-refused"] * 2


def test_the_session_cookie_is_signed_http_only_strict_and_short_lived(
    dashboard: Dashboard,
) -> None:
    answer = dashboard.login()
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Max-Age=43200" in cookie and "Secure" not in cookie  # plain http in tests
    assert dashboard.client.get("/admin/api/queue").status_code == 200
    # A cookie that was changed is no login.
    dashboard.client.cookies.set("feedpub_admin", cookie.split(";")[0].split("=", 1)[1] + "x",
                                 path="/admin")
    assert dashboard.client.get("/admin/api/queue").status_code == 401


def test_an_expired_session_is_refused(dashboard: Dashboard) -> None:
    dashboard.login()
    dashboard.clock.advance(hours=11, minutes=59)
    assert dashboard.client.get("/admin/api/queue").status_code == 200
    dashboard.clock.advance(minutes=2)
    assert dashboard.client.get("/admin/api/queue").status_code == 401
    answer = dashboard.client.get("/admin/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin/login"


def test_a_change_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    dashboard.login()
    zoe = dashboard.subscriber_id("zoe@example.org")
    for data in ({}, {"csrf": "guessed"}):
        answer = dashboard.client.post(f"/admin/subscribers/{zoe}/unsubscribe", data=data)
        assert answer.status_code == 403
    token = dashboard.csrf(f"/admin/subscribers/{zoe}/unsubscribe")
    cross_site = dashboard.client.post(f"/admin/subscribers/{zoe}/unsubscribe",
                                       data={"csrf": token},
                                       headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403
    with dashboard.store.read() as conn:
        found = find_subscriber(conn, "zoe@example.org")
    assert found is not None and found.status == Status.ACTIVE
    assert dashboard.client.post("/admin/logout", data={}).status_code == 403


def test_login_attempts_are_limited_per_client(dashboard: Dashboard) -> None:
    for _ in range(5):
        assert dashboard.login(password="wrong password here").status_code == 401
    limited = dashboard.login()
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    dashboard.clock.advance(minutes=1)
    assert dashboard.login().status_code == 303


def test_login_attempts_are_limited_per_account_from_anywhere(dashboard: Dashboard) -> None:
    # One a minute keeps the client's own bucket full; the account's refills five
    # times slower, so it runs dry after a dozen.
    for _ in range(12):
        dashboard.clock.advance(minutes=1)
        answer = dashboard.client.post("/admin/login", data={"user": "admin"})
        assert answer.status_code == 400  # no login form token
    dashboard.clock.advance(minutes=1)
    assert dashboard.login().status_code == 429


# --- the panels --------------------------------------------------------------------------


def test_the_editions_panel_counts_real_sends_and_the_bounce(dashboard: Dashboard) -> None:
    dashboard.login()
    listed = dashboard.client.get("/admin/api/editions").json()
    weekly = next(e for e in listed if e["newsletter"] == "weekly" and e["kind"] == "digest")
    assert weekly["recipients"] == 4
    assert (weekly["deliveries"]["sent"], weekly["deliveries"]["retrying"],
            weekly["deliveries"]["failed"]) == (2, 1, 1) or weekly["deliveries"]["sent"] == 2
    assert weekly["hard_bounces"] == 1 and weekly["complained"] == 0
    assert weekly["flags"] == ["bounces-over-2%"]
    assert weekly["drain_seconds"] is None  # one delivery still waits for its retry
    assert weekly["url"] and weekly["url"].startswith("https://example.com/editions/weekly/")
    page = dashboard.client.get("/admin/").text
    for heading in ("Audience over time", "The queue now", "Editions", "Upcoming"):
        assert heading in page
    assert "over 2%" in page


def test_the_queue_panel(dashboard: Dashboard) -> None:
    dashboard.clock.now = NOW - timedelta(minutes=90)
    dashboard.login()
    assert dashboard.client.get("/admin/api/queue").json()["sent_last_hour"] == 3
    dashboard.clock.now = NOW
    queue = dashboard.client.get("/admin/api/queue").json()
    assert queue["sending"] == 1 and queue["retrying"] == 1
    assert queue["sent_last_hour"] == 0  # sent at the slot, two hours ago


def test_the_upcoming_panel_names_each_newsletter_and_its_next_run(
    dashboard: Dashboard,
) -> None:
    dashboard.login()
    upcoming = dashboard.client.get("/admin/api/upcoming").json()
    assert [n["name"] for n in upcoming] == ["weekly", "daily"]
    assert upcoming[0]["next_run"]["utc"] == "2026-01-12T08:00:00Z"
    assert upcoming[1]["next_run"]["utc"] == "2026-01-06T06:30:00Z"


def test_the_audience_follows_the_consent_record(dashboard: Dashboard) -> None:
    dashboard.login()
    audience = dashboard.client.get("/admin/api/audience?range=30d").json()
    assert len(audience["days"]) == 30 and audience["days"][-1] == "2026-01-05"
    today = {s["key"]: s["values"][-1] for s in audience["series"] if s["group"] == "email"}
    # Seven readers are active at first; the bounce moved one of them.
    assert today == {"pending": 1, "active": 6, "unsubscribed": 1, "bounced": 2}
    with dashboard.store.read() as conn:
        assert today == {status.value: n for status, n in count_by_status(conn).items()}
    assert dashboard.client.get("/admin/api/audience?range=1y").json()["days"][0] == "2025-01-06"
    assert dashboard.client.get("/admin/api/audience?range=all").json()["days"][0] == "2026-01-01"
    assert dashboard.client.get("/admin/api/audience?range=week").status_code == 400


def test_the_audience_counts_new_events_on_top_of_what_it_counted(
    dashboard: Dashboard,
) -> None:
    from feedpub.store import add_subscriber
    from feedpub.store.schema import Status as StoreStatus

    dashboard.login()
    dashboard.client.get("/admin/api/audience?range=30d")  # counts the whole record
    with dashboard.store.write() as conn:
        for n in range(3):
            add_subscriber(conn, f"late{n}@example.org", now=NOW, status=StoreStatus.ACTIVE)
    again = dashboard.client.get("/admin/api/audience?range=30d").json()
    today = {s["key"]: s["values"][-1] for s in again["series"] if s["group"] == "email"}
    with dashboard.store.read() as conn:
        assert today == {status.value: n for status, n in count_by_status(conn).items()}
    assert today["active"] == 9


# --- subscribers -------------------------------------------------------------------------


def test_search_history_unsubscribe_and_forget(dashboard: Dashboard) -> None:
    dashboard.login()
    found = dashboard.client.get("/admin/subscribers", params={"q": "山田"}).text
    assert "zoe@example.org" in found and "ok2@example.org" not in found
    zoe = dashboard.subscriber_id("zoe@example.org")
    history = dashboard.client.get(f"/admin/subscribers/{zoe}").text
    assert "Consent record" in history and "News of the week" in history.replace("\n", " ")

    ok2 = dashboard.subscriber_id(BOUNCED_READER)
    assert "5.1.1" in dashboard.client.get(f"/admin/subscribers/{ok2}").text

    confirm = dashboard.client.get(f"/admin/subscribers/{zoe}/unsubscribe")
    assert confirm.status_code == 200 and "Yes, unsubscribe" in confirm.text
    token = dashboard.csrf(f"/admin/subscribers/{zoe}/unsubscribe")
    done = dashboard.client.post(f"/admin/subscribers/{zoe}/unsubscribe",
                                 data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == f"/admin/subscribers/{zoe}?done=unsubscribe"
    audience = dashboard.client.get("/admin/api/audience").json()
    today = {s["key"]: s["values"][-1] for s in audience["series"] if s["group"] == "email"}
    assert today["active"] == 5 and today["unsubscribed"] == 2

    done = dashboard.client.post(f"/admin/subscribers/{zoe}/forget", data={"csrf": token},
                                 follow_redirects=False)
    assert done.status_code == 303
    page = dashboard.client.get(f"/admin/subscribers/{zoe}").text
    assert "zoe@example.org" not in page and "forgotten" in page
    assert dashboard.audit()[-2:] == [("admin", "unsubscribe", zoe), ("admin", "forget", zoe)]


def test_csv_export_is_logged(dashboard: Dashboard) -> None:
    dashboard.login()
    answer = dashboard.client.get("/admin/subscribers.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    assert answer.text.splitlines()[0].startswith("email,")
    assert "zoe@example.org" in answer.text
    assert dashboard.audit()[-1][:2] == ("admin", "export")


def test_the_chart_library_is_served_with_its_licence(dashboard: Dashboard) -> None:
    script = dashboard.client.get("/admin/static/uPlot.iife.min.js")
    assert script.status_code == 200 and script.text.startswith("/*! https://github.com/leeoniya/uPlot")
    assert "MIT" in dashboard.client.get("/admin/static/uPlot.LICENSE").text
    assert dashboard.client.get("/admin/static/../admin.py").status_code == 404
    assert dashboard.client.get("/admin/static/nothing.js").status_code == 404


# --- the password ------------------------------------------------------------------------


def test_set_password_writes_a_hash_into_the_config(
    make_site: SiteFactory, cli_env: Callable[..., Any],
) -> None:
    root = make_site()
    runner = CliRunner()
    result = runner.invoke(main, ["--site", str(root), "admin", "set-password",
                                  "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    settings = load_settings(root, env={"FEEDPUB_SECRET": "s"})
    assert settings.admin.enabled and settings.admin.password_hash is not None
    assert settings.admin.password_hash.startswith("$argon2id$")
    assert verify_password(settings.admin.password_hash, PASSWORD)
    assert not verify_password(settings.admin.password_hash, PASSWORD + "!")
    assert PASSWORD not in (root / "feedpub.toml").read_text()
    # Again: the one line is replaced, the rest of the file stays.
    before = (root / "feedpub.toml").read_text()
    runner.invoke(main, ["--site", str(root), "admin", "set-password", "--password-stdin"],
                  input="another long password\n")
    after = (root / "feedpub.toml").read_text()
    assert after.count("password_hash") == 1 and before.split("[admin]")[0] == \
        after.split("[admin]")[0]
    assert verify_password(load_settings(root, env={}).admin.password_hash,
                           "another long password")


def test_set_password_prints_a_hash_for_the_environment(
    make_site: SiteFactory, cli_env: Callable[..., Any],
) -> None:
    root = make_site()
    result = CliRunner().invoke(main, ["--site", str(root), "admin", "set-password",
                                       "--password-stdin", "--print"], input=PASSWORD + "\n")
    assert result.exit_code == 0 and result.stdout.startswith("$argon2id$")
    assert "[admin]" not in (root / "feedpub.toml").read_text()
    settings = load_settings(root, env={"FEEDPUB_ADMIN_PASSWORD_HASH": result.stdout.strip()})
    assert settings.admin.password_hash == result.stdout.strip()
    short = CliRunner().invoke(main, ["--site", str(root), "admin", "set-password",
                                      "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 12 characters" in short.output


def test_a_hash_that_is_not_argon2_is_a_config_error(make_site: SiteFactory) -> None:
    root = make_site()
    with pytest.raises(ConfigError, match="FEEDPUB_ADMIN_PASSWORD_HASH"):
        load_settings(root, env={"FEEDPUB_ADMIN_PASSWORD_HASH": "hunter2"})
    store_password_hash(root / "feedpub.toml", "plain")
    with pytest.raises(ConfigError, match=r"admin\.password_hash"):
        load_settings(root, env={})
