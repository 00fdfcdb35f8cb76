"""Fixtures every test module shares: sites on disk, databases, a real SMTP server."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from feedpub.config import Settings, load_settings
from tests.scratch import scratch_schema


@dataclass
class Clock:
    """The ``now`` that feedpub is handed: tests set and move it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


BASIC_CONFIG = """\
[site]
title = "Test Site"
url = "https://example.com/"
description = "A site for tests"
language = "en"
timezone = "UTC"
author = { name = "Ada Author", email = "ada@example.com" }
permalink = "/{year}/{month}/{day}/{slug}/"

[feed]
limit = 20
full_content = true

[mail]
from = "Test Site <news@example.com>"
transport = "maildir:outbox"
rate_limit = 0
postal_address = "1 Test Street, Testville"

[[newsletter]]
name = "weekly"
schedule = "0 9 * * MON"
"""


@dataclass
class SiteFactory:
    """Writes a site into a temporary folder: config, posts and any other files."""

    root: Path

    def __call__(
        self,
        posts: dict[str, str | bytes] | None = None,
        config: str = BASIC_CONFIG,
        files: dict[str, str | bytes] | None = None,
    ) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "feedpub.toml").write_text(config, encoding="utf-8")
        (self.root / "content" / "posts").mkdir(parents=True, exist_ok=True)
        for name, text in (posts or {}).items():
            self.write(f"content/posts/{name}", text)
        for name, text in (files or {}).items():
            self.write(name, text)
        return self.root

    def write(self, relpath: str, text: str | bytes) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(dedent(text).lstrip("\n") if text.startswith("\n") else text,
                            encoding="utf-8")
        return path

    def settings(self, env: dict[str, str] | None = None) -> Settings:
        return load_settings(self.root, env=env or {"FEEDPUB_SECRET": "test-secret"})


@pytest.fixture
def make_site(tmp_path: Path) -> SiteFactory:
    return SiteFactory(tmp_path / "site")


POSTGRES_URL = os.environ.get("FEEDPUB_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: an SQLite file, and, where FEEDPUB_TEST_DATABASE_URL
    is set, a schema of its own in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feedpub.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("FEEDPUB_TEST_DATABASE_URL is not set")
    with scratch_schema(POSTGRES_URL, prefix="t") as url:
        yield url


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpRecorder:
    """An aiosmtpd handler that records what it accepts and can be told to refuse.

    ``reply_for`` maps a recipient address to an SMTP reply (``"550 5.1.1 no such
    user"``) given at RCPT time; ``data_reply`` answers every DATA when set.
    """

    messages: list[ReceivedMessage] = field(default_factory=list)
    reply_for: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.reply_for.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_reply:
            return self.data_reply
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                ReceivedMessage(str(envelope.mail_from), list(envelope.rcpt_tos), content)
            )
        return "250 Message accepted"

    def count_by_recipient(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for received in self.messages:
                for rcpt in received.rcpt_tos:
                    counts[rcpt.lower()] = counts.get(rcpt.lower(), 0) + 1
        return counts


@dataclass
class SmtpServer:
    host: str
    port: int
    recorder: SmtpRecorder
    controller: Controller
    running: bool = True

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?tls=none"

    def stop(self) -> None:
        """The server goes down: connections are refused until :meth:`restart`."""
        self.controller.stop()
        self.running = False

    def restart(self) -> None:
        # A stopped Controller cannot start again: its event loop is closed.
        if self.running:
            self.stop()
        self.controller = Controller(self.recorder, hostname=self.host, port=self.port)
        self.controller.start()
        self.running = True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that records every message."""
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    server = SmtpServer("127.0.0.1", port, recorder, controller)
    try:
        yield server
    finally:
        if server.running:
            server.controller.stop()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Keeps the caller's FEEDPUB_* variables out of CLI tests."""
    for key in list(os.environ):
        if key.startswith("FEEDPUB_") and key != "FEEDPUB_TEST_DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FEEDPUB_SECRET", "test-secret")
    return monkeypatch.setenv


# --- a real browser and a plain static server ----------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
"""Screenshots the browser tests take, for people to look at (not committed)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """``python -m http.server`` on a free 127.0.0.1 port, serving ``folder``: what a
    static host does with ``public/``. Yields the base URL (no trailing ``/``)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def start_uvicorn(app: object, port: int) -> tuple[Any, threading.Thread]:
    """The app under a real uvicorn on 127.0.0.1:``port``, in a thread; returns once it
    accepts connections (set ``server.should_exit`` and join the thread to stop it)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,  # type: ignore[arg-type]
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, thread
