"""`feedpub serve`: public/ files and the subscriber pages, through Starlette's TestClient."""

from __future__ import annotations

import gzip
import mailbox
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import lxml.html
import pytest
from click.testing import CliRunner

from feedpub.build import build
from feedpub.cli import main
from feedpub.config import Settings
from feedpub.store import (
    Mode,
    Status,
    Store,
    Subscriber,
    add_subscriber,
    create_store_engine,
    find_subscriber,
    forget_subscriber,
    get_events,
    get_subscriptions,
    open_store,
    set_subscription,
)
from feedpub.tokens import Purpose
from feedpub.web import RateLimit, WebLimits, actions, create_app, link
from tests.conftest import Clock, SiteFactory, SmtpServer

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; httpx is what the project installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

WEB_URL = "https://news.example.com/"
BASE = "https://news.example.com"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

CONFIG = """\
[site]
title = "Tëst & <Site>"
url = "https://example.com/"
description = "Notes on Python, 機器學習 and more"
language = "{language}"
timezone = "Asia/Taipei"

[mail]
from = "Test Site <news@example.com>"
transport = "maildir:outbox"
rate_limit = 0

[web]
url = "https://news.example.com/"
confirm_days = 3

[pages]
enabled = false  # serve on a feeds-only site; tests/test_pages.py serves the pages

[[newsletter]]
name = "weekly"
title = "The Weekly"
description = "Every Monday morning"

[[newsletter]]
name = "daily"
title = "Daily notes"
schedule = "0 8 * * *"
"""

POSTS = {
    "2026-01-05-first.md": (
        "---\ntitle: \"First\\npost\"\ncategories: [Python, 機器學習]\n---\nHello **world**.\n"
    ),
    "2026-01-12-second.md": (
        "---\ntitle: 第二篇 🎉\ncategories: 機器學習 🎉\n---\n中文內容。\n\n" + "More text. " * 80
    ),
    "2026-01-19-third.md": "---\ntitle: Third\n---\nNo categories here.\n",
}


@dataclass
class Web:
    settings: Settings
    store: Store
    client: TestClient
    clock: Clock
    outbox: Path
    seen: set[str] = field(default_factory=set)

    def new_mail(self) -> list[EmailMessage]:
        """Messages delivered to the Maildir since the last call."""
        if not (self.outbox / "new").is_dir():
            return []
        found = []
        for key, raw in mailbox.Maildir(self.outbox, factory=None, create=False).items():
            if key in self.seen:
                continue
            self.seen.add(key)
            parsed = message_from_bytes(raw.as_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    def form_token(self) -> str:
        page = self.client.get("/subscribe")
        match = re.search(r'name="form_token" value="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    def subscribe(self, email: str, *, headers: dict[str, str] | None = None,
                  **fields: str | list[str]) -> object:
        data: dict[str, str | list[str]] = {
            "email": email, "newsletter": "weekly", "mode-weekly": "digest",
            "form_token": self.form_token(),
        }
        data.update(fields)
        return self.client.post("/subscribe", data=data, headers=headers or {})

    def subscriber(self, email: str) -> Subscriber:
        with self.store.read() as conn:
            found = find_subscriber(conn, email)
        assert found is not None
        return found


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    content: str = body.get_content()
    return content


def tampered(token: str) -> str:
    """One character of the signed text changed (the last one of a base64 signature
    may carry only padding bits, so changing it can leave the signature valid)."""
    return ("X" if token[0] != "X" else "Y") + token[1:]


def confirm_url(message: EmailMessage) -> str:
    match = re.search(r"https://news\.example\.com/confirm/[A-Za-z0-9_.\-]+", text_of(message))
    assert match, text_of(message)
    return match.group(0)


@contextmanager
def make_web(
    make_site: SiteFactory, database_url: str, *, language: str = "en",
    limits: WebLimits | None = None, extra_env: dict[str, str] | None = None,
    client: tuple[str, int] = ("198.51.100.7", 40000), built: Path | None = None,
) -> Iterator[Web]:
    """The site built (or ``built``'s public/ and build cache copied), and its app."""
    make_site(POSTS, config=CONFIG.format(language=language))
    env = {"FEEDPUB_SECRET": "web-test-secret", "FEEDPUB_DATABASE_URL": database_url,
           **(extra_env or {})}
    settings = make_site.settings(env)
    if built is None:
        build(settings, START)
    else:
        shutil.copytree(built / "public", settings.public_dir)
        shutil.copytree(built / ".feedpub-cache", settings.cache_dir)
    clock = Clock(START)
    store = open_store(database_url)
    app = create_app(settings, now=clock, store=store, limits=limits)
    try:
        with TestClient(app, base_url=BASE, client=client) as test_client:
            yield Web(settings, store, test_client, clock, make_site.root / "outbox")
    finally:
        store.close()


WebFactory = Callable[..., Web]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The English site built once: each test copies its public/ and build cache."""
    factory = SiteFactory(tmp_path_factory.mktemp("built") / "site")
    factory(POSTS, config=CONFIG.format(language="en"))
    build(factory.settings(), START)
    return factory.root


@pytest.fixture
def web_factory(make_site: SiteFactory, database_url: str, built: Path
                ) -> Iterator[WebFactory]:
    """Makes the app with other settings (limits, environment); one per test."""
    with ExitStack() as stack:
        def factory(**options: object) -> Web:
            return stack.enter_context(
                make_web(make_site, database_url, built=built, **options)  # type: ignore[arg-type]
            )

        yield factory


@pytest.fixture
def web(web_factory: WebFactory) -> Web:
    return web_factory()


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite store with every migration applied, to copy."""
    path = tmp_path_factory.mktemp("db") / "migrated.db"
    open_store(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def sqlite_web(make_site: SiteFactory, tmp_path: Path, built: Path, migrated_sqlite: Path
               ) -> Iterator[Web]:
    """For what does not depend on the database (public/ files, the form's guards)."""
    shutil.copyfile(migrated_sqlite, tmp_path / "files.db")
    with make_web(make_site, f"sqlite:///{tmp_path / 'files.db'}", built=built) as web:
        yield web



def active_subscriber(web: Web, email: str, *newsletters: str) -> Subscriber:
    with web.store.write() as conn:
        subscriber = add_subscriber(conn, email, now=START, status=Status.ACTIVE).subscriber
        for name in newsletters or ("weekly",):
            set_subscription(conn, subscriber.id, name, now=START)
    return subscriber


# --- public/ ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/atom.xml", "application/atom+xml; charset=utf-8"),
        ("/rss.xml", "application/rss+xml; charset=utf-8"),
        ("/feed.json", "application/feed+json; charset=utf-8"),
        ("/categories/python/atom.xml", "application/atom+xml; charset=utf-8"),
        ("/categories/python/rss.xml", "application/rss+xml; charset=utf-8"),
    ],
)
def test_feeds_have_their_content_types(sqlite_web: Web, path: str, content_type: str) -> None:
    response = sqlite_web.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (sqlite_web.settings.public_dir / path.lstrip("/")).read_bytes()


