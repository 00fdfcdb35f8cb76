"""Fuzzing the Markdown and front matter path: whatever a post holds, the build's worker
gives its entry or one line naming the file, within the limits, and never raises.

The quick property runs in every suite; the large budget is marked ``slow`` (set
FEEDPUB_FUZZ_EXAMPLES to change it).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedpub.build import build
from feedpub.catalog import _convert_chunk, _read_chunk
from feedpub.config import Settings
from tests.conftest import BASIC_CONFIG, SiteFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = "\n[limits]\nrender_seconds = 3\n"
SECONDS_PER_POST = 6.0
"""The render limit, and time to read and check the post around it."""
# The render limit's timer signal may land in hypothesis's own gc callback, where Python
# ignores the exception (the timer fires again 50 ms later and stops the post then).
TIMER_IN_GC = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# Pieces of Markdown that have broken converters: containers, brackets, emphasis, HTML,
# fences, footnotes, tables, math, entities, odd characters.
PIECES = st.sampled_from([
    "- ", "* ", "+ ", "1. ", "> ", "    ", "  ", "\t", "\n", "\n\n", "[", "]", "(", ")",
    "![", "[^", "]:", "*", "**", "_", "__", "~~", "==", "^^", "`", "```", "~~~", "<", ">",
    "<div>", "</div>", "<b>", "<!--", "-->", "&", "&#", "&amp;", "|", "| --- |", "#", "###",
    "$", "$$", "\\", "\\(", "http://", "<http://a>", "[x](y)", "[x]: http://a", "---",
    "%%FEEDPUB_EMAIL%%", "\u202e", "\u0000", "\ufeff", "\r", "x", " ", "\u4e2d", "{", "}",
    "+++", "...", "=", ":", "<script>", "javascript:", "[[", "]]", "<details>", "!!",
])
CHUNKS = st.tuples(PIECES, st.integers(min_value=1, max_value=3000)).map(lambda p: p[0] * p[1])
BODIES = st.lists(CHUNKS | st.text(max_size=40), max_size=12).map("".join)
FRONT = st.sampled_from([
    "", "---\ntitle: T\ndate: 2025-01-02\n---\n", "---\ndate: 0001-01-01\n---\n",
    "---\ndate: Mon, 01 Jan 0001 00:00:00 +0000\n---\n", "+++\ndate = 2025-01-02\n+++\n",
    "---\ntitle: [a, b\n---\n", "---\n&a [*a]\n---\n", "---\ndate: 9999-12-31 23:59 -12:00\n---\n",
    "---\nsummary: '" + "[" * 200 + "'\ndate: 2025-01-02\n---\n",
])


def fuzz_site(make_site: SiteFactory) -> Settings:
    shutil.rmtree(make_site.root, ignore_errors=True)  # one site for every example
    make_site(config=BASIC_CONFIG + LIMITS)
    return make_site.settings()


def worker_verdict(settings_: Settings, path: Path) -> list[str]:
    """What the build's workers say about one post: its parts, or one error line."""
    started = time.monotonic()
    results = [*_read_chunk(settings_, [path]), *_convert_chunk(settings_, [path])]
    assert time.monotonic() - started < 2 * SECONDS_PER_POST
    lines = []
    for result in results:
        if len(result) == 4:
            message, where, _, _ = result
            assert where == "content/posts/2025-01-02-fuzz.md"
            assert message and "\n" not in str(message)
            lines.append(str(message))
    return lines


def check_post(make_site: SiteFactory, front: str, body: str) -> None:
    site_settings = fuzz_site(make_site)
    path = make_site.write("content/posts/2025-01-02-fuzz.md",
                           (front + body).encode("utf-8", "surrogatepass"))
    worker_verdict(site_settings, path)


@TIMER_IN_GC
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(front=FRONT, body=BODIES)
def test_any_post_gives_its_entry_or_one_line(
    make_site: SiteFactory, front: str, body: str
) -> None:
    check_post(make_site, front, body)


@pytest.mark.slow
@TIMER_IN_GC
@settings(max_examples=int(os.environ.get("FEEDPUB_FUZZ_EXAMPLES", "600")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(front=FRONT, body=BODIES)
def test_any_post_gives_its_entry_or_one_line_large_budget(
    make_site: SiteFactory, front: str, body: str
) -> None:
    check_post(make_site, front, body)


@TIMER_IN_GC
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies=st.lists(BODIES, min_size=2, max_size=4))
def test_a_build_of_fuzzed_posts_reports_each_bad_one_and_publishes_the_good(
    make_site: SiteFactory, bodies: list[str]
) -> None:
    posts: dict[str, str | bytes] = {
        f"2025-01-{day:02d}-fuzz.md": f"---\ntitle: Fuzz {day}\ndate: 2025-01-{day:02d}\n---\n"
        .encode() + body.encode("utf-8", "surrogatepass")
        for day, body in enumerate(bodies, start=1)
    }
    posts["2025-02-01-good.md"] = "---\ntitle: Always good\ndate: 2025-02-01\n---\nFine.\n"
    shutil.rmtree(make_site.root, ignore_errors=True)  # one site for every example
    make_site(config=BASIC_CONFIG + LIMITS, posts=posts)
    started = time.monotonic()
    report = build(make_site.settings(), NOW, jobs=1)
    assert time.monotonic() - started < SECONDS_PER_POST * len(posts)
    assert all("\n" not in str(error) for error in report.errors)
    assert len({str(error.path) for error in report.errors}) == len(report.errors)
    atom = (make_site.root / "public" / "atom.xml").read_text(encoding="utf-8")
    assert "Always good" in atom
    assert report.published == len(posts) - len(report.errors)
