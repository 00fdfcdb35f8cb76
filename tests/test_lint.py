"""The linter: each finding on a realistic post, the false alarms it must not raise,
and lines and columns that point into the source file."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from textwrap import dedent

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedpub.catalog import lint_site
from feedpub.config import load_settings
from feedpub.content import read_post
from feedpub.entries import make_entry, make_entry_with_outline
from feedpub.lint import (
    CODES,
    Finding,
    LintReport,
    errors_for,
    find_math,
    lint_post,
    repetition,
)
from feedpub.markup import render_markdown, render_with_outline
from tests.conftest import BASIC_CONFIG, SiteFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "2025-02-11-post.md"
FRONT = '---\ntitle: "A post"\ndate: 2025-02-11 10:00:00 +0800\n---\n'
"""Four lines: a body written after it starts on line 5."""


def lint(
    make_site: SiteFactory,
    body: str,
    *,
    front: str = FRONT,
    name: str = NAME,
    files: dict[str, str | bytes] | None = None,
    config: str = BASIC_CONFIG,
) -> list[Finding]:
    """The findings for one post written as ``front + body``."""
    make_site({name: front + dedent(body)}, files=files, config=config)
    report = lint_site(make_site.settings(), NOW)
    return [finding for finding in report.findings if finding.path == f"content/posts/{name}"]


def where(findings: list[Finding], code: str) -> list[tuple[int, int]]:
    return [(f.line, f.column) for f in findings if f.code == code]


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def column_of(line: str, needle: str, nth: int = 1) -> int:
    """1-based column of the nth occurrence of needle in a source line."""
    index = -1
    for _ in range(nth):
        index = line.index(needle, index + 1)
    return index + 1


# --- repeated text ------------------------------------------------------------

NOTION_EXPORT = """\
---
layout: post
title: "Things we learned about LLMs in 2024"
date: 2025-02-11 10:00:00 +0800
categories: ['NotionExport']
---