def test_the_atom_feed_served_is_a_feed(sqlite_web: Web) -> None:
    import feedparser

    parsed = feedparser.parse(sqlite_web.client.get("/atom.xml").content)
    assert not parsed.bozo
    assert {entry.title for entry in parsed.entries} == {"First post", "第二篇 🎉", "Third"}


def test_edition_pages_are_html_and_folders_need_their_slash(sqlite_web: Web) -> None:
    public = sqlite_web.settings.public_dir
    (public / "editions" / "weekly").mkdir(parents=True)
    (public / "editions" / "weekly" / "2026-w02.html").write_text("<p>週報</p>", encoding="utf-8")
    (public / "editions" / "weekly" / "index.html").write_text("<p>all</p>", encoding="utf-8")
    page = sqlite_web.client.get("/editions/weekly/2026-w02.html")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == "<p>週報</p>"
    moved = sqlite_web.client.get("/editions/weekly", follow_redirects=False)
    assert moved.status_code == 301
    assert moved.headers["location"] == "weekly/"
    assert sqlite_web.client.get("/editions/weekly/").text == "<p>all</p>"


def test_home_is_the_subscribe_page_until_public_has_an_index(sqlite_web: Web) -> None:
    assert "Subscribe to Tëst &amp; &lt;Site&gt;" in sqlite_web.client.get("/").text
    (sqlite_web.settings.public_dir / "index.html").write_text("<h1>home</h1>", encoding="utf-8")
    assert sqlite_web.client.get("/").text == "<h1>home</h1>"


def test_a_missing_file_is_a_404_page(sqlite_web: Web) -> None:
    response = sqlite_web.client.get("/nothing-here.xml")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text


def test_files_cannot_be_posted_to(sqlite_web: Web) -> None:
    assert sqlite_web.client.post("/atom.xml").status_code == 405


def test_etag_answers_304_and_changes_when_the_file_changes(sqlite_web: Web) -> None:
    client = sqlite_web.client
    first = client.get("/atom.xml", headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag), "a strong validator"
    again = client.get("/atom.xml", headers={"If-None-Match": etag,
                                              "Accept-Encoding": "identity"})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == first.headers["cache-control"]
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        assert client.get("/atom.xml", headers={"If-None-Match": header}).status_code == 304
    assert client.get("/atom.xml", headers={"If-None-Match": '"other"'}).status_code == 200

    feed = sqlite_web.settings.public_dir / "atom.xml"
    feed.write_bytes(feed.read_bytes().replace(b"First", b"Changed"))
    changed = client.get("/atom.xml", headers={"If-None-Match": etag,
                                                "Accept-Encoding": "identity"})
    assert changed.status_code == 200
    assert b"Changed" in changed.content
    assert changed.headers["etag"] != etag


