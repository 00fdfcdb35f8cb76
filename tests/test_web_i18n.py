"""The pages of `feedpub serve` in the site's language, from the catalogs the emails use."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lxml.html
import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from feedpub.config import Settings
from feedpub.i18n import LOCALE_DIR
from feedpub.store import Status, Store, Subscriber, find_subscriber, open_store
from feedpub.tokens import Purpose, Reason
from feedpub.web import create_app, link
from feedpub.web.pages import Pages
from tests.conftest import Clock, SiteFactory

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; httpx is what the project installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

BASE = "https://news.example.com"
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SITE_TITLE = "Tëst & <Site> 部落格"
# ASCII before the @: an address that needs SMTPUTF8 is refused at the door (issue 14).
ADDRESS = "lin.xiaojie+news@example.com"
TRANSLATED = ("zh_Hant", "zh_Hans", "ja")

CONFIG = """\
[site]
title = "Tëst & <Site> 部落格"
url = "https://example.com/"
language = "{language}"
timezone = "Asia/Tokyo"

[mail]
from = "Test Site <news@example.com>"
transport = "maildir:outbox"
rate_limit = 0

[web]
url = "https://news.example.com/"
confirm_days = 3

[[newsletter]]
name = "weekly"
title = "The Weekly 週報"

[[newsletter]]
name = "daily"
title = "Daily"
"""

POSTS = {
    "2026-01-05-first.md": (
        "---\ntitle: \"First\\npost\"\ncategories: [Python, 機器學習]\n---\nHi.\n"
    ),
}


@dataclass(frozen=True)
class Words:
    """What each page should say: the catalog's translation, written out here by hand."""

    subscribe_heading: str
    email_label: str
    subscribe_button: str
    newsletters: str
    topics: str
    enter_address: str
    check_inbox: str
    subscribed: str
    thank_you: str
    unsubscribe_heading: str
    stop_every_email: str
    unsubscribed: str
    bad_link: str
    tampered: str
    expired: str
    not_found: str


WORDS = {
    "zh-TW": Words(
        subscribe_heading=f"訂閱 {SITE_TITLE}",
        email_label="電子郵件地址",
        subscribe_button="訂閱",
        newsletters="電子報",
        topics="主題",
        enter_address="請輸入您的電子郵件地址。",
        check_inbox="請查看您的收件匣",
        subscribed="訂閱完成",
        thank_you=f"謝謝您！{ADDRESS} 將會收到 {SITE_TITLE} 的新文章。",
        unsubscribe_heading="取消訂閱",
        stop_every_email=f"要停止 {SITE_TITLE} 寄往 {ADDRESS} 的所有郵件嗎？",
        unsubscribed="已取消訂閱",
        bad_link="這個連結無法使用",
        tampered="此連結無效（已遭修改，或是用於其他用途）。",
        expired="此連結已於 2026-03-05 失效，請重新申請新的連結。",
        not_found="找不到網頁",
    ),
    "zh-CN": Words(
        subscribe_heading=f"订阅 {SITE_TITLE}",
        email_label="电子邮箱地址",
        subscribe_button="订阅",
        newsletters="邮件通讯",
        topics="主题",
        enter_address="请输入您的电子邮箱地址。",
        check_inbox="请查看您的收件箱",
        subscribed="订阅成功",
        thank_you=f"谢谢您！{ADDRESS} 将会收到 {SITE_TITLE} 的新文章。",
        unsubscribe_heading="退订",
        stop_every_email=f"要停止 {SITE_TITLE} 发往 {ADDRESS} 的所有邮件吗？",
        unsubscribed="已退订",
        bad_link="此链接无法使用",
        tampered="此链接无效（已被修改，或用于其他用途）。",
        expired="此链接已于 2026-03-05 失效，请重新申请新的链接。",
        not_found="找不到页面",
    ),
    "ja": Words(
        subscribe_heading=f"{SITE_TITLE} を購読する",
        email_label="メールアドレス",
        subscribe_button="購読する",
        newsletters="ニュースレター",
        topics="トピック",
        enter_address="メールアドレスを入力してください。",
        check_inbox="受信トレイをご確認ください",
        subscribed="購読の登録が完了しました",
        thank_you=f"ありがとうございます。{ADDRESS} に {SITE_TITLE} の新着記事をお届けします。",
        unsubscribe_heading="配信停止",
        stop_every_email=f"{SITE_TITLE} から {ADDRESS} へのメール配信をすべて停止しますか？",
        unsubscribed="配信を停止しました",
        bad_link="このリンクは使えません",
        tampered="このリンクは無効です（変更されているか、別の用途のリンクです）。",
        expired=(
            "このリンクの有効期限は 2026-03-05 で切れています。新しいリンクをお申し込みください。"
        ),
        not_found="ページが見つかりません",
    ),
    # No catalog for German: English words.
    "de": Words(
        subscribe_heading=f"Subscribe to {SITE_TITLE}",
        email_label="Email address",
        subscribe_button="Subscribe",
        newsletters="Newsletters",
        topics="Topics",
        enter_address="Enter your email address.",
        check_inbox="Check your inbox",
        subscribed="You are subscribed",
        thank_you=f"Thank you: {ADDRESS} will receive new posts from {SITE_TITLE}.",
        unsubscribe_heading="Unsubscribe",
        stop_every_email=f"Stop every email from {SITE_TITLE} to {ADDRESS}?",
        unsubscribed="You are unsubscribed",
        bad_link="This link does not work",
        tampered="this link is not valid (it was changed, or is for something else)",
        expired="this link expired on 2026-03-05; ask for a new one",
        not_found="Page not found",
    ),
}


