"""`feedpub serve` for real: uvicorn on 127.0.0.1, Debian's chromium through Playwright.

A reader subscribes in the browser, confirms from the email, gets a digest and
leaves with its unsubscribe link; screenshots at 375 px go to tests/artifacts/.
"""

from __future__ import annotations

import gzip
import mailbox
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from feedpub.build import build
from feedpub.config import Settings
from feedpub.digest import make_editions
from feedpub.mail.transports import open_transport
from feedpub.sender import send_queued
from feedpub.store import Status, Store, find_subscriber, get_subscriptions, open_store
from feedpub.web import create_app
from tests.conftest import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    Clock,
    SiteFactory,
    free_port,
    start_uvicorn,
)

# Monday 2 March 2026, 08:00 UTC: the weekly digest's slot is 09:00.
SIGN_UP = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

CONFIG = """\
[site]
title = "Field Notes 田野筆記"
url = "https://example.com/"
description = "Notes on birds and 機器學習, with one-very-long-word-that-does-not-wrap-anywhere"
language = "en"

[mail]
from = "Field Notes <news@example.com>"
transport = "maildir:outbox"
rate_limit = 0
postal_address = "1 Test Street\\nTestville"

[web]
url = "http://127.0.0.1:{port}/"

[[newsletter]]
name = "weekly"
title = "Field Notes weekly"
description = "Every Monday at nine"

[[newsletter]]
name = "instant"
title = "Every new note, as it is posted"
"""

POSTS = {
    "2026-01-05-python.md": "---\ntitle: Python notes\ncategories: [Python]\n---\nHello.\n",
    "2026-01-12-birds.md": "---\ntitle: 鳥類觀察 🐦\ncategories: [Birds, 機器學習]\n---\n中文。\n",
}
NEW_POST = "---\ntitle: \"A new Python note\"\ncategories: [Python]\n---\nBrand new.\n"


@dataclass
class Served:
    settings: Settings
    store: Store
    clock: Clock
    url: str
    outbox: Path




@pytest.fixture
def served(make_site: SiteFactory, database_url: str) -> Iterator[Served]:
    port = free_port()
    make_site(POSTS, config=CONFIG.format(port=port))
    settings = make_site.settings({"FEEDPUB_SECRET": "browser-secret",
                                   "FEEDPUB_DATABASE_URL": database_url})
    build(settings, SIGN_UP)
    store = open_store(database_url)
    clock = Clock(SIGN_UP)
    server, thread = start_uvicorn(create_app(settings, now=clock, store=store), port)
    try:
        yield Served(settings, store, clock, f"http://127.0.0.1:{port}", make_site.root / "outbox")
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        store.close()


