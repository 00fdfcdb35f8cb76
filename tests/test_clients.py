"""What real clients show: Chromium, newsboat, rss2email, neomutt and SpamAssassin.

Each is a Debian package (``.ci/run`` installs them); a test whose client is missing
is skipped and says which package to install. newsboat and neomutt are full-screen
programs: they run in a detached tmux session and the test reads the screen.
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from feedpub.build import build
from feedpub.catalog import load_catalog
from feedpub.config import Settings
from feedpub.mail.message import build_message
from feedpub.mail.render import render_edition
from feedpub.preview import sample_recipient
from feedpub.store import Store, open_store
from feedpub.web import create_app
from tests.conftest import (
    ARTIFACTS,
    BASIC_CONFIG,
    SiteFactory,
    free_port,
    start_uvicorn,
    static_server,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CODE = """\
function greet(name) {
    if (name) {
        return "hello " + name;
    }
}"""
CODE_LINES = CODE.splitlines()
POSTS = {
    "2026-02-01-code.md": (
        "---\ntitle: Code that reads line by line\ncategories: [Code]\n---\n"
        f"Some JavaScript:\n\n```js\n{CODE}\n```\n\nAnd a footnote.[^one]\n\n"
        "[^one]: The only one.\n"
    ),
    "2026-02-08-steps.md": (
        "---\ntitle: Three steps\n---\n"
        "1. Install:\n\n   ```sh\n   pip install feedpub\n   ```\n\n2. Build.\n\n3. Send.\n"
    ),
}


def need(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            package = {"r2e": "rss2email"}.get(program, program)
            pytest.skip(f"{program} is not installed (apt-get install {package})")




@dataclass
class Site:
    settings: Settings
    served: str
    """``feedpub serve``'s base URL (no trailing ``/``): also the site's URL."""
    static: str
    """``python -m http.server`` over the same ``public/``."""
    store: Store


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = BASIC_CONFIG.replace('url = "https://example.com/"', f'url = "{base}/"')
    config += f'\n[web]\nurl = "{base}/"\n'
    factory = SiteFactory(tmp_path_factory.mktemp("clients") / "site")
    factory(POSTS, config=config)
    settings = factory.settings({"FEEDPUB_SECRET": "clients-secret"})
    build(settings, NOW, jobs=1)
    store = open_store(f"sqlite:///{factory.root / 'feedpub.db'}")
    server, thread = start_uvicorn(create_app(settings, now=lambda: NOW, store=store), port)
    try:
        with static_server(settings.public_dir) as static:
            yield Site(settings, base, static, store)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        store.close()


# --- Chromium ----------------------------------------------------------------------------


def _screenshots(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (1200, 375):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        # Readable on a phone: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.browser
@pytest.mark.parametrize("feed", ["atom.xml", "rss.xml", "feed.json"])
def test_chromium_opening_a_feed_from_serve_gets_a_page(browser: Any, site: Site,
                                                        feed: str) -> None:
    page = browser.new_page()
    try:
        response = page.goto(f"{site.served}/{feed}")
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["vary"] == "Accept"
        assert page.locator("h1").inner_text() == "Test Site"
        assert page.locator("#feed-address").input_value() == f"{site.served}/{feed}"
        assert "feed reader" in page.locator("p.lead").inner_text()
        assert page.locator("ul.latest li a").all_inner_texts() == [
            "Three steps", "Code that reads line by line"]
        subscribe = page.locator("a.button")
        assert subscribe.get_attribute("href") == f"{site.served}/subscribe"
        if feed == "atom.xml":
            _screenshots(page, "feed-page-serve")
        subscribe.click()
        page.wait_for_url(f"{site.served}/subscribe")
        assert page.locator("input[type=email]").count() == 1
    finally:
        page.close()


@pytest.mark.browser
def test_chromium_on_a_static_host_finds_the_feeds_page(browser: Any, site: Site) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{site.static}/")
        page.get_by_role("link", name="Feeds", exact=True).first.click()
        page.wait_for_url(f"{site.static}/feeds/")
        addresses = [page.locator(f"#feed-address-{n}").input_value() for n in (1, 2, 3)]
        assert addresses == [f"{site.served}/atom.xml", f"{site.served}/rss.xml",
                             f"{site.served}/feed.json"]
        assert page.locator("ul.posts li a").first.inner_text() == "Three steps"
        assert page.locator("a.button").get_attribute("href") == f"{site.served}/subscribe"
        _screenshots(page, "feed-page-static")
        # No XSLT any more: the feed itself is plain XML, with no stylesheet to fetch.
        feed = page.request.get(f"{site.static}/atom.xml")
        assert b"xml-stylesheet" not in feed.body()
        assert page.request.get(f"{site.static}/feed.xsl").status == 404
    finally:
        page.close()


# --- feed readers --------------------------------------------------------------------------


class Tmux:
    """A full-screen program in a detached tmux session, read off its screen."""

    def __init__(self, name: str, command: Sequence[str], *, env: dict[str, str]) -> None:
        self.name = name
        # `env` on the command line: a tmux server that already runs keeps its own.
        settings = [f"{key}={value}" for key, value in env.items()]
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "50",
             " ".join(map(_quote, ["env", *settings, *command]))],
            check=True,
        )

    def keys(self, *keys: str, pause: float = 0.4) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)
            time.sleep(pause)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-t", self.name, "-p"], check=True,
                              capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared on screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False,
                       capture_output=True)


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def assert_reads_line_by_line(text: str) -> None:
    """Every line of the code on a line of its own, indentation kept."""
    lines = [line.rstrip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.strip() == CODE_LINES[0])
    indent = len(lines[start]) - len(lines[start].lstrip())
    shown = [line[indent:] for line in lines[start:start + len(CODE_LINES)]]
    assert shown == CODE_LINES, "\n".join(lines)


def test_newsboat_reads_the_served_feed_and_its_code_line_by_line(site: Site,
                                                                  tmp_path: Path) -> None:
    need("newsboat", "tmux")
    (tmp_path / "urls").write_text(f"{site.served}/atom.xml\n", encoding="utf-8")
    (tmp_path / "config").write_text("show-read-feeds yes\n", encoding="utf-8")
    command = ["newsboat", "-u", str(tmp_path / "urls"), "-c", str(tmp_path / "cache.db"),
               "-C", str(tmp_path / "config")]
    # From the command line first: the same URL a browser gets a page from is a feed.
    reloaded = subprocess.run([*command, "-x", "reload", "print-unread"], check=True,
                              capture_output=True, text=True, timeout=60)
    assert reloaded.stdout.strip() == "2 unread articles"
    session = Tmux(f"feedpub-newsboat-{os.getpid()}", command, env={"TERM": "xterm"})
    try:
        session.wait_for("Test Site")
        session.keys("Enter")
        session.wait_for("Code that reads line by line")
        session.keys("Down", "Enter")
        screen = session.wait_for("Some JavaScript:")
    finally:
        session.close()
    assert_reads_line_by_line(screen)


def test_rss2email_reads_the_served_feed_and_its_code_line_by_line(site: Site,
                                                                   tmp_path: Path) -> None:
    need("r2e")
    sent = tmp_path / "sent"
    sent.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f'#!/bin/sh\ncat > "{sent}/$(date +%s%N).eml"\n', encoding="utf-8")
    sendmail.chmod(0o755)
    config, data = str(tmp_path / "r2e.cfg"), str(tmp_path / "r2e.json")
    r2e = ["r2e", "-c", config, "-d", data]
    subprocess.run([*r2e, "new", "reader@example.org"], check=True, capture_output=True)
    text = Path(config).read_text(encoding="utf-8")
    Path(config).write_text(re.sub(r"(?m)^sendmail = .*$", f"sendmail = {sendmail}", text),
                            encoding="utf-8")
    subprocess.run([*r2e, "add", "site", f"{site.served}/atom.xml"], check=True,
                   capture_output=True)
    subprocess.run([*r2e, "run"], check=True, capture_output=True, timeout=60)
    messages = [message_from_bytes(p.read_bytes(), policy=policy.default)
                for p in sorted(sent.iterdir())]
    subjects = {str(m["Subject"]) for m in messages}
    assert subjects == {"Three steps", "Code that reads line by line"}
    code = next(m for m in messages if m["Subject"] == "Code that reads line by line")
    body = code.get_body(preferencelist=("plain",))
    assert body is not None
    assert_reads_line_by_line(body.get_content())


# --- email ---------------------------------------------------------------------------------


def emails(settings: Settings) -> dict[str, bytes]:
    """A digest of every post and the post email of the one with code, as subscribers
    get them."""
    catalog = load_catalog(settings, NOW)
    entries = catalog.load(catalog.published)
    newsletter = settings.newsletters[0]
    code = next(e for e in entries if e.title.startswith("Code"))
    made = {}
    for kind, chosen in (("digest", entries), ("post", [code])):
        rendered = render_edition(chosen, settings=settings, newsletter=newsletter,
                                  kind=kind, edition_id=f"{kind}-test", date=NOW)
        made[kind] = build_message(settings=settings, newsletter=newsletter, rendered=rendered,
                                   recipient=sample_recipient(settings),
                                   edition_key=f"{kind}/test", date=NOW)
    return made


def test_neomutt_shows_code_line_by_line(site: Site, tmp_path: Path) -> None:
    need("neomutt", "tmux")
    inbox = mailbox.Maildir(tmp_path / "inbox", create=True)
    inbox.add(emails(site.settings)["post"])
    inbox.close()
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"set folder={tmp_path}\nset spoolfile={tmp_path / 'inbox'}\n"
                      "set mbox_type=Maildir\nset sort=date\nset help=no\nset wait_key=no\n"
                      "ignore *\nunignore subject\n",
                      encoding="utf-8")
    session = Tmux(f"feedpub-neomutt-{os.getpid()}",
                   ["neomutt", "-n", "-F", str(muttrc), "-R", "-f", str(tmp_path / "inbox")],
                   env={"TERM": "xterm", "HOME": str(tmp_path)})
    try:
        session.wait_for("Code that reads line by line")
        session.keys("Enter")
        screen = session.wait_for("Some JavaScript:")
    finally:
        session.close()
    assert_reads_line_by_line(screen)


@pytest.mark.parametrize("kind", ["digest", "post"])
def test_spamassassin_finds_nothing_our_markup_causes(site: Site, kind: str,
                                                      tmp_path: Path) -> None:
    need("spamassassin")
    checked = subprocess.run(
        ["spamassassin", "-t", "-L", "-p", str(tmp_path / "user_prefs")],
        input=emails(site.settings)[kind], capture_output=True, timeout=120, check=False,
    )
    report = checked.stdout.decode("utf-8", "replace")
    match = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert match, report[-2000:]
    rules = re.findall(r"(?m)^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s", report)
    assert [name for points, name in rules if float(points) > 0] == [], report[-2000:]
    assert float(match.group(1)) <= 0