def test_last_modified_answers_304_to_if_modified_since(sqlite_web: Web) -> None:
    client = sqlite_web.client
    feed = sqlite_web.settings.public_dir / "rss.xml"
    mtime = datetime(2026, 2, 1, 12, 0, 30, tzinfo=UTC).timestamp()
    import os

    os.utime(feed, (mtime, mtime))
    response = client.get("/rss.xml")
    assert response.headers["last-modified"] == "Sun, 01 Feb 2026 12:00:30 GMT"
    same = client.get("/rss.xml", headers={"If-Modified-Since": "Sun, 01 Feb 2026 12:00:30 GMT"})
    assert same.status_code == 304
    later = client.get("/rss.xml", headers={"If-Modified-Since": "Mon, 02 Feb 2026 00:00:00 GMT"})
    assert later.status_code == 304
    earlier = client.get("/rss.xml",
                         headers={"If-Modified-Since": "Sun, 01 Feb 2026 12:00:29 GMT"})
    assert earlier.status_code == 200
    assert client.get("/rss.xml", headers={"If-Modified-Since": "yesterday"}).status_code == 200


def test_if_none_match_wins_over_if_modified_since(sqlite_web: Web) -> None:
    client = sqlite_web.client
    first = client.get("/feed.json")
    future = format_datetime(datetime(2099, 1, 1, tzinfo=UTC), usegmt=True)
    stale = client.get("/feed.json", headers={"If-None-Match": '"old"',
                                               "If-Modified-Since": future})
    assert stale.status_code == 200
    fresh = client.get("/feed.json", headers={
        "If-None-Match": first.headers["etag"],
        "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT",
    })
    assert fresh.status_code == 304


def test_gzip_is_its_own_representation(sqlite_web: Web) -> None:
    client = sqlite_web.client
    plain = client.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept, Accept-Encoding"  # a feed: browsers get a page
    with client.stream("GET", "/rss.xml", headers={"Accept-Encoding": "br, gzip"}) as packed:
        raw = b"".join(packed.iter_raw())
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.headers["vary"] == "Accept, Accept-Encoding"
        assert int(packed.headers["content-length"]) == len(raw) < len(plain.content)
        gzip_etag = packed.headers["etag"]
    assert gzip.decompress(raw) == plain.content
    assert gzip_etag != plain.headers["etag"]
    # Either validator names the same bytes: both answer 304 whatever the client accepts.
    for etag in (gzip_etag, plain.headers["etag"]):
        for accept in ("gzip", "identity"):
            response = client.get("/rss.xml", headers={"If-None-Match": etag,
                                                         "Accept-Encoding": accept})
            assert response.status_code == 304
    refused = client.get("/rss.xml", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers
    assert refused.headers["etag"] == plain.headers["etag"]


def test_head_has_the_headers_of_get_and_no_body(sqlite_web: Web) -> None:
    client = sqlite_web.client
    get = client.get("/atom.xml", headers={"Accept-Encoding": "identity"})
    head = client.head("/atom.xml", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    for name in ("etag", "last-modified", "content-type", "content-length", "cache-control"):
        assert head.headers[name] == get.headers[name]
    assert client.head("/atom.xml", headers={"If-None-Match": get.headers["etag"]}
                       ).status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/%2e%2e/feedpub.toml",
        "/%2E%2E/feedpub.toml",
        "/..%2ffeedpub.toml",
        "/%2e%2e%2ffeedpub.toml",
        "/categories/%2e%2e/%2e%2e/feedpub.toml",
        "/..%5cfeedpub.toml",
        "//etc/passwd",
        "/%2fetc/passwd",
        "/atom.xml%00.html",
        "/.feedpub-secret",
        "/%2e%2e/.feedpub-secret",
    ],
)
def test_no_path_leaves_public(sqlite_web: Web, path: str) -> None:
    response = sqlite_web.client.get(path)
    assert response.status_code == 404
    assert "web-test-secret" not in response.text
    assert "[site]" not in response.text
    assert "root:" not in response.text


def test_symlinks_out_of_public_are_not_followed(sqlite_web: Web) -> None:
    public = sqlite_web.settings.public_dir
    (public / "config.xml").symlink_to(sqlite_web.settings.config_path)
    (public / "etc").symlink_to("/etc")
    (public / "latest.xml").symlink_to(public / "atom.xml")
    assert sqlite_web.client.get("/config.xml").status_code == 404
    assert sqlite_web.client.get("/etc/hostname").status_code == 404
    inside = sqlite_web.client.get("/latest.xml")
    assert inside.status_code == 200
    assert inside.content == (public / "atom.xml").read_bytes()


