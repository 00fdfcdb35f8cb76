"""TeX math in posts: MathML in pages and feeds, images in email (feedpub/mathml.py)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from feedpub import feeds, mathml, urls
from feedpub.catalog import load_catalog
from feedpub.entries import Entry
from feedpub.mail.render import Recipient, personalize, render_edition
from feedpub.markup import html_to_text, render_markdown
from tests.conftest import ARTIFACTS, SiteFactory

SITE = "https://example.com/"
NOW = datetime(2025, 3, 1, tzinfo=UTC)


def html_of(body: str) -> str:
    return render_markdown(body, base_url=SITE + "posts/x/", id_prefix="")


# --- Markdown -> MathML --------------------------------------------------------------


def test_inline_math_becomes_mathml_with_its_tex() -> None:
    html = html_of("Energy is $E=mc^2$, and \\(a_1 * b_1\\) too.\n")
    assert html.count("<math>") == 2 and "$" not in html
    assert '<annotation encoding="application/x-tex">E=mc^2</annotation>' in html
    assert "<msup><mi>c</mi><mn>2</mn></msup>" in html
    # `_` and `*` inside math are TeX, not emphasis.
    assert "<em>" not in html and "a_1 * b_1</annotation>" in html


def test_display_math_on_its_own_lines_is_a_block() -> None:
    html = html_of(
        "The sum:\n\n$$\n\\sum_{i=1}^n i = \\frac{n(n+1)}{2}\n$$\n\nand \\[x^2\\] end.\n"
    )
    root = etree.fromstring(f"<div>{html}</div>")
    top = [child.tag for child in root]
    assert top == ["p", "math", "p"]
    assert root[1].get("display") == "block"
    assert root[1].findtext(".//annotation") == "\\sum_{i=1}^n i = \\frac{n(n+1)}{2}"
    # Inside a sentence, \[…\] is still display math, in its paragraph.
    assert root[2].find("math").get("display") == "block"


@pytest.mark.parametrize(
    "body",
    [
        "It costs $5 and $10 with tax.\n",
        "Salaries between $20,000 and $30,000.\n",
        "Tickets: US$5/$10. 价格是$5，和$10。\n",
        "I paid $5 for lunch and my friend paid 3$ for coffee.\n",
        "A lone $ sign, and $ spaced $ dollars.\n",
    ],
)
def test_prices_stay_prices(body: str) -> None:
    html = html_of(body)
    assert "<math" not in html
    assert html.count("$") == body.count("$")


def test_code_stays_code() -> None:
    body = "Set `$PATH` and `$x$`.\n\n```\n$$ a = b $$\n```\n\n    $y_1$ indented\n"
    html = html_of(body)
    assert "<math" not in html
    assert "<code>$PATH</code>" in html and "<code>$x$</code>" in html
    assert "$$ a = b $$" in html and "$y_1$ indented" in html


def test_an_escaped_dollar_is_a_dollar() -> None:
    html = html_of("Escaped \\$x\\$ and \\$5, then real $y$.\n")
    assert "Escaped $x$ and $5, then real <math>" in html
    assert "\\" not in html.replace("\\$", "")  # no stray backslash either


def test_math_in_an_html_attribute_is_left_alone() -> None:
    html = html_of('An <abbr title="$x$ and $y$">abbr</abbr> and $z$.\n')
    assert 'title="$x$ and $y$"' in html and html.count("<math>") == 1


@pytest.mark.parametrize("tex", ["\\foo{x}", "\\frac{a}{b", "x^"])
def test_tex_the_converter_cannot_read_stays_as_written(tex: str) -> None:
    html = html_of(f"Before ${tex}$ after, and $ok$.\n")
    assert f"${tex}$" in html and html.count("<math>") == 1
    assert mathml.tex_to_mathml(tex, display=False) is None
    assert mathml.conversion_error(tex, display=False)
    assert mathml.conversion_error("ok", display=False) is None


def test_find_math_agrees_with_the_renderer() -> None:
    text = "a $x$ b $$y$$ c \\(z\\) d \\[\\alpha\\] and $5 or $10 and \\[sic\\]"
    assert [f for _, f in mathml.find_math(text)] == ["$x$", "$$y$$", "\\(z\\)", "\\[\\alpha\\]"]
    assert html_of(text).count("<math") == 4
    assert mathml.formula_parts("$$ y $$") == ("y", True)
    assert mathml.formula_parts("\\(z\\)") == ("z", False)


def test_plain_text_reads_the_tex() -> None:
    html = html_of("Energy is $E=mc^2$ today.\n")
    assert html_to_text(html) == "Energy is E=mc^2 today."


# --- the sanitizer --------------------------------------------------------------------


def test_no_script_or_link_rides_in_on_mathml() -> None:
    body = (
        '<p><math><mi href="javascript:alert(1)" onclick="alert(2)">x</mi>'
        '<maction actiontype="statusline" xlink:href="javascript:alert(3)">y</maction>'
        '<annotation-xml encoding="text/html"><img src=x onerror=alert(4)></annotation-xml>'
        "<mtext><script>alert(5)</script><style>*{}</style></mtext>"
        '<mi style="background:url(javascript:alert(6))">z</mi></math></p>\n\n'
        "$\\text{</math><script>alert(7)</script>}$\n"
    )
    html = html_of(body)
    for bad in ("javascript", "onclick", "onerror", "<script", "<style", "href", "maction",
                "annotation-xml", "url("):
        assert bad not in html, bad
    assert "<math><mi>x</mi>" in html  # the harmless parts are kept
    assert "&lt;/math&gt;&lt;script&gt;" in html  # TeX is text, escaped


def test_mathml_core_attributes_are_kept() -> None:
    html = html_of("$$\\left( \\frac{a}{b} \\right) \\, \\hat{x}$$\n")
    assert 'display="block"' in html and "<mfrac>" in html
    assert re.search(r'<mspace width="[0-9.]+em">', html)
    assert 'accent="true"' in html


# --- feeds ----------------------------------------------------------------------------

MATH_POST = """\
---
title: Sums
date: 2025-02-11
---

