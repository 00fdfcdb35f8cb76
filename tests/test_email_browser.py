"""The email's HTML in headless Chromium: no sideways scrolling on a phone, dark mode works."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedpub.mail.render import Recipient, personalize, render_edition
from tests.conftest import ARTIFACTS, SiteFactory
from tests.test_mail_render import make_entry, site_settings

pytestmark = pytest.mark.browser






@pytest.fixture
def email_file(make_site: SiteFactory, tmp_path: Path) -> Path:
    """A digest built to break a narrow layout, personalised and written to disk."""
    settings = site_settings(make_site)
    wide_image = tmp_path / "wide.svg"
    wide_image.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="1400" height="500">'
        '<rect width="1400" height="500" fill="#4a90d9"/></svg>', encoding="utf-8")
    long_url = "https://example.com/" + "a-very-long-path-segment-without-spaces" * 6
    code = (
        '<pre><code><span style="color: #008000; font-weight: bold">def</span> '
        '<span style="color: #0000FF">handler</span>(request): '
        "return compute_everything_at_once(request, with_a_really_long_argument_list=True, "
        "and_another_one=False)</code></pre>"
    )
    table = "<table><tr>" + "".join(f"<th>Column {n}</th>" for n in range(14)) + "</tr><tr>" \
        + "".join(f"<td>value-{n}-0000000</td>" for n in range(14)) + "</tr></table>"
    entries = [
        make_entry(3, title="A post with everything that can be too wide 🎉",
                   content=f"<p>Read {long_url} now.</p>{code}{table}"
                           f'<p><img src="{wide_image.as_uri()}" alt="A wide picture"'
                           f' width="1400" height="500"></p>'),
        make_entry(2, title="مرحبا بالعالم", lang="ar",
                   content="<p>هذا نص عربي طويل بعض الشيء لكي نرى كيف يلتف السطر.</p>"),
        make_entry(1, title="中文標題", lang="zh-TW",
                   content="<p>" + "這是一段沒有空格的中文文字" * 20 + "</p>"),
    ]
    rendered = render_edition(entries, settings=settings, newsletter=settings.newsletters[0],
                              kind="digest", edition_id="2025-02-10",
                              date=datetime(2025, 2, 10, 9, tzinfo=UTC))
    html, _ = personalize(rendered, Recipient(
        email="reader@example.com", name="Reader",
        unsubscribe_url="https://example.com/unsubscribe/tok",
        preferences_url="https://example.com/preferences/tok"))
    path = tmp_path / "email.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.parametrize("width", [375, 600])
def test_no_horizontal_scrolling(browser: object, email_file: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})  # type: ignore[attr-defined]
    try:
        page.goto(email_file.as_uri())
        page.wait_for_load_state("load")
        scroll_width, inner_width = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width
        image_width = page.evaluate(
            "document.querySelector('img[alt=\"A wide picture\"]').getBoundingClientRect().width")
        assert 0 < image_width <= width
        box = page.evaluate(
            "(() => { const b = document.querySelector('.table-scroll');"
            " return [b.scrollWidth, b.clientWidth]; })()")
        assert box[0] > box[1], "the wide table scrolls inside its own box"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"email-digest-{width}.png"), full_page=True)
    finally:
        page.close()


def test_dark_mode_styles_override_the_inlined_light_ones(browser: object, email_file: Path):
    page = browser.new_page(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 900}, color_scheme="dark")
    try:
        page.goto(email_file.as_uri())
        card = page.evaluate(
            "getComputedStyle(document.querySelector('.card')).backgroundColor")
        assert card == "rgb(22, 27, 34)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "email-digest-375-dark.png"), full_page=True)
    finally:
        page.close()
