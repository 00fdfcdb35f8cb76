"""The pages in Debian's Chromium: no sideways scrolling from 375 to 1280 px, a readable
line length, dark mode, visible focus, and no serious or critical axe-core findings."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from feedpub.build import build
from feedpub.web import create_app
from tests.conftest import ARTIFACTS, SiteFactory, static_server
from tests.test_pages import PNG, post

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.browser

NOW = datetime(2026, 1, 1, tzinfo=UTC)
AXE = Path(os.environ.get("FEEDPUB_AXE_JS", Path(__file__).resolve().parent.parent
                          / ".ci/node/node_modules/axe-core/axe.min.js"))
WIDTHS = (375, 768, 1280)
PAGES = {"home": "/", "post": "/2025/02/01/math-and-code/", "archive": "/archive/",
         "year": "/archive/2025/", "category": "/categories/notes/", "feeds": "/feeds/"}

LONG_CALL = ("    return compute_everything_at_once(request, "
             "with_a_really_long_argument_list=True, and_another=False)")
TABLE = ("| " + " | ".join("abcdefghijkl") + " |\n" + "|---" * 12 + "|\n| "
         + " | ".join(f"value-{n:04d}" for n in range(12)) + " |")
LONG_URL = "https://example.com/" + "a-very-long-path-segment-without-spaces-" * 3
BODY = f"""A post with math, code and things that are too wide.

The energy is $E = mc^2$, and the sum

$$\\sum_{{k=1}}^{{n}} k = \\frac{{n(n+1)}}{{2}}$$

holds; a price of $5 stays a price.

```python
def handler(request):
{LONG_CALL}
```

{TABLE}

See {LONG_URL}

![A wide chart](../images/wide.png)
"""


@pytest.fixture
def site(make_site: SiteFactory) -> Iterator[str]:
    """A built site served by a plain static server."""
    make_site(
        posts={
            "2025-02-01-math-and-code.md": post("Math and code", "2025-02-01", BODY,
                                                extra="categories: [Notes]\n"),
            "2025-01-10-short.md": post("A short one", "2025-01-10", "Short.",
                                        extra="categories: [Notes]\n"),
            "2025-01-05-中文.md": post("中文標題", "2025-01-05",
                                     "這是一段沒有空格的中文文字" * 20, extra="lang: zh-TW\n"),
        },
        files={"content/images/wide.png": PNG},
    )
    build(make_site.settings(), NOW, jobs=1)
    with static_server(make_site.root / "public") as base:
        yield base


def _screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_scrolls_sideways_and_lines_stay_readable(
    browser: Any, site: str, width: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        for name, path in PAGES.items():
            page.goto(site + path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
            # Measured on a paragraph: about 45 to 85 characters a line is readable.
            characters = page.evaluate("""() => {
                const main = document.querySelector('main');
                const style = getComputedStyle(main);
                const width = main.clientWidth - parseFloat(style.paddingLeft)
                    - parseFloat(style.paddingRight);
                return width / (parseFloat(getComputedStyle(document.body).fontSize) * 0.5);
            }""")
            assert characters <= 90, f"{name} at {width}px: lines of ~{characters:.0f} chars"
            _screenshot(page, f"page-{name}-{width}")
    finally:
        page.close()


def test_math_is_mathml_and_the_stylesheet_loads(browser: Any, site: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(site + PAGES["post"])
        assert page.locator("math").count() == 2
        assert page.locator("math[display=block]").count() == 1
        # MathML Core lays the fraction out: it is taller than one line of text.
        height = page.evaluate("document.querySelector('math[display=block]')"
                               ".getBoundingClientRect().height")
        assert height > 30
        assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith(
            "-apple-system")
    finally:
        page.close()


def test_dark_mode_follows_the_system(browser: Any, site: str) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = browser.new_page(viewport={"width": 768, "height": 900}, color_scheme=scheme)
        try:
            page.goto(site + PAGES["post"])
            colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            _screenshot(page, f"page-post-{scheme}")
        finally:
            page.close()
    assert colours == {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}


def test_focus_is_visible(browser: Any, site: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(site + "/")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        assert focused == "Skip to content"
        style = page.evaluate("""() => {
            const s = getComputedStyle(document.activeElement);
            return [s.outlineStyle, parseFloat(s.outlineWidth),
                    document.activeElement.getBoundingClientRect().left];
        }""")
        assert style[0] != "none" and style[1] >= 2 and style[2] >= 0
    finally:
        page.close()


def _serious_violations(page: Any) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']}: "
            + "; ".join(node["html"][:120] for node in v["nodes"][:3])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed "
                    "(npm install --prefix .ci/node axe-core@4, as .ci/run does)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_serious(
    browser: Any, site: str, make_site: SiteFactory, scheme: str
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        for name, path in PAGES.items():
            page.goto(site + path)
            assert _serious_violations(page) == [], name
        with TestClient(create_app(make_site.settings())) as client:
            subscribe = client.get("/subscribe").text
        page.set_content(subscribe)
        assert _serious_violations(page) == [], "subscribe"
        if scheme == "light":
            _screenshot(page, "page-subscribe-1280")
    finally:
        page.close()