Energy is $E=mc^2$; it costs $5 and $10.

$$
\\sum_{i=1}^n i = \\frac{n(n+1)}{2}
$$

Also $\\text{数学} = x$ and $\\foo$ and `$code$`.
"""


@pytest.fixture
def math_entries(make_site: SiteFactory) -> list[Entry]:
    make_site(posts={"2025-02-11-sums.md": MATH_POST})
    catalog = load_catalog(make_site.settings(), NOW)
    return catalog.load(catalog.published)


def test_feeds_with_math_stay_valid(make_site: SiteFactory, math_entries: list[Entry]) -> None:
    settings = make_site.settings()
    for document in (
        feeds.render_atom(math_entries, settings=settings, feed_url=SITE + "atom.xml"),
        feeds.render_rss(math_entries, settings=settings, feed_url=SITE + "rss.xml"),
    ):
        etree.fromstring(document)
        parsed = feedparser.parse(document)
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        content = parsed.entries[0].get("content", [parsed.entries[0].get("summary_detail")])[0]
        assert "<math" in content["value"] and "E=mc^2</annotation>" in content["value"]
        assert "$5 and $10" in content["value"] and "$\\foo$" in content["value"]
    item = json.loads(
        feeds.render_json_feed(math_entries, settings=settings, feed_url=SITE + "feed.json")
    )["items"][0]
    assert "<math" in item["content_html"]
    assert "<math" not in item.get("summary", "") and "E=mc^2" in item.get("summary", "")


# --- email ----------------------------------------------------------------------------


def test_email_math_puts_images_in_place_of_mathml() -> None:
    html = html_of("Energy $E=mc^2$.\n\n$$\\int_0^1 x\\,dx$$\n\nCJK $\\text{数}$.\n")
    email = mathml.email_math(html, SITE)
    assert "<math" not in email
    images = re.findall(r"<img [^>]*>", email)
    assert len(images) == 2
    inline, display = images
    name = mathml.math_image_name("E=mc^2", display=False)
    assert name == hashlib.sha256(f"{mathml._IMAGE_STYLE}\ninline\nE=mc^2".encode()).hexdigest()
    assert f'src="{SITE}math/{name}.png"' in inline and 'alt="E=mc^2"' in inline
    width, height, depth = (int(v) for v in re.findall(
        r'width="(\d+)" height="(\d+)" class="math" style="vertical-align:-(\d+)px', inline)[0])
    assert 40 < width < 90 and 12 < height < 30 and 0 < depth < height / 2
    assert 'alt="\\int_0^1 x\\,dx"' in display
    assert '<span class="math-display" style="display:block' in email
    # The font has no CJK glyphs: the TeX shows as written rather than boxes.
    assert "CJK $\\text{数}$." in email
    # MathML written by hand, without TeX, is left alone.
    bare = "<p><math><mi>x</mi></math></p>"
    assert mathml.email_math(bare, SITE) == bare


def test_the_email_of_a_post_with_math(make_site: SiteFactory, math_entries: list[Entry]) -> None:
    settings = make_site.settings()
    rendered = render_edition(math_entries, settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="e1", date=NOW)  # fmt: skip
    assert "<math" not in rendered.html and "<math" not in rendered.web_html
    name = mathml.math_image_name("E=mc^2", display=False)
    assert urls.url_for(settings.site.url, "math_image", name=name) in rendered.html
    assert "E=mc^2" in rendered.text and "\\sum_{i=1}^n" in rendered.text
    assert "$5 and $10" in rendered.text


def test_math_images_cover_every_formula_once(math_entries: list[Entry]) -> None:
    outputs = mathml.math_images(math_entries * 2)
    names = sorted(o.relpath for o in outputs)
    expected = sorted(
        urls.path_for("math_image", name=mathml.math_image_name(tex, display=display))
        for tex, display in [("E=mc^2", False), ("\\sum_{i=1}^n i = \\frac{n(n+1)}{2}", True)]
    )
    assert names == expected  # not \text{数} (no glyphs) nor \foo (not math)
    for output in outputs:
        assert output.data.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", output.data[16:24])
        assert width % 2 == 0 and height % 2 == 0  # whole CSS px at 2x
    skipped = mathml.math_images(math_entries, exists=lambda relpath: relpath == names[0])
    assert [o.relpath for o in skipped] == names[1:]


def test_image_sizes_are_twice_the_css_size() -> None:
    image = mathml._image("\\frac{a}{b}", True)
    assert image is not None
    assert struct.unpack(">II", image.png[16:24]) == (2 * image.width, 2 * image.height)


_DRAW = """
import hashlib, sys
from feedpub import mathml
for tex, display in [("E=mc^2", False), ("\\\\sum_{i=1}^n i", True),
                     ("\\\\begin{pmatrix} a & b \\\\\\\\ c & d \\\\end{pmatrix}", True)]:
    image = mathml._image(tex, display)
    print(hashlib.sha256(image.png).hexdigest(), image.width, image.height, image.depth)