# --- the subscribe page ---------------------------------------------------------------


def test_subscribe_page_is_labelled_and_discovers_the_feeds(sqlite_web: Web) -> None:
    response = sqlite_web.client.get("/subscribe")
    assert response.status_code == 200
    page = lxml.html.fromstring(response.text)
    assert page.get("lang") == "en"
    alternates = {(link.get("type"), link.get("href"))
                  for link in page.iter("link") if link.get("rel") == "alternate"}
    assert alternates == {
        ("application/atom+xml", "https://example.com/atom.xml"),
        ("application/rss+xml", "https://example.com/rss.xml"),
        ("application/feed+json", "https://example.com/feed.json"),
    }
    labels = {label.get("for") for label in page.iter("label")}
    visible = [i for i in page.iter("input") if i.get("type") != "hidden"]
    assert visible
    for field_ in visible:
        assert field_.get("id") in labels, lxml.html.tostring(field_)
    boxes = page.xpath('//input[@name="newsletter"]')
    assert [box.get("value") for box in boxes] == ["weekly", "daily"]
    categories = [box.get("value") for box in page.xpath('//input[@name="category"]')]
    assert categories == ["Python", "機器學習", "🎉"]
    assert page.xpath('//input[@name="homepage"]/@tabindex') == ["-1"]
    assert "<script" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"


def test_pages_speak_the_site_language(make_site: SiteFactory, tmp_path: Path) -> None:
    with make_web(make_site, f"sqlite:///{tmp_path / 'zh.db'}", language="zh-TW") as web:
        page = lxml.html.fromstring(web.client.get("/subscribe").text)
    assert page.get("lang") == "zh-TW"
    assert page.xpath("//button/text()") == ["訂閱"]


def test_a_new_address_becomes_pending_and_gets_a_confirmation(web: Web) -> None:
    response = web.subscribe(
        "Ada.Lovelace@Example.COM",
        newsletter=["weekly", "daily"], **{"mode-daily": "instant"},
        category=["機器學習", "not offered"],
    )
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    subscriber = web.subscriber("ada.lovelace@example.com")
    assert subscriber.status == Status.PENDING
    assert subscriber.source == "web"
    with web.store.read() as conn:
        subscriptions = {s.newsletter: s for s in get_subscriptions(conn, subscriber.id)}
    assert {name: s.mode for name, s in subscriptions.items()} == {
        "weekly": Mode.DIGEST, "daily": Mode.INSTANT}
    assert subscriptions["daily"].categories == ("機器學習",)
    [mail] = web.new_mail()
    assert mail["To"] == "Ada.Lovelace@example.com"
    assert "confirm" in mail["Subject"].lower()
    assert "List-Unsubscribe" not in mail
    assert confirm_url(mail).startswith(WEB_URL + "confirm/")


def test_the_answer_is_the_same_whoever_the_address_belongs_to(web: Web) -> None:
    active = active_subscriber(web, "active@example.com", "daily")
    web.subscribe("pending@example.com")
    web.new_mail()
    answers = {
        email: web.subscribe(email, newsletter="weekly") for email in
        ("new@example.com", "pending@example.com", "active@example.com")
    }
    assert {a.status_code for a in answers.values()} == {200}
    assert len({a.text for a in answers.values()}) == 1
    assert len({tuple(sorted(a.headers.items())) for a in answers.values()}) == 1
    mailed = sorted(str(m["To"]) for m in web.new_mail())
    assert mailed == ["new@example.com", "pending@example.com"]
    with web.store.read() as conn:
        assert [s.newsletter for s in get_subscriptions(conn, active.id)] == ["daily"]
    assert web.subscriber("active@example.com").status == Status.ACTIVE


def test_the_honeypot_takes_nothing(sqlite_web: Web) -> None:
    response = sqlite_web.subscribe("bot@example.com", homepage="http://spam.example")
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    with sqlite_web.store.read() as conn:
        assert find_subscriber(conn, "bot@example.com") is None
    assert sqlite_web.new_mail() == []


def test_bad_input_shows_the_form_again(sqlite_web: Web) -> None:
    bad = sqlite_web.subscribe('"><script>alert(1)</script>')
    assert bad.status_code == 400
    page = lxml.html.fromstring(bad.text)
    [email] = page.xpath('//input[@name="email"]')
    assert email.get("value") == '"><script>alert(1)</script>'
    assert email.get("aria-invalid") == "true"
    assert "<script>alert" not in bad.text
    empty = sqlite_web.subscribe("   ")
    assert empty.status_code == 400
    assert "Enter your email address." in empty.text
    none_chosen = sqlite_web.subscribe("x@example.com", newsletter="no-such-list")
    assert none_chosen.status_code == 400
    assert "Choose at least one newsletter." in none_chosen.text
    with sqlite_web.store.read() as conn:
        assert find_subscriber(conn, "x@example.com") is None
    assert sqlite_web.new_mail() == []