📌 文章來源：Simon Willison’s Blog[Simon Willison’s Blog](https://simonwillison.net/2024/Dec/31/llms-in-2024/)📌 文章來源：Simon Willison’s Blog[Simon Willison’s Blog](https://simonwillison.net/2024/Dec/31/llms-in-2024/)

---

### 🚀 GPT-4 的門檻被徹底突破🚀 GPT-4 的門檻被徹底突破

隨著技術進步，GPT-4 級別的模型已不再是高不可攀的門檻。隨著技術進步，GPT-4 級別的模型已不再是高不可攀的門檻。

### 🎨 多模態 AI 成為主流🎨 多模態 AI 成為主流

- 視覺識別技術 已經成熟。 已經成熟。視覺識別技術 已經成熟。 已經成熟。
- 音頻與視頻 技術正在興起。音頻與視頻 技術正在興起。
---

### 🔗 更多 LLM 相關內容🔗 更多 LLM 相關內容

如果想要深入了解更多 2024 年的 LLM 文章。。如果想要深入了解更多 2024 年的 LLM 文章。。如果想要深入了解更多 2024 年的 LLM 文章。。
"""  # noqa: E501 - the export's lines are as long as it made them


def test_a_notion_export_has_every_doubled_block_found_at_its_second_copy(
    make_site: SiteFactory,
) -> None:
    make_site({NAME: NOTION_EXPORT})
    report = lint_site(make_site.settings(), NOW)
    lines = NOTION_EXPORT.split("\n")
    expected = []
    for number, line in enumerate(lines, start=1):
        for first in ("📌", "### 🚀", "隨著", "### 🎨", "- 視覺", "- 音頻", "### 🔗", "如果"):
            if line.startswith(first):
                marker = first.removeprefix("### ").removeprefix("- ")
                expected.append((number, column_of(line, marker, 2)))
    found = where(list(report.findings), "repeated-text")
    assert found == expected
    assert len(expected) == 8
    tripled = next(f for f in report.findings if f.line == len(lines) - 1)
    assert "three times" in tripled.message


@pytest.mark.parametrize(
    ("body", "expected_column"),
    [
        ("## Intro Intro\n", 10),
        ("### 一、背景一、背景\n", 9),
        ("你好世界你好世界\n", 5),
        ("The quick brown fox jumps.The quick brown fox jumps.\n", 27),
        ("- Set up the database. Set up the database.\n", 24),
        ("> Quoted twice, by accident. Quoted twice, by accident.\n", 30),
        ("Intro Intro Intro\n\n## Methods Methods\n", None),
    ],
)
def test_a_passage_said_twice_in_a_row_is_repeated_text(
    make_site: SiteFactory, body: str, expected_column: int | None
) -> None:
    findings = lint(make_site, "\n" + body)
    if expected_column is None:
        # A single word said again is a heading's doubling, a paragraph's refrain.
        assert where(findings, "repeated-text") == [(8, 12)]
    else:
        assert where(findings, "repeated-text") == [(6, expected_column)]


def test_a_doubled_paragraph_that_wraps_points_at_the_second_line(
    make_site: SiteFactory,
) -> None:
    body = (
        "\nWe moved the build to a new machine\n"
        "last week. We moved the build to a new machine\n"
        "last week.\n"
    )
    findings = lint(make_site, body)
    assert where(findings, "repeated-text") == [(7, 12)]


@pytest.mark.parametrize(
    "body",
    [
        "The results surprised us. We ran the suite again, and they held.\n",
        "La la la, la la la, la la la.\n\nla la la\n",
        "No, no, no. Not again.\n\nno, no, no\n",
        "We flew to Bora Bora, then to Walla Walla.\n\nWalla Walla\n",
        "哈哈哈哈\n\n好的好的\n\n謝謝謝謝\n",
        "| Step | Note |\n|---|---|\n| Intro Intro | Set up the database. Set up the database. |\n",
        "```text\nThe quick brown fox jumps.The quick brown fox jumps.\n```\n",
        "~~~\n### 一、背景一、背景\n~~~\n",
        "Code:\n\n    The quick brown fox jumps.The quick brown fox jumps.\n",
        "<div>The quick brown fox jumps.The quick brown fox jumps.</div>\n",
        "Yes.\n\nYes.\n",
        "Important announcement.\n\nSomething else.\n\nImportant announcement.\n",
    ],
)
def test_prose_refrains_tables_and_code_are_not_repeated_text(
    make_site: SiteFactory, body: str
) -> None:
    findings = lint(make_site, "\n" + body)
    assert codes(findings) & {"repeated-text", "repeated-block"} == set()


def test_front_matter_is_not_checked_for_repetition(make_site: SiteFactory) -> None:
    front = '---\ntitle: "Intro Intro Intro Intro"\ndate: 2025-02-11\nsummary: abc abc\n---\n'
    findings = lint(make_site, "\nA normal first paragraph.\n", front=front)
    assert codes(findings) & {"repeated-text", "repeated-block"} == set()


def test_a_block_that_repeats_the_block_before_it(make_site: SiteFactory) -> None:
    body = """
    We shipped the new importer today.

    We shipped the new importer today.

    - Back up the database first
    - Back up the database first
    - Then run the migration
    """
    findings = lint(make_site, body)
    assert where(findings, "repeated-block") == [(8, 1), (11, 3)]
    assert "line 6" in next(f for f in findings if f.code == "repeated-block").message


def test_repetition_gives_the_passage_length_and_count() -> None:
    assert repetition("abcabcabc") == (3, 3, False)
    assert repetition("Intro Intro") == (5, 2, True)
    assert repetition("一、背景一、背景") == (4, 2, False)
    assert repetition("Intro Intra") is None
    assert repetition("x") is None


# --- template syntax ------------------------------------------------------------


def test_liquid_and_hugo_syntax_left_in_the_body(make_site: SiteFactory) -> None:
    body = """
    Welcome to {{ site.title }}, here is a note:

    {% include note.html content="Read this first" %}

    {{< figure src="/img/cat.jpg" title="A cat" >}}

    - See {{% ref "other.md" %}} for details.
    """
    findings = lint(make_site, body)
    lines = (FRONT + dedent(body)).split("\n")
    assert where(findings, "template-syntax") == [
        (6, column_of(lines[5], "{{")),
        (8, 1),
        (10, 1),
        (12, column_of(lines[11], "{{%")),
    ]
    messages = [f.message for f in findings if f.code == "template-syntax"]
    assert "Liquid" in messages[0] and "Liquid tag" in messages[1]
    assert "Hugo shortcode" in messages[2] and "Hugo shortcode" in messages[3]


@pytest.mark.parametrize(
    "body",
    [
        "```liquid\n{% for post in site.posts %}\n  {{ post.title }}\n{% endfor %}\n```\n",
        "~~~~ html\n{{< youtube abc >}}\n~~~~\n",
        "Jekyll example:\n\n    {% include note.html %}\n    {{ page.title }}\n",
        "Write `{{ page.title }}` or ``{% raw %}`` in your template.\n",
        "Use <code>{{ site.url }}</code> here. <!-- {% comment %} -->\n",
        "- step one:\n\n  ```\n  {{< ref \"x\" >}}\n  ```\n",
        "Sets are written {a, b} and objects { \"a\": 1 }.\n",
    ],
)
def test_template_syntax_in_code_is_an_example(make_site: SiteFactory, body: str) -> None:
    findings = lint(make_site, "\n" + body)
    assert "template-syntax" not in codes(findings)


# --- links and images -------------------------------------------------------------


def test_a_relative_image_whose_file_is_missing(make_site: SiteFactory) -> None:
    body = """
    Our cat: ![The cat asleep](img/cat.png) and the dog: ![The dog](img/dog.png)

    A ![logo](/images/logo.png) and a ![banner](/images/banner.png).

    [report]: files/report.pdf
    """
    findings = lint(
        make_site, body,
        files={"content/posts/img/dog.png": b"\x89PNG", "static/images/logo.png": b"\x89PNG"},
    )
    lines = (FRONT + dedent(body)).split("\n")
    assert where(findings, "missing-file") == [
        (6, column_of(lines[5], "img/cat.png")),
        (8, column_of(lines[7], "/images/banner.png")),
        (10, column_of(lines[9], "files/")),
    ]
    cat = next(f for f in findings if f.code == "missing-file")
    assert "content/posts/img/cat.png" in cat.message
    banner = [f for f in findings if f.code == "missing-file"][1]
    assert "static/images/banner.png" in banner.message and "content/images" in banner.message


def test_targets_that_exist_or_cannot_be_resolved_locally_pass(make_site: SiteFactory) -> None:
    bundle = (
        FRONT
        + "\n![Harbour at dawn](harbour.jpg) ![Map](my%20map.png) ![Logo](/logo.svg)\n\n"
        "[About](/about/) [Older post](../2024-01-01-older/) [Page](other.html) "
        "[Top](#top) [Query](?page=2) [Escape](../../../../../../etc/shadow.txt) "
        "[CDN](//cdn.example.com/a.js) [Mail](mailto:ada@example.com) "
        "[Theme]({{ site.baseurl }}/assets/x.png)\n"
    )
    make_site(
        {"trip/index.md": bundle},
        files={
            "content/posts/trip/harbour.jpg": b"jpg",
            "content/posts/trip/my map.png": b"png",
            "static/logo.svg": "<svg/>",
        },
    )
    report = lint_site(make_site.settings(), NOW)
    assert "missing-file" not in codes(list(report.findings))


def test_a_file_that_would_not_be_published_is_missing(make_site: SiteFactory) -> None:
    body = "\n![Logo](/logo.svg) ![Notes](../../notes.png)\n"
    make_site({"2025-01-01-a.md": FRONT + body},
              files={"logo.svg": "<svg/>", "notes.png": b"png"})
    findings = lint_site(make_site.settings(), NOW).findings
    # Both files are in the site folder, but only static/ and content/ are published.
    assert [f.code for f in findings if f.code == "missing-file"] == ["missing-file"] * 2


def test_with_pages_left_to_another_tool_the_site_folder_counts(
    make_site: SiteFactory,
) -> None:
    body = "\n![Logo](/logo.svg)\n"
    make_site({"2025-01-01-a.md": FRONT + body}, files={"logo.svg": "<svg/>"},
              config=BASIC_CONFIG + "\n[pages]\nenabled = false\n")
    assert "missing-file" not in codes(list(lint_site(make_site.settings(), NOW).findings))


def test_footnotes_are_not_link_definitions(make_site: SiteFactory) -> None:
    body = "\nAs noted.[^1]\n\n[^1]: readme.md explains it, see javascript: notes.\n"
    assert codes(lint(make_site, body)) & {"missing-file", "javascript-url"} == set()


def test_empty_link_text_javascript_and_http_links(make_site: SiteFactory) -> None:
    body = """
    Read [](https://example.org/guide) or [ ](https://example.org/faq).
    Never [click here](javascript:alert('hi')) nor <a href=" JaVaScRiPt:void(0)">this</a>.
    Our [old site](http://old.example.org/) and <img src="http://cdn.example.org/a.png" alt="A">.
    <a href="https://example.org/"></a>
    """
    findings = lint(make_site, body)
    lines = (FRONT + dedent(body)).split("\n")
    assert where(findings, "empty-link-text") == [
        (6, column_of(lines[5], "[](")),
        (6, column_of(lines[5], "[ ](")),
        (9, 1),
    ]
    assert where(findings, "javascript-url") == [
        (7, column_of(lines[6], "javascript")),
        (7, column_of(lines[6], " JaVaScRiPt")),
    ]
    assert where(findings, "insecure-link") == [
        (8, column_of(lines[7], "http://old")),
        (8, column_of(lines[7], "http://cdn")),
    ]
    assert all(f.severity == "warning" for f in findings if f.code == "javascript-url")


def test_good_links_pass(make_site: SiteFactory) -> None:
    body = """
    See [the guide](https://example.org/guide), [![Logo](https://example.org/l.png)](https://example.org/),
    the local server at [localhost](http://localhost:8000/) and <https://example.org/>.
    JavaScript: the good parts is a book. So is `[](javascript:x)`.
    """
    findings = lint(make_site, body)
    bad = {"empty-link-text", "javascript-url", "insecure-link", "missing-alt", "missing-file"}
    assert codes(findings) & bad == set()


def test_http_links_are_fine_on_an_http_site(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG.replace("https://example.com/", "http://example.com/")
    findings = lint(make_site, "\nOur [old site](http://old.example.org/).\n", config=config)
    assert "insecure-link" not in codes(findings)


def test_images_without_alt_text(make_site: SiteFactory) -> None:
    body = """
    ![](https://example.org/a.png) and ![ ](https://example.org/b.png)

    <img src="https://example.org/c.png"> <img src="https://example.org/d.png" alt="">

    | Photo | Caption |
    |---|---|
    | ![](https://example.org/e.png) | A lake |

    ![A red kite over the valley](https://example.org/kite.png)
    """
    findings = lint(make_site, body)
    assert where(findings, "missing-alt") == [(6, 1), (6, 36), (8, 1), (12, 3)]


# --- math ----------------------------------------------------------------------


def test_math_that_renders_is_no_finding(make_site: SiteFactory) -> None:
    body = """
    Energy is $E=mc^2$, and the sum is

    $$
    \\sum_{i=1}^n i = \\frac{n(n+1)}{2}
    $$

    with \\(x^2\\) and \\[ \\int_0^1 x\\,dx \\].
    """
    assert "unrendered-math" not in codes(lint(make_site, body))


def test_math_that_cannot_be_rendered(make_site: SiteFactory) -> None:
    body = """
    Energy is $E=mc^2$, and the sum is

    $$
    \\sum_{i=1}^n i = \\frac{n(n+1)}{2
    $$

    with \\(\\foo{x}\\) and \\[ \\int_0^1 x\\,dx \\].

    <div>In HTML: $y^2$</div>
    """
    findings = lint(make_site, body)
    lines = (FRONT + dedent(body)).split("\n")
    math = [f for f in findings if f.code == "unrendered-math"]
    assert [(f.line, f.column) for f in math] == [(8, column_of(lines[7], "$$"))]
    assert "\\sum_{i=1}" in math[0].message and "2 more" in math[0].message
    assert "closing" in math[0].message  # the converter's reason


@pytest.mark.parametrize(
    "body",
    [
        "It costs $5 and $10 with tax.\n",
        "Salaries between $20,000 and $30,000.\n",
        "Tickets: US$5/$10. 价格是$5，和$10。\n",
        "I paid $5 for lunch and my friend paid 3$ for coffee.\n",
        "Set `$PATH` and `$x$` in code.\n\n```\n$$ a = b $$\n```\n",
        "An escaped bracket \\[sic\\] and escaped dollars \\$x\\$.\n",
    ],
)
def test_prices_code_and_escapes_are_not_math(make_site: SiteFactory, body: str) -> None:
    assert "unrendered-math" not in codes(lint(make_site, "\n" + body))


def test_find_math_forms() -> None:
    found = [formula for _, formula in find_math("a $x$ b $$y$$ c \\(z\\) d \\[\\alpha\\]")]
    assert found == ["$x$", "$$y$$", "\\(z\\)", "\\[\\alpha\\]"]


# --- front matter, summary, size, drafts ---------------------------------------


def test_title_from_the_file_name(make_site: SiteFactory) -> None:
    findings = lint(
        make_site, "\nHello.\n", front="---\ndate: 2025-02-11\n---\n",
        name="2025-02-11-hello-world.md",
    )
    assert where(findings, "title-from-filename") == [(1, 1)]
    assert "Hello World" in next(f.message for f in findings if f.code == "title-from-filename")
    assert "title-from-filename" not in codes(lint(make_site, "\nHello.\n"))


@pytest.mark.parametrize(
    "body",
    [
        "![A sunset over the bay](https://example.org/sunset.jpg)\n",
        "```python\nprint('hello')\n```\n",
        "<figure><img src=\"https://example.org/a.png\" alt=\"A\"></figure>\n",
    ],
)
def test_a_post_with_only_images_or_code_has_an_empty_summary(
    make_site: SiteFactory, body: str
) -> None:
    assert where(lint(make_site, "\n" + body), "empty-summary") == [(1, 1)]


def test_a_summary_key_or_some_prose_is_a_summary(make_site: SiteFactory) -> None:
    front = '---\ntitle: "Photos"\ndate: 2025-02-11\nsummary: "Photos from the trip."\n---\n'
    image_only = "\n![A sunset](https://example.org/sunset.jpg)\n"
    assert "empty-summary" not in codes(lint(make_site, image_only, front=front))
    prose = "\n![A sunset](https://example.org/sunset.jpg)\n\nThe sun set at nine.\n"
    assert "empty-summary" not in codes(lint(make_site, prose))


SMALL_MAIL = BASIC_CONFIG.replace("rate_limit = 0", "rate_limit = 0\nmax_html_bytes = 10000")


def test_a_post_larger_than_gmail_clips(make_site: SiteFactory) -> None:
    body = "\n" + "Ein langer Absatz über Ökologie und Verkehr. " * 300 + "\n"
    findings = lint(make_site, body, config=SMALL_MAIL)
    assert where(findings, "too-large") == [(5, 1)]
    message = next(f.message for f in findings if f.code == "too-large")
    assert "10 KB" in message and "summary" in message
    assert "too-large" not in codes(lint(make_site, "\nShort.\n", config=SMALL_MAIL))


def test_size_is_measured_on_the_email_not_only_the_post(make_site: SiteFactory) -> None:
    # Under the limit on its own, over it once the email's layout and inlined CSS are added.
    body = "\n" + "".join(f"- item {n} of a long list\n" for n in range(300))
    make_site({NAME: FRONT + body}, config=SMALL_MAIL)
    settings = make_site.settings()
    post = read_post(settings.posts_dir / NAME, site=settings.site, site_dir=settings.site_dir)
    entry = make_entry(post, settings.site)
    assert len(entry.content_html.encode()) < settings.mail.max_html_bytes
    assert where(lint_post(post, settings=settings, now=NOW, entry=entry), "too-large") == [(5, 1)]


def test_drafts_and_future_posts_are_info(make_site: SiteFactory) -> None:
    make_site({
        "2025-01-01-draft.md": '---\ntitle: "Draft"\ndate: 2025-01-01\ndraft: true\n---\nText.\n',
        "2025-01-02-hidden.md": (
            '---\ntitle: "Hidden"\npublished: false\ndate: 2025-01-02\n---\nText.\n'
        ),
        "2030-05-01-later.md": '---\ntitle: "Later"\n\ndate: 2030-05-01 09:00\n---\nText.\n',
        "2025-01-03-now.md": '---\ntitle: "Now"\ndate: 2025-01-03\n---\nText.\n',
    })
    report = lint_site(make_site.settings(), NOW)
    infos = [(f.path.rsplit("/", 1)[1], f.line, f.code) for f in report.findings]
    assert infos == [
        ("2025-01-01-draft.md", 4, "draft"),
        ("2025-01-02-hidden.md", 3, "draft"),
        ("2030-05-01-later.md", 4, "future-date"),
    ]
    assert all(f.severity == "info" for f in report.findings)
    assert report.summary() == "0 errors, 0 warnings, 3 infos in 4 posts"
    assert not report.failed(strict=True)


# --- errors ----------------------------------------------------------------------


def test_what_the_build_cannot_read_is_an_error(make_site: SiteFactory) -> None:
    make_site({
        "2025-01-01-broken.md": '---\ntitle: "Broken\ndate: 2025-01-01\n---\nText.\n',
        "2025-01-02-latin1.md": b'---\ntitle: "Caf\xe9"\ndate: 2025-01-02\n---\nText.\n',
        "2025-01-03-a.md": '---\ntitle: "A"\ndate: 2025-01-03\nslug: same\n---\nA.\n',
        "2025-01-04-b.md": '---\ntitle: "B"\ndate: 2025-01-03\n\nslug: same\n---\nB.\n',
        "2025-01-05-fine.md": '---\ntitle: "Fine"\ndate: 2025-01-05\n---\nFine.\n',
    })
    report = lint_site(make_site.settings(), NOW)
    errors = [(f.path.rsplit("/", 1)[1], f.code) for f in report.findings if f.severity == "error"]
    assert errors == [
        ("2025-01-01-broken.md", "content-error"),
        ("2025-01-02-latin1.md", "content-error"),
        ("2025-01-04-b.md", "content-error"),
    ]
    duplicate = next(f for f in report.findings if f.path.endswith("-b.md"))
    assert duplicate.line == 5
    assert "2025-01-03-a.md" in duplicate.message
    assert report.posts == 5
    assert report.summary() == "3 errors, 0 warnings in 5 posts"
    assert report.failed()


def test_errors_for_picks_the_errors_of_the_posts_being_sent(make_site: SiteFactory) -> None:
    make_site({
        "2025-01-03-a.md": '---\ntitle: "A"\ndate: 2025-01-03\nslug: same\n---\nA.\n',
        "2025-01-04-b.md": '---\ntitle: "B"\ndate: 2025-01-03\nslug: same\n---\nB.\n',
        "2025-01-05-c.md": '---\ntitle: "C"\ndate: 2025-01-05\n---\nC {{ x }}.\n',
    })
    settings = make_site.settings()
    report = lint_site(settings, NOW)
    posts = {
        name: read_post(settings.posts_dir / name, site=settings.site, site_dir=settings.site_dir)
        for name in ("2025-01-03-a.md", "2025-01-04-b.md", "2025-01-05-c.md")
    }
    blocking = errors_for(posts.values(), report)
    assert [f.path for f in blocking] == ["content/posts/2025-01-04-b.md"]
    assert errors_for([posts["2025-01-05-c.md"]], report) == []
    assert errors_for([], report) == []


# --- lines and columns ------------------------------------------------------------


def test_toml_front_matter_and_crlf_lines_are_counted(make_site: SiteFactory) -> None:
    toml = '+++\ntitle = "TOML"\ndate = 2025-02-11\ntags = ["a"]\n+++\n\nHi {{ name }}.\n'
    crlf = toml.replace("\n", "\r\n").encode("utf-8")
    make_site({"2025-02-11-toml.md": toml, "2025-02-12-crlf.md": crlf})
    report = lint_site(make_site.settings(), NOW)
    assert [(f.path.rsplit("/", 1)[1], f.line, f.column) for f in report.findings] == [
        ("2025-02-11-toml.md", 7, 4),
        ("2025-02-12-crlf.md", 7, 4),
    ]


def test_lint_post_works_on_a_post_alone(make_site: SiteFactory) -> None:
    make_site({NAME: FRONT + "\n## Intro Intro\n\nSome text.\n"})
    settings = make_site.settings()
    post = read_post(settings.posts_dir / NAME, site=settings.site, site_dir=settings.site_dir)
    findings = lint_post(post, settings=settings, now=NOW)
    assert [(f.code, f.line, f.column) for f in findings] == [("repeated-text", 6, 10)]


def test_the_outline_places_blocks_on_file_lines() -> None:
    body = "# Title\n\n```\ncode\n```\n\n> - item\n>   more\n\n| a |\n|---|\n| b |\n"
    _, outline = render_with_outline(body, base_url="https://e.com/", id_prefix="", first_line=10)
    assert [(b.kind, b.line, b.starts) for b in outline.blocks] == [
        ("heading", 10, ((10, 3),)), ("code", 12, ()), ("list item", 16, ((16, 5), (17, 3))),
        ("table", 19, ((19, 3), (21, 3))),
    ]


# --- one parse: findings agree with what the rendered HTML shows -------------------


def test_text_under_a_list_item_that_renders_as_text_is_checked(make_site: SiteFactory) -> None:
    # CommonMark would make the indented line code; Python-Markdown renders it as a
    # paragraph of the item, so a reader sees the braces.
    body = "\n- item\n\n      {{ site.url }}\n"
    make_site({NAME: FRONT + body})
    settings = make_site.settings()
    post = read_post(settings.posts_dir / NAME, site=settings.site, site_dir=settings.site_dir)
    entry, outline = make_entry_with_outline(post, settings.site)
    assert "<p>{{ site.url }}</p>" in entry.content_html
    findings = lint_post(post, settings=settings, now=NOW, entry=entry, outline=outline)
    assert where(findings, "template-syntax") == [(8, 7)]


def test_a_reference_image_without_alt_text(make_site: SiteFactory) -> None:
    body = "\nA chart: ![][r2] and a named one: ![Sales][r2]\n\n[r2]: https://example.org/x.png\n"
    findings = lint(make_site, body)
    lines = (FRONT + body).split("\n")
    assert where(findings, "missing-alt") == [(6, column_of(lines[5], "![]["))]


def test_a_reference_definition_is_checked_once_at_its_line(make_site: SiteFactory) -> None:
    body = "\n![Chart][c] and again ![Chart][c]\n\n[c]: http://example.org/c.png\n"
    findings = lint(make_site, body)
    assert where(findings, "insecure-link") == [(8, 6)]


@pytest.mark.parametrize("indent", [0, 2, 3, 4])
def test_template_syntax_is_flagged_exactly_where_the_html_shows_it_as_text(
    make_site: SiteFactory, indent: int
) -> None:
    pad = " " * indent
    body = f"\n- step one:\n\n{pad}```\n{pad}{{{{ page.title }}}}\n{pad}```\n"
    make_site({NAME: FRONT + body})
    settings = make_site.settings()
    post = read_post(settings.posts_dir / NAME, site=settings.site, site_dir=settings.site_dir)
    entry, outline = make_entry_with_outline(post, settings.site)
    flagged = where(lint_post(post, settings=settings, now=NOW, outline=outline, entry=entry),
                    "template-syntax")
    # Whatever Python-Markdown put in a <code> element is an example; the rest is text.
    shown_as_code = "<code>{{ page.title }}" in entry.content_html
    assert "{{ page.title }}" in entry.content_html
    assert flagged == ([] if shown_as_code else [(8, indent + 1)])


@pytest.mark.parametrize(
    ("body", "flagged"),
    [
        ("Say `{{ a }}` then {{ b }}.\n", ["{{ b }}"]),
        ("    {{ a }}\n\n{{ b }}\n", ["{{ b }}"]),
        ("> ```\n> {{ a }}\n> ```\n\n> {{ b }}\n", ["{{ b }}"]),
        ("<div>{{ a }}</div>\n\n<!-- {{ b }} -->\n", ["{{ a }}"]),
    ],
)
def test_findings_follow_what_renders_as_code(
    make_site: SiteFactory, body: str, flagged: list[str]
) -> None:
    make_site({NAME: FRONT + "\n" + body})
    settings = make_site.settings()
    post = read_post(settings.posts_dir / NAME, site=settings.site, site_dir=settings.site_dir)
    entry, outline = make_entry_with_outline(post, settings.site)
    lines = (FRONT + "\n" + body).split("\n")
    findings = lint_post(post, settings=settings, now=NOW, entry=entry, outline=outline)
    found = [lines[f.line - 1][f.column - 1 : f.column + 6] for f in findings
             if f.code == "template-syntax"]
    assert found == flagged


def test_the_outline_survives_json() -> None:
    body = "# A\n\n- [x](y.png) ![](z.png)\n\n[r]: q.pdf\n\n<img src=a.png>\n"
    html, outline = render_with_outline(body, base_url="https://e.com/", id_prefix="", first_line=3)
    assert html == render_markdown(body, base_url="https://e.com/", id_prefix="")
    assert type(outline).from_json(outline.to_json()) == outline
    assert [(link.kind, link.target, link.line, link.column) for link in outline.links] == [
        ("inline", "y.png", 5, 3), ("inline", "z.png", 5, 14), ("definition", "q.pdf", 7, 1),
        ("html", "a.png", 9, 1),
    ]


def test_every_code_is_documented() -> None:
    import feedpub.lint

    assert feedpub.lint.__doc__ is not None
    for code, severity in CODES.items():
        assert f"``{code}``" in feedpub.lint.__doc__
        assert severity in ("error", "warning", "info")


def test_report_summary_and_failure() -> None:
    warning = Finding("content/posts/a.md", 1, 1, "warning", "repeated-text", "x")
    report = LintReport((warning,), posts=1)
    assert report.summary() == "0 errors, 1 warning in 1 post"
    assert not report.failed()
    assert report.failed(strict=True)


# --- robustness -----------------------------------------------------------------

MARKDOWN_ALPHABET = st.sampled_from(
    [*"ab Z09#*-_>|!$`~{}%<>[]()\\:/.\n\t", "\n\n", "```", "    ", "http://", "中文", "🇨🇳",
     "a.png"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(MARKDOWN_ALPHABET, max_size=80).map("".join))
def test_any_body_gives_findings_inside_the_file(body: str) -> None:
    with TemporaryDirectory() as folder:
        site = SiteFactory(Path(folder))
        site({NAME: FRONT + body})
        config = site.settings()
        path = config.posts_dir / NAME
        post = read_post(path, site=config.site, site_dir=config.site_dir)
        lines = path.read_text(encoding="utf-8").split("\n")
        for finding in lint_post(post, settings=config, now=NOW):
            assert 1 <= finding.line <= len(lines), finding
            assert 1 <= finding.column <= len(lines[finding.line - 1]) + 1, finding


def test_hostile_input_does_not_crash(make_site: SiteFactory) -> None:
    body = (
        "\n[broken](http://[::1/x) ![nul](a%00b.png) ![long](" + "x" * 5000 + ".png)\n\n"
        + "[" * 32 + "\n\n" + "`" * 500 + "\n\n$" + "x" * 1000 + "\n\n<a href=>x</a> <img>\n"
    )
    findings = lint(make_site, body)
    # A NUL byte or a name too long for the file system is simply not there.
    assert len(where(findings, "missing-file")) == 2
    assert len(where(findings, "insecure-link")) == 1


def test_the_repository_example_site_is_clean(tmp_path: Path) -> None:
    repository = Path(__file__).resolve().parent.parent
    if not (repository / "content" / "posts").is_dir():
        pytest.skip("the repository has no example site")
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(repository / "feedpub.toml", site)
    for folder in ("content", "templates"):
        if (repository / folder).is_dir():
            shutil.copytree(repository / folder, site / folder)
    report = lint_site(load_settings(site, env={"FEEDPUB_SECRET": "x"}), NOW)
    assert [f for f in report.findings if f.severity != "info"] == []


# --- footnotes ------------------------------------------------------------------------


def test_a_footnote_never_referred_to_is_found_at_its_definition(
    make_site: SiteFactory,
) -> None:
    body = (
        "Said once[^used] and `[^in-code]` is an example.\n\n"  # line 5
        "```\n[^fenced]: an example too\n```\n\n"  # lines 7-9
        "[^used]: Referred to.\n"  # line 11
        "[^unused]: Never referred to.\n"  # line 12
        "  [^in-code]: Only code mentions it.\n"  # line 13
        "- item[^in-list]\n\n[^in-list]: Referred to from a list.\n"
    )
    findings = lint(make_site, body)
    assert where(findings, "unused-footnote") == [(12, 1), (13, 3)]
    [first, _] = [f for f in findings if f.code == "unused-footnote"]
    assert first.severity == "warning"
    assert "[^unused]" in first.message and "leave it out" in first.message