"""


def test_png_bytes_are_the_same_on_every_run() -> None:
    command = [sys.executable, "-c", _DRAW]
    runs = [
        subprocess.run(command, check=True, capture_output=True, text=True).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].splitlines()) == 3


# --- in Chromium ----------------------------------------------------------------------


BROWSER_POST = """\
---
title: Why the sum of the first n numbers is n(n+1)/2
date: 2025-02-11
---

Gauss noticed that pairing $1 + n$, $2 + (n-1)$, … gives $\\frac{n}{2}$ pairs
of $n+1$ each, so

$$
\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}.
$$

The same trick bounds $\\int_0^1 x^2\\,dx = \\tfrac{1}{3}$ and the matrix
$A = \\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$ has $\\det A = -2$.
Prices stay prices: it costs $5 and $10, and `$PATH` is code.

\\[
f(x) = \\begin{cases} x^2 & x \\ge 0 \\\\ -x & \\text{otherwise} \\end{cases}
\\]
"""




@pytest.mark.browser
def test_math_in_a_page_and_in_an_email(
    browser: object, make_site: SiteFactory, tmp_path: Path
) -> None:
    make_site(posts={"2025-02-11-gauss.md": BROWSER_POST})
    settings = make_site.settings()
    catalog = load_catalog(settings, NOW)
    entries = catalog.load(catalog.published)
    images = {SITE + o.relpath: o.data for o in mathml.math_images(entries)}
    ARTIFACTS.mkdir(exist_ok=True)

    page_file = tmp_path / "page.html"
    page_file.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>post</title>'
        "<style>body{font:18px/1.6 system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem;color:#1f2328}"
        "math{font-family:math,'STIX Two Math','STIX Math','Cambria Math'}</style></head><body>"
        f"<h1>{entries[0].title}</h1>{entries[0].content_html}</body></html>",
        encoding="utf-8",
    )
    page = browser.new_page(viewport={"width": 768, "height": 900})  # type: ignore[attr-defined]
    try:
        page.goto(page_file.as_uri())
        # Rendered as MathML: the exponent sits above its base, the fraction is stacked.
        geometry = page.evaluate("""() => {
            const sup = document.querySelector('msup');
            const base = sup.children[0].getBoundingClientRect();
            const power = sup.children[1].getBoundingClientRect();
            const frac = document.querySelector('math[display=block] mfrac');
            const num = frac.children[0].getBoundingClientRect();
            const den = frac.children[1].getBoundingClientRect();
            const annotation = document.querySelector('annotation').getBoundingClientRect();
            return [power.bottom < base.bottom, num.bottom <= den.top + 1,
                    annotation.width === 0, document.querySelectorAll('math').length];
        }""")
        assert geometry == [True, True, True, 9]
        page.screenshot(path=str(ARTIFACTS / "math-page.png"), full_page=True)
    finally:
        page.close()

    rendered = render_edition(entries, settings=settings, newsletter=settings.newsletters[0],
                              kind="post", edition_id="e1", date=NOW)  # fmt: skip
    email_html, _ = personalize(rendered, Recipient(email="reader@example.com"))
    email_file = tmp_path / "email.html"
    email_file.write_text(email_html, encoding="utf-8")
    page = browser.new_page(viewport={"width": 600, "height": 900})  # type: ignore[attr-defined]
    served: list[str] = []

    def serve(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url in images:
            served.append(url)
            route.fulfill(status=200, content_type="image/png", body=images[url])  # type: ignore[attr-defined]
        else:
            route.fulfill(status=404, body="")  # type: ignore[attr-defined]

    try:
        page.route("https://example.com/**", serve)
        page.goto(email_file.as_uri())
        page.wait_for_load_state("load")
        checks = page.evaluate("""() => [...document.querySelectorAll('img.math')].map(img => [
            img.complete && img.naturalWidth === 2 * img.width,
            img.getBoundingClientRect().right <= document.documentElement.clientWidth])""")
        assert len(checks) == 9 and all(a and b for a, b in checks)
        assert set(served) == set(images) and len(images) == 9
        page.screenshot(path=str(ARTIFACTS / "math-email.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(ARTIFACTS / "math-email-dark.png"), full_page=True)
    finally:
        page.close()