def test_a_form_without_a_valid_recent_token_is_refused(sqlite_web: Web) -> None:
    token = sqlite_web.form_token()
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for value in ("", tampered):
        response = sqlite_web.client.post("/subscribe", data={
            "email": "late@example.com", "newsletter": "weekly", "form_token": value})
        assert response.status_code == 400
        assert 'value="late@example.com"' in response.text
    sqlite_web.clock.advance(days=3)
    old = sqlite_web.client.post("/subscribe", data={
        "email": "late@example.com", "newsletter": "weekly", "form_token": token})
    assert old.status_code == 400
    assert "too long" in old.text
    with sqlite_web.store.read() as conn:
        assert find_subscriber(conn, "late@example.com") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "https://news.example.com.evil.example"},
        {"Referer": "https://evil.example/page"},
    ],
)
def test_posts_from_other_sites_are_refused(sqlite_web: Web, headers: dict[str, str]) -> None:
    response = sqlite_web.subscribe("victim@example.com", headers=headers)
    assert response.status_code == 403
    with sqlite_web.store.read() as conn:
        assert find_subscriber(conn, "victim@example.com") is None
    assert sqlite_web.new_mail() == []


def test_long_or_unannounced_bodies_are_refused_before_they_are_read(sqlite_web: Web) -> None:
    huge = sqlite_web.client.post("/subscribe", content=b"email=" + b"a" * 70_000,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b"email=chunked%40example.com&newsletter=weekly"

    chunked = sqlite_web.client.post("/subscribe", content=chunks(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 411
    with sqlite_web.store.read() as conn:
        assert find_subscriber(conn, "chunked@example.com") is None


def test_posts_from_our_own_pages_are_accepted(sqlite_web: Web) -> None:
    assert sqlite_web.subscribe("a@example.com", headers={"Origin": BASE}).status_code == 200
    assert sqlite_web.subscribe("b@example.com", headers={"Referer": BASE + "/subscribe"}
                         ).status_code == 200
    assert len(sqlite_web.new_mail()) == 2


def test_too_many_posts_from_one_client_are_refused(web_factory: WebFactory) -> None:
    limits = WebLimits(per_client=RateLimit(burst=2, interval=timedelta(minutes=10)))
    web = web_factory(limits=limits)
    assert web.subscribe("one@example.com").status_code == 200
    assert web.subscribe("two@example.com").status_code == 200
    refused = web.subscribe("three@example.com")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "600"
    with web.store.read() as conn:
        assert find_subscriber(conn, "three@example.com") is None
    web.clock.advance(minutes=10)
    assert web.subscribe("three@example.com").status_code == 200
    assert len(web.new_mail()) == 3


def test_one_address_gets_few_confirmations_whatever_it_is_written_like(
    web_factory: WebFactory,
) -> None:
    limits = WebLimits(per_address=RateLimit(burst=1, interval=timedelta(hours=1)))
    web = web_factory(limits=limits)
    first = web.subscribe("inbox@example.com")
    assert len(web.new_mail()) == 1
    second = web.subscribe("INBOX@Example.com")
    assert second.text == first.text
    assert web.new_mail() == []
    assert web.subscribe("other@example.com").status_code == 200
    assert len(web.new_mail()) == 1
    web.clock.advance(hours=1)
    web.subscribe("inbox@example.com")
    assert len(web.new_mail()) == 1


def test_the_confirmation_goes_through_smtp_when_configured(
    web_factory: WebFactory, smtp_server: SmtpServer
) -> None:
    web = web_factory(extra_env={"FEEDPUB_MAIL_TRANSPORT": smtp_server.url})
    web.subscribe("smtp@example.com")
    [received] = smtp_server.recorder.messages
    assert received.rcpt_tos == ["smtp@example.com"]
    assert "/confirm/" in text_of(received.message)


def test_a_refusing_mail_server_does_not_change_the_answer(
    web_factory: WebFactory, smtp_server: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp_server.recorder.data_reply = "451 4.3.0 try later"
    web = web_factory(extra_env={"FEEDPUB_MAIL_TRANSPORT": smtp_server.url})
    response = web.subscribe("unlucky@example.com")
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    assert web.subscriber("unlucky@example.com").status == Status.PENDING
    assert any("could not send the confirmation" in r.getMessage() for r in caplog.records)


# --- confirm ------------------------------------------------------------------------


def test_the_confirmation_link_activates(web: Web) -> None:
    web.subscribe("ada@example.com")
    [mail] = web.new_mail()
    web.clock.advance(days=2, hours=23)
    response = web.client.get(confirm_url(mail))
    assert response.status_code == 200
    assert "You are subscribed" in response.text
    subscriber = web.subscriber("ada@example.com")
    assert subscriber.status == Status.ACTIVE
    with web.store.read() as conn:
        assert [(e.event, e.source) for e in get_events(conn, subscriber.id)] == [
            ("pending", "web"), ("active", "web")]
    assert web.client.get(confirm_url(mail)).status_code == 200
    assert web.subscriber("ada@example.com").status == Status.ACTIVE


def test_tampered_expired_and_foreign_confirmation_links_change_nothing(web: Web) -> None:
    web.subscribe("ada@example.com")
    [mail] = web.new_mail()
    url = confirm_url(mail)
    token = url.rpartition("/")[2]
    subscriber = web.subscriber("ada@example.com")
    unsubscribe_token = link(web.settings, Purpose.UNSUBSCRIBE, subscriber,
                             now=web.clock()).rpartition("/")[2]
    flipped = tampered(token)
    for bad in (flipped, token[:-5], unsubscribe_token, "not-a-token"):
        response = web.client.get(f"/confirm/{bad}")
        assert response.status_code == 400
        assert "This link does not work" in response.text
    web.clock.advance(days=3, seconds=1)
    expired = web.client.get(url)
    assert expired.status_code == 400
    assert "expired" in expired.text
    assert web.subscriber("ada@example.com").status == Status.PENDING


def test_an_old_confirmation_never_undoes_a_later_unsubscribe(web: Web) -> None:
    web.subscribe("ada@example.com")
    [mail] = web.new_mail()
    web.client.get(confirm_url(mail))
    subscriber = web.subscriber("ada@example.com")
    web.clock.advance(minutes=5)
    web.client.post(link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock()))
    web.clock.advance(minutes=5)
    assert web.client.get(confirm_url(mail)).status_code == 400
    assert web.subscriber("ada@example.com").status == Status.UNSUBSCRIBED


def test_someone_who_left_can_come_back_by_confirming_again(web: Web) -> None:
    subscriber = active_subscriber(web, "back@example.com")
    web.client.post(link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock()))
    web.clock.advance(days=1)
    web.subscribe("back@example.com", newsletter="daily", **{"mode-daily": "instant"})
    assert web.subscriber("back@example.com").status == Status.UNSUBSCRIBED
    [mail] = web.new_mail()
    web.clock.advance(minutes=1)
    assert web.client.get(confirm_url(mail)).status_code == 200
    assert web.subscriber("back@example.com").status == Status.ACTIVE
    with web.store.read() as conn:
        assert [(s.newsletter, s.mode) for s in get_subscriptions(conn, subscriber.id)] == [
            ("daily", Mode.INSTANT)]


# --- unsubscribe ---------------------------------------------------------------------


def test_get_shows_a_button_and_changes_nothing(web: Web) -> None:
    subscriber = active_subscriber(web, "reader@example.com")
    url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    for _ in range(2):
        page = web.client.get(url)
        assert page.status_code == 200
        tree = lxml.html.fromstring(page.text)
        [form] = tree.xpath("//form")
        assert form.get("method") == "post"
        assert len(tree.xpath("//form//button")) == 1
    assert web.subscriber("reader@example.com").status == Status.ACTIVE


def test_the_button_unsubscribes(web: Web) -> None:
    subscriber = active_subscriber(web, "reader@example.com")
    url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    response = web.client.post(url, data={}, headers={"Origin": BASE})
    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    assert web.subscriber("reader@example.com").status == Status.UNSUBSCRIBED
    with web.store.read() as conn:
        last = get_events(conn, subscriber.id)[-1]
    assert (last.event, last.source, last.detail) == ("unsubscribed", "web", "unsubscribe page")


@pytest.mark.parametrize("multipart", [False, True])
def test_one_click_unsubscribe_rfc_8058(web: Web, multipart: bool) -> None:
    subscriber = active_subscriber(web, "reader@example.com")
    url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    web.client.cookies.clear()
    if multipart:
        response = web.client.post(url, files={"List-Unsubscribe": (None, "One-Click")},
                                   headers={"Origin": "https://mail.example.net"})
    else:
        response = web.client.post(
            url, content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert len(response.content) < 100
    assert web.subscriber("reader@example.com").status == Status.UNSUBSCRIBED
    with web.store.read() as conn:
        assert get_events(conn, subscriber.id)[-1].detail == "one-click (RFC 8058)"


def test_bad_unsubscribe_links_change_nothing(web: Web) -> None:
    subscriber = active_subscriber(web, "reader@example.com")
    url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    token = url.rpartition("/")[2]
    confirm_token = link(web.settings, Purpose.CONFIRM, subscriber,
                         now=web.clock()).rpartition("/")[2]
    flipped = tampered(token)
    for bad in (flipped, confirm_token, token + "x"):
        assert web.client.get(f"/unsubscribe/{bad}").status_code == 400
        one_click = web.client.post(f"/unsubscribe/{bad}",
                                    data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 400
        assert web.client.post(f"/unsubscribe/{bad}").status_code == 400
    assert web.subscriber("reader@example.com").status == Status.ACTIVE


def test_links_of_a_forgotten_subscriber_stop_working(web: Web) -> None:
    subscriber = active_subscriber(web, "gone@example.com")
    url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    with web.store.write() as conn:
        forget_subscriber(conn, subscriber.id, now=web.clock())
    assert web.client.get(url).status_code == 400
    assert web.client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 400


# --- preferences ---------------------------------------------------------------------


def test_preferences_show_and_change_the_subscriptions(web: Web) -> None:
    subscriber = active_subscriber(web, "prefs@example.com", "weekly")
    url = link(web.settings, Purpose.PREFERENCES, subscriber, now=web.clock())
    page = lxml.html.fromstring(web.client.get(url).text)
    assert page.xpath('//input[@name="newsletter"][@checked]/@value') == ["weekly"]
    assert page.xpath('//input[@name="mode-weekly"][@checked]/@value') == ["digest"]
    assert page.xpath('//input[@name="category"][@checked]') == []
    saved = web.client.post(url, data={
        "newsletter": ["daily"], "mode-daily": "instant", "category": ["Python", "🎉", "bogus"],
    })
    assert saved.status_code == 200
    assert "Saved" in saved.text
    with web.store.read() as conn:
        [only] = get_subscriptions(conn, subscriber.id)
    assert (only.newsletter, only.mode, only.categories) == ("daily", Mode.INSTANT,
                                                             ("Python", "🎉"))
    page = lxml.html.fromstring(web.client.get(url).text)
    assert page.xpath('//input[@name="category"][@checked]/@value') == ["Python", "🎉"]


def test_preferences_refuse_empty_foreign_and_tampered_posts(web: Web) -> None:
    subscriber = active_subscriber(web, "prefs@example.com", "weekly")
    url = link(web.settings, Purpose.PREFERENCES, subscriber, now=web.clock())
    assert web.client.post(url, data={}).status_code == 400
    assert web.client.post(url, data={"newsletter": "daily"},
                           headers={"Origin": "https://evil.example"}).status_code == 403
    unsubscribe_url = link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock())
    foreign = f"{BASE}/preferences/{unsubscribe_url.rpartition('/')[2]}"
    assert web.client.get(foreign).status_code == 400
    assert web.client.post(foreign, data={"newsletter": "daily"}).status_code == 400
    with web.store.read() as conn:
        assert [s.newsletter for s in get_subscriptions(conn, subscriber.id)] == ["weekly"]


def test_saving_preferences_after_leaving_subscribes_again(web: Web) -> None:
    subscriber = active_subscriber(web, "again@example.com")
    web.client.post(link(web.settings, Purpose.UNSUBSCRIBE, subscriber, now=web.clock()))
    url = link(web.settings, Purpose.PREFERENCES, subscriber, now=web.clock())
    assert "not subscribed at the moment" in web.client.get(url).text
    web.clock.advance(minutes=1)
    web.client.post(url, data={"newsletter": "weekly", "mode-weekly": "digest"})
    assert web.subscriber("again@example.com").status == Status.ACTIVE


# --- health, the library without HTTP, the command -------------------------------------


def test_healthz(web: Web) -> None:
    response = web.client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2",
            "sqlite:////nonexistent-folder-for-feedpub/feedpub.db"],
)
def test_healthz_says_when_the_store_is_unreachable(make_site: SiteFactory, url: str) -> None:
    make_site(POSTS, config=CONFIG.format(language="en"))
    settings = make_site.settings()
    store = Store(create_store_engine(url))
    try:
        with TestClient(create_app(settings, store=store)) as client:
            response = client.get("/healthz")
    finally:
        store.close()
    assert response.status_code == 503
    assert "unreachable" in response.text


def test_the_app_opens_and_closes_its_own_store(make_site: SiteFactory, database_url: str
                                                ) -> None:
    make_site(POSTS, config=CONFIG.format(language="en"))
    settings = make_site.settings({"FEEDPUB_SECRET": "s", "FEEDPUB_DATABASE_URL": database_url})
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200


def test_the_library_does_what_the_pages_do(web: Web) -> None:
    selection = actions.Selection((actions.Choice("daily", Mode.INSTANT),), ("Python",))
    confirmation = actions.request_subscription(
        web.store, web.settings, "lib@example.com", selection, now=web.clock())
    assert confirmation is not None
    actions.send_confirmation(web.settings, confirmation, now=web.clock())
    [mail] = web.new_mail()
    subscriber = actions.confirm(web.store, web.settings, confirm_url(mail).rpartition("/")[2],
                                 now=web.clock())
    assert subscriber.status == Status.ACTIVE
    assert actions.request_subscription(
        web.store, web.settings, "lib@example.com", selection, now=web.clock()) is None
    with pytest.raises(ValueError, match="no newsletter named 'nope'"):
        actions.request_subscription(web.store, web.settings, "x@example.com",
                                     actions.Selection((actions.Choice("nope"),)),
                                     now=web.clock())


def test_serve_without_a_secret_is_one_line_and_exit_2(
    make_site: SiteFactory, cli_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(POSTS, config=CONFIG.format(language="en"))
    monkeypatch.delenv("FEEDPUB_SECRET")
    result = CliRunner().invoke(main, ["--site", str(site), "serve"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "FEEDPUB_SECRET" in result.output
    assert "Traceback" not in result.output


def test_serve_help_teaches(cli_env: object) -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for text in ("--host", "--port", "--forwarded-allow-ips", "feedpub --site mysite serve"):
        assert text in result.output


# --- serve follows the latest build -------------------------------------------------------


def test_a_build_shows_its_new_categories_without_a_restart(sqlite_web: Web) -> None:
    def offered() -> list[str]:
        page = lxml.html.fromstring(sqlite_web.client.get("/subscribe").text)
        return [str(box) for box in page.xpath('//input[@name="category"]/@value')]

    assert offered() == ["Python", "機器學習", "🎉"]
    (sqlite_web.settings.posts_dir / "2026-02-01-rust.md").write_text(
        "---\ntitle: Rust\ncategories: [Rust]\n---\nBorrowing.\n", encoding="utf-8"
    )
    sqlite_web.clock.advance(seconds=5)  # well within the list's time to live
    build(sqlite_web.settings, sqlite_web.clock.now)
    assert offered() == ["Python", "Rust", "機器學習", "🎉"]


# --- a feed opened in a browser ------------------------------------------------------------

CHROMIUM_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                   "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
FEEDPARSER_ACCEPT = ("application/atom+xml,application/rdf+xml,application/rss+xml,"
                     "application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1")


@pytest.mark.parametrize("path", ["/atom.xml", "/rss.xml", "/feed.json",
                                  "/categories/python/atom.xml"])
def test_a_browser_gets_a_page_of_the_feed_and_a_reader_the_feed(sqlite_web: Web,
                                                                  path: str) -> None:
    public = sqlite_web.settings.public_dir
    page = sqlite_web.client.get(path, headers={"Accept": CHROMIUM_ACCEPT})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["vary"] == "Accept"
    assert page.headers["cache-control"] == "public, max-age=300"
    html = lxml.html.fromstring(page.text)
    feed_url = "https://example.com" + path
    assert html.xpath('//input[@id="feed-address"]/@value') == [feed_url]
    assert html.xpath('//input[@id="feed-address"]/@readonly') == ["readonly"]
    assert html.xpath('//a[@class="button"]/@href') == [BASE + "/subscribe"]
    titles = [a.text_content() for a in html.xpath('//ul[@class="latest"]/li/a')]
    expected = (["First post"] if "python" in path
                else ["Third", "第二篇 🎉", "First post"])
    assert [" ".join(t.split()) for t in titles] == expected
    assert "feed reader" in html.xpath("string(//p[@class='lead'])")
    # The page has validators of its own; a revalidation costs a 304.
    again = sqlite_web.client.get(path, headers={"Accept": CHROMIUM_ACCEPT,
                                                 "If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.headers["vary"] == "Accept"

    feed_bytes = (public / path.lstrip("/")).read_bytes()
    for accept in (FEEDPARSER_ACCEPT, "*/*", None, "text/html, application/atom+xml"):
        headers = {"Accept": accept} if accept else {}
        feed = sqlite_web.client.get(path, headers={**headers, "Accept-Encoding": "identity"})
        assert feed.status_code == 200, accept
        assert feed.content == feed_bytes, accept
        assert feed.headers["content-type"] != "text/html; charset=utf-8"
        assert feed.headers["vary"].startswith("Accept"), feed.headers["vary"]
        assert feed.headers["etag"] != page.headers["etag"]
        assert feed.headers["last-modified"] and feed.headers["cache-control"]
        cached = sqlite_web.client.get(path, headers={**headers,
                                                      "If-None-Match": feed.headers["etag"]})
        assert cached.status_code == 304


def test_other_files_do_not_vary_with_accept(sqlite_web: Web) -> None:
    public = sqlite_web.settings.public_dir
    (public / "note.txt").write_text("plain " * 100, encoding="utf-8")
    response = sqlite_web.client.get("/note.txt", headers={"Accept": CHROMIUM_ACCEPT})
    assert response.headers["vary"] == "Accept-Encoding"