@dataclass(frozen=True)
class Site:
    settings: Settings
    store: Store
    client: TestClient
    clock: Clock

    def subscriber(self, email: str) -> Subscriber:
        with self.store.read() as conn:
            found = find_subscriber(conn, email)
        assert found is not None
        return found


@contextmanager
def serve(make_site: SiteFactory, database_url: str, language: str) -> Iterator[Site]:
    make_site(POSTS, config=CONFIG.format(language=language))
    settings = make_site.settings({"FEEDPUB_SECRET": "i18n-secret",
                                   "FEEDPUB_DATABASE_URL": database_url})
    clock = Clock(START)
    store = open_store(database_url)
    try:
        with TestClient(create_app(settings, now=clock, store=store), base_url=BASE) as client:
            yield Site(settings, store, client, clock)
    finally:
        store.close()


def parse(html: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(html)


def texts(page: lxml.html.HtmlElement, xpath: str) -> list[str]:
    return [" ".join(node.text_content().split()) for node in page.xpath(xpath)]


def form_token(site: Site) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', site.client.get("/subscribe").text)
    assert match
    return match.group(1)


@pytest.mark.parametrize("language", list(WORDS))
def test_every_page_of_a_subscription_speaks_the_site_language(
    make_site: SiteFactory, database_url: str, language: str
) -> None:
    words = WORDS[language]
    with serve(make_site, database_url, language) as site:
        form = parse(site.client.get("/subscribe").text)
        assert form.get("lang") == language
        assert texts(form, "//h1") == [words.subscribe_heading]
        assert texts(form, '//label[@for="email"]') == [words.email_label]
        assert texts(form, "//button") == [words.subscribe_button]
        assert words.newsletters in texts(form, "//legend")
        assert words.topics in texts(form, "//legend")
        assert texts(form, "//title") == [f"{words.subscribe_button} · {SITE_TITLE}"]

        empty = site.client.post("/subscribe", data={
            "email": "", "newsletter": "weekly", "form_token": form_token(site)})
        assert empty.status_code == 400
        assert texts(parse(empty.text), '//p[@id="email-error"]') == [words.enter_address]

        sent = site.client.post("/subscribe", data={
            "email": ADDRESS, "newsletter": "weekly", "form_token": form_token(site)})
        assert sent.status_code == 200
        assert texts(parse(sent.text), "//h1") == [words.check_inbox]

        subscriber = site.subscriber(ADDRESS)
        assert subscriber.status == Status.PENDING
        confirm_url = link(site.settings, Purpose.CONFIRM, subscriber, now=START)
        confirmed = parse(site.client.get(confirm_url).text)
        assert confirmed.get("lang") == language
        assert texts(confirmed, "//h1") == [words.subscribed]
        assert words.thank_you in texts(confirmed, "//main//p")

        unsubscribe_url = link(site.settings, Purpose.UNSUBSCRIBE, subscriber, now=START)
        leave = parse(site.client.get(unsubscribe_url).text)
        assert leave.get("lang") == language
        assert texts(leave, "//h1") == [words.unsubscribe_heading]
        assert words.stop_every_email in texts(leave, "//main//p")
        left = site.client.post(unsubscribe_url)
        assert texts(parse(left.text), "//h1") == [words.unsubscribed]
        assert site.subscriber(ADDRESS).status == Status.UNSUBSCRIBED


@pytest.mark.parametrize("language", list(WORDS))
def test_bad_links_explain_themselves_in_the_site_language(
    make_site: SiteFactory, tmp_path: Path, language: str
) -> None:
    words = WORDS[language]
    with serve(make_site, f"sqlite:///{tmp_path / 'bad.db'}", language) as site:
        sent = site.client.post("/subscribe", data={
            "email": ADDRESS, "newsletter": "weekly", "form_token": form_token(site)})
        assert sent.status_code == 200
        subscriber = site.subscriber(ADDRESS)
        token = link(site.settings, Purpose.CONFIRM, subscriber, now=START).rpartition("/")[2]

        tampered = site.client.get(f"/confirm/{'X' if token[0] != 'X' else 'Y'}{token[1:]}")
        assert tampered.status_code == 400
        page = parse(tampered.text)
        assert page.get("lang") == language
        assert texts(page, "//h1") == [words.bad_link]
        assert texts(page, '//p[@class="hint"]') == [words.tampered]

        site.clock.now = START + timedelta(days=4)
        expired = site.client.get(f"/confirm/{token}")
        assert expired.status_code == 400
        assert texts(parse(expired.text), '//p[@class="hint"]') == [words.expired]

        missing = site.client.get("/no/such/page")
        assert missing.status_code == 404
        assert texts(parse(missing.text), "//h1") == [words.not_found]


def test_a_reason_is_escaped_and_plain_reasons_are_shown_as_they_are(
    make_site: SiteFactory,
) -> None:
    make_site(POSTS, config=CONFIG.format(language="zh-TW"))
    pages = Pages(make_site.settings())
    reason = Reason("this link expired on %(date)s; ask for a new one", date="<b>2026</b>")
    assert reason == "this link expired on <b>2026</b>; ask for a new one"
    html = pages.render("bad_link.html", {"title": "t", "reason": reason})
    assert "此連結已於 &lt;b&gt;2026&lt;/b&gt; 失效" in html
    plain = pages.render("bad_link.html", {"title": "t", "reason": "not <in> the catalog"})
    assert texts(parse(plain), '//p[@class="hint"]') == ["not <in> the catalog"]


# --- the catalogs -------------------------------------------------------------


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\(\w+\)[sd]", text))


def entries(catalog: Catalog) -> dict[tuple[str, ...], tuple[str, ...]]:
    """msgid (and plural) -> translations; read_mo gives lists where read_po gives tuples."""
    def as_tuple(value: object) -> tuple[str, ...]:
        return tuple(value) if isinstance(value, list | tuple) else (str(value),)

    return {as_tuple(message.id): as_tuple(message.string) for message in catalog if message.id}


@pytest.mark.parametrize("name", TRANSLATED)
def test_every_word_of_the_template_is_translated(name: str) -> None:
    template = read_catalog(LOCALE_DIR / "feedpub.pot")
    catalog = read_catalog(LOCALE_DIR / name / "LC_MESSAGES" / "feedpub.po")
    ids = [message.id for message in template if message.id]
    assert "Subscribe again" in ids and "Read more" in ids
    for msgid in ids:
        message = catalog.get(msgid)
        assert message is not None, f"{name}: {msgid!r} is missing; run pybabel update"
        assert not message.fuzzy, f"{name}: {msgid!r} is fuzzy"
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        originals = msgid if isinstance(msgid, tuple) else (msgid,)
        assert forms and all(forms), f"{name}: {msgid!r} is not translated"
        for form in forms:
            assert placeholders(form) == placeholders(originals[-1]), f"{name}: {msgid!r}"


@pytest.mark.parametrize("name", ("en", *TRANSLATED))
def test_each_compiled_catalog_matches_its_source(name: str, tmp_path: Path) -> None:
    folder = LOCALE_DIR / name / "LC_MESSAGES"
    source = read_catalog(folder / "feedpub.po")
    with (tmp_path / "fresh.mo").open("wb") as handle:
        write_mo(handle, source)
    with (tmp_path / "fresh.mo").open("rb") as handle:
        fresh = read_mo(handle)
    with (folder / "feedpub.mo").open("rb") as handle:
        committed = read_mo(handle)
    assert entries(committed) == entries(fresh), f"{name}: run pybabel compile"
    assert entries(committed) == entries(source)
