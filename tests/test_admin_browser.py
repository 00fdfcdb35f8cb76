"""The dashboard in Debian's Chromium: log in, every panel with data from real sends to
aiosmtpd and a real bounce, search a subscriber, unsubscribe them behind the
confirmation and see the chart change; screenshots at 1280 and 375 px, light and
dark; no serious or critical axe-core findings; nothing scrolls sideways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feedpub.store.audience import ServiceCount, add_readers, add_service_counts
from feedpub.store.engine import Store
from feedpub.web import create_app
from tests.conftest import Clock, SiteFactory, SmtpServer, free_port, start_uvicorn
from tests.test_admin import BOUNCED_READER, PASSWORD, bounce
from tests.test_status import NOW, build_known_site

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = Path(os.environ.get("FEEDPUB_AXE_JS", Path(__file__).resolve().parent.parent
                          / ".ci/node/node_modules/axe-core/axe.min.js"))




def serious_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']}: "
            + "; ".join(node["html"][:120] for node in v["nodes"][:3])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Served:
    url: str
    store: Store


def feed_readers(store: Store) -> None:
    """Thirty days of feed readers: Feedly's stated count growing, a few others a day."""
    today = NOW.date()
    with store.write() as conn:
        add_service_counts(conn, [
            ServiceCount(today - timedelta(days=d), "atom.xml", "Feedly", 40 - d,
                         datetime.combine(today - timedelta(days=d), datetime.min.time(), UTC))
            for d in range(1, 30)
        ])
        add_readers(conn, [
            (today - timedelta(days=d), "atom.xml", f"reader-{d}-{n}")
            for d in range(1, 30) for n in range(d % 4 + 1)
        ])


@pytest.fixture
def served(make_site: SiteFactory, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Served]:
    from feedpub.admin_password import hash_password

    database_url = f"sqlite:///{tmp_path / 'admin.db'}"
    site = build_known_site(make_site, database_url, smtp_server)
    bounce(site.store, BOUNCED_READER)
    feed_readers(site.store)
    settings = make_site.settings({
        "FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": database_url,
        "FEEDPUB_ADMIN_PASSWORD_HASH": hash_password(PASSWORD),
    })
    port = free_port()
    server, thread = start_uvicorn(create_app(settings, now=Clock(NOW), store=site.store),
                                   port)
    try:
        yield Served(f"http://127.0.0.1:{port}", site.store)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        site.store.close()


def log_in(page: Any, url: str, password: str = PASSWORD) -> None:
    page.goto(url + "/admin/")
    assert page.url.endswith("/admin/login")
    page.fill("#user", "admin")
    page.fill("#password", password)
    page.click("button[type=submit]")


def chart_pixels(page: Any) -> str:
    page.wait_for_selector("#audience-chart canvas")
    return str(page.evaluate("document.querySelector('#audience-chart canvas').toDataURL()"))


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_log_in_see_the_panels_search_unsubscribe_and_see_the_chart_change(
    browser: Any, served: Served,
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(served.url + "/admin/login")
        page.fill("#user", "admin")
        page.fill("#password", "not the password")
        page.click("button[type=submit]")
        assert page.locator(".error").inner_text() == "Wrong name or password."

        log_in(page, served.url)
        assert page.url.endswith("/admin/")
        for heading in ("Audience over time", "The queue now", "Editions", "Upcoming"):
            assert page.get_by_role("heading", name=heading).count() == 1
        before = chart_pixels(page)
        summary_before = page.locator(".summary").inner_text()
        assert "Active 6" in summary_before and "Feedly" in page.locator(
            ".u-legend").inner_text()
        # The editions panel: the weekly digest, its failure, retry and bounce, flagged.
        row = page.locator("tbody tr", has_text="weekly · digest").first
        assert "over 2%" in row.inner_text()
        # The queue refreshes itself.
        page.wait_for_selector("#queue[data-polled]", timeout=15_000)
        assert page.locator("[data-queue=retrying]").inner_text() == "1"
        assert page.locator("[data-queue=sending]").inner_text() == "1"
        # Upcoming: each newsletter with its next run.
        assert page.locator("article.newsletter").count() == 2

        page.click("text=Subscribers")
        page.fill("#q", "zoe")
        page.click("form.search button")
        page.click("text=zoe@example.org")
        assert page.get_by_role("heading", name="Consent record").count() == 1
        page.click("text=Unsubscribe…")
        page.click("text=Yes, unsubscribe")
        assert page.locator(".notice").inner_text() == "Unsubscribed."

        page.goto(served.url + "/admin/")
        after = chart_pixels(page)
        assert "Active 5" in page.locator(".summary").inner_text()
        assert after != before, "the chart did not change"
    finally:
        page.close()


@pytest.mark.parametrize("width", [1280, 375])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_reads_well_and_axe_finds_nothing_serious(
    browser: Any, served: Served, width: int, scheme: str,
) -> None:
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (npm install --prefix .ci/node axe-core@4)")
    # axe-core goes in as an inline script, which the dashboard's CSP rightly refuses.
    context = browser.new_context(viewport={"width": width, "height": 900},
                                  color_scheme=scheme, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto(served.url + "/admin/login")
        assert serious_violations(page) == [], "login"
        shoot(page, f"admin-login-{width}-{scheme}")
        log_in(page, served.url)
        chart_pixels(page)
        pages = {
            "dashboard": "/admin/",
            "search": "/admin/subscribers?q=example.org",
            "subscriber": "/admin/subscribers/2",
            "confirm": "/admin/subscribers/2/forget",
        }
        for name, path in pages.items():
            page.goto(served.url + path)
            if name == "dashboard":
                chart_pixels(page)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
            assert serious_violations(page) == [], name
            shoot(page, f"admin-{name}-{width}-{scheme}")
        page.goto(served.url + "/admin/")
        chart_pixels(page)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(13, 17, 23)" if scheme == "dark" else "rgb(243, 244, 246)")
    finally:
        context.close()