def mail_in(outbox: Path) -> list[EmailMessage]:
    found = []
    for raw in mailbox.Maildir(outbox, factory=None, create=False):
        parsed = message_from_bytes(raw.as_bytes(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


def wait_for_mail(outbox: Path, count: int) -> list[EmailMessage]:
    """The confirmation is sent after the answer page (so that its timing tells nothing):
    wait for it to land."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if outbox.exists() and len(found := mail_in(outbox)) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} messages in {outbox}")


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    content: str = body.get_content()
    return content


@pytest.mark.browser
def test_subscribe_confirm_receive_and_leave_in_a_browser(served: Served) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    dialect = served.store.dialect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 812})

            def snapshot(name: str) -> None:
                scroll_width, inner_width = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll_width <= inner_width, f"{name} scrolls sideways at 375 px"
                page.screenshot(path=str(ARTIFACTS / f"web-{name}-{dialect}.png"),
                                full_page=True)

            page.goto(served.url + "/subscribe")
            assert page.locator("html").get_attribute("lang") == "en"
            snapshot("subscribe")
            # The browser lets this through; email-validator does not (a special-use domain).
            page.get_by_label("Email address").fill("someone@localhost")
            page.get_by_role("button", name="Subscribe").click()
            page.get_by_text("This is not an email address").wait_for()
            page.emulate_media(color_scheme="dark")
            page.get_by_label("Email address").focus()
            snapshot("subscribe-error-dark")
            page.emulate_media(color_scheme="light")
            assert not served.outbox.exists()
            page.get_by_label("Email address").fill("Reader.One@Example.org")
            page.get_by_label("Python").check()
            page.get_by_role("button", name="Subscribe").click()
            page.get_by_role("heading", name="Check your inbox").wait_for()
            snapshot("check-inbox")

            [confirmation] = wait_for_mail(served.outbox, 1)
            assert confirmation["To"] == "Reader.One@example.org"
            link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", text_of(confirmation))
            assert link is not None
            page.goto(link.group(0))
            page.get_by_role("heading", name="You are subscribed").wait_for()
            snapshot("confirmed")
            with served.store.read() as conn:
                subscriber = find_subscriber(conn, "reader.one@example.org")
                assert subscriber is not None
                assert subscriber.status == Status.ACTIVE
                [subscription] = get_subscriptions(conn, subscriber.id)
            assert (subscription.newsletter, subscription.categories) == ("weekly", ("Python",))

            # The first digest run only baselines; a post after it goes out the next Monday.
            make_editions(served.settings, served.store, SIGN_UP + timedelta(hours=2))
            (served.settings.posts_dir / "2026-03-04-new-python-note.md").write_text(
                NEW_POST, encoding="utf-8")
            digest_time = SIGN_UP + timedelta(days=7, hours=2)
            served.clock.now = digest_time
            report = make_editions(served.settings, served.store, digest_time)
            assert [(e.newsletter, e.kind, e.recipients) for e in report.made
                    if e.recipients] == [("weekly", "digest", 1)]
            with open_transport(served.settings.mail.transport) as transport:
                sent = send_queued(served.settings, served.store, transport,
                                   clock=lambda: digest_time)
            assert sent.sent == 1
            [digest] = [m for m in mail_in(served.outbox) if m["List-Unsubscribe"]]
            assert "A new Python note" in text_of(digest)
            header = re.search(r"<(http://[^>]+/unsubscribe/[^>]+)>",
                               str(digest["List-Unsubscribe"]))
            assert header is not None
            preferences = re.search(r"http://127\.0\.0\.1:\d+/preferences/\S+", text_of(digest))
            assert preferences is not None
            page.goto(preferences.group(0))
            page.get_by_role("heading", name="Your subscription").wait_for()
            snapshot("preferences")

            page.goto(header.group(1))
            page.get_by_role("heading", name="Unsubscribe").wait_for()
            snapshot("unsubscribe")
            with served.store.read() as conn:
                still = find_subscriber(conn, "reader.one@example.org")
            assert still is not None and still.status == Status.ACTIVE
            page.get_by_role("button", name="Unsubscribe").click()
            page.get_by_role("heading", name="You are unsubscribed").wait_for()
            snapshot("unsubscribed")
            with served.store.read() as conn:
                gone = find_subscriber(conn, "reader.one@example.org")
            assert gone is not None and gone.status == Status.UNSUBSCRIBED
        finally:
            browser.close()


def test_a_real_server_keeps_raw_dot_dot_paths_inside_public(served: Served) -> None:
    port = int(served.url.rpartition(":")[2])
    for target in ("/../feedpub.toml", "/categories/../../feedpub.toml", "/%2e%2e/feedpub.toml",
                   "/..%2f.feedpub-secret"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Connection: close\r\n\r\n".encode("ascii"))
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        status_line = answer.split(b"\r\n", 1)[0]
        assert b" 404 " in status_line or b" 400 " in status_line, (target, status_line)
        assert b"browser-secret" not in answer and b"[site]" not in answer


def test_a_real_server_answers_conditional_gets_and_gzip(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        first = client.get("/atom.xml", headers={"Accept-Encoding": "gzip"})
        assert first.headers["content-encoding"] == "gzip"
        assert first.content == (served.settings.public_dir / "atom.xml").read_bytes()
        again = client.get("/atom.xml", headers={"If-None-Match": first.headers["etag"],
                                                  "Accept-Encoding": "gzip"})
        assert again.status_code == 304
        assert again.content == b""
        head = client.head("/atom.xml", headers={"Accept-Encoding": "gzip"})
        assert head.headers["content-length"] == first.headers["content-length"]
        assert head.content == b""
        raw = client.get("/rss.xml", headers={"Accept-Encoding": "gzip"}).read()
        assert gzip.decompress(gzip.compress(raw)) == raw


def test_feedpub_serve_runs_the_app(make_site: SiteFactory, tmp_path: Path) -> None:
    port = free_port()
    site = make_site(POSTS, config=CONFIG.format(port=port))
    env = {**os.environ, "FEEDPUB_SECRET": "cli-secret",
           "FEEDPUB_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "feedpub", "--site", str(site), "serve", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert (response.status_code, response.text) == (200, "ok\n")
        subscribe = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=5)
        assert "Field Notes weekly" in subscribe.text
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert f"at http://127.0.0.1:{port}/" in stderr.decode()
