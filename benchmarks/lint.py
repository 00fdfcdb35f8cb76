"""Time ``feedpub check`` (lint_site) over N generated posts.

    python benchmarks/lint.py            # 1,000 posts
    python benchmarks/lint.py -n 5000 --jobs 1

Prints the seconds for a cold run (nothing cached: every post is converted once,
giving its entry and its outline, as on a first ``check`` or after an upgrade), a
warm run (the catalog's cache holds every entry, outline and post-alone finding,
so nothing is parsed again), and the findings it made.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feedpub.catalog import lint_site
from feedpub.config import load_settings

CONFIG = """\
[site]
title = "Benchmark"
url = "https://example.com/"
"""

PARAGRAPH = (
    "Paragraph {p}: feed readers keep only a safe subset of HTML, so the post is rendered once and "
    "sanitised; links become absolute, and [the guide](https://example.org/guide/{n}) "
    "stays a link. 中文段落也要測試，包括全形標點符號。Emoji too: 🇨🇳 👩‍💻.\n"
)


def post_text(n: int, date: datetime) -> str:
    """A post of about 3 KB; one in ten carries something to warn about."""
    parts = [
        "---",
        f'title: "Post number {n}: on feeds, email and 編碼"',
        f"date: {date.isoformat()}",
        "categories: [notes, python]",
        "---",
        "",
        f"## Section {n}",
        "",
        *(PARAGRAPH.format(n=n, p=p) for p in range(6)),
        "```python",
        "for post in posts:  # {{ not a template }}",
        "    print(post.title, '$5 and $10')",
        "```",
        "",
        "| Column | Value |",
        "|---|---|",
        f"| row {n} | ![A chart](https://example.org/chart-{n}.png) |",
        "",
        "- first point, said once",
        "- second point with `code` and a [link](https://example.org/)",
        "",
    ]
    if n % 10 == 0:
        parts += [
            "### 一、背景一、背景",
            "",
            "{% include note.html %} and $E=mc^2$ and ![](missing.png)",
            "",
        ]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--posts", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=None, help="render processes (default: cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "feedpub.toml").write_text(CONFIG, encoding="utf-8")
        posts = site / "content" / "posts"
        posts.mkdir(parents=True)
        start = datetime(2020, 1, 1, tzinfo=UTC)
        for n in range(args.posts):
            date = start + timedelta(hours=7 * n)
            name = f"{date:%Y-%m-%d}-post-{n}.md"
            (posts / name).write_text(post_text(n, date), encoding="utf-8")
        settings = load_settings(site, env={})
        now = datetime(2030, 1, 1, tzinfo=UTC)
        for label in ("cold", "warm"):
            began = time.perf_counter()
            report = lint_site(settings, now, jobs=args.jobs)
            seconds = time.perf_counter() - began
            print(f"{label}: {seconds:.2f} s for {report.posts} posts ({report.summary()})")


if __name__ == "__main__":
    main()
