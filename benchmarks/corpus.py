"""Write a corpus of N posts of about 4 KB each, the same on every run.

    python benchmarks/corpus.py /tmp/corpus              # 10,000 posts
    python benchmarks/corpus.py /tmp/corpus -n 1000 --flavour hugo

Each post has Jekyll front matter (``date: 2021-03-04 09:30:00 +0800``, with
offsets that vary), a title in Chinese or English with emoji, categories and
tags; its body mixes English and CJK paragraphs, emoji (flags, ZWJ families,
skin tones), a fenced code block in one of several languages, a table, a
footnote or two, relative links and images, a reference-style link and, in one
post of five, a ``<!--more-->`` excerpt. The words are drawn from a seeded
generator, so posts differ from one another but a given N always gives the
same files.

``--flavour`` writes the same bodies with the front matter another tool
reads: ``feedpub`` (the default: a feedpub site with ``feedpub.toml`` and
``content/posts/``), ``hugo`` (a Hugo site with ``hugo.toml``, ``content/posts/``
and minimal layouts) or ``pelican`` (``pelicanconf.py`` and ``content/``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

FLAVOURS = ("feedpub", "hugo", "pelican")

PROSE = (
    "feed readers keep a safe subset of HTML so every post is rendered once and sanitized "
    "while links become absolute and images point at the permalink of the post they belong "
    "to the digest goes out on Monday morning with a plain text part for old clients and "
    "subscribers can change their mind at any time through the preferences page"
)
ENGLISH = PROSE.split()
CHINESE = (
    "今天早上我們在台北的咖啡館裡討論了訂閱系統的設計包括電子報的排程與重試機制"
    "讀者希望在手機上閱讀時排版仍然清楚而且不會因為圖片太大而被截斷"
)
JAPANESE = "東京の朝は静かでフィードリーダーで記事を読むのが日課になっている"
EMOJI = ["🎉", "☕", "🇨🇳", "🇯🇵", "👩‍💻", "👨‍👩‍👧‍👦", "👍🏽", "🚀", "✨", "🧑🏿‍🔬"]
CATEGORIES = ["筆記", "travel", "python", "Machine Learning", "日本語", "email", "web", "雜談"]
TAGS = ["feeds", "markdown", "rss", "atom", "cjk", "emoji", "smtp", "hugo", "jekyll", "台灣"]
OFFSETS = ["+0800", "+0900", "-0700", "+0000", "+0530", "-0300"]
CODE = {
    "python": 'def render(post):\n    """Render one post."""\n    html = markdown(post.body)\n'
    '    return {{"id": {n}, "html": html, "tags": ["a", "b"]}}\n\nprint(render(Post()))',
    "javascript": "const posts = await fetch('/feed.json').then(r => r.json());\n"
    "for (const item of posts.items) {{\n  console.log(item.id, {n});\n}}",
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {{\n\tfor i := 0; i < {n}; i++ {{\n'
    '\t\tfmt.Println("post", i)\n\t}}\n}}',
    "sql": "SELECT e.id, count(*)\n  FROM deliveries d JOIN editions e ON e.id = d.edition_id\n"
    " WHERE d.status = 'queued' AND e.id > {n}\n GROUP BY e.id;",
    "bash": 'for f in content/posts/*.md; do\n  echo "$f" | wc -c  # {n}\ndone',
    "": "plain text block {n}\n  with indentation\n    and <angle> & ampersands",
}


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(ENGLISH) for _ in range(count))


def cjk(rng: random.Random, count: int) -> str:
    source = rng.choice((CHINESE, CHINESE, JAPANESE))
    start = rng.randrange(len(source) - count) if count < len(source) else 0
    text = source[start : start + count]
    return text[: count // 2] + "，" + text[count // 2 :] + "。"


def sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        text = words(rng, rng.randint(8, 18))
        return text[0].upper() + text[1:] + "."
    if kind < 0.8:
        return cjk(rng, rng.randint(12, 30))
    return f"{words(rng, rng.randint(4, 8)).capitalize()} {rng.choice(EMOJI)} {cjk(rng, 10)}"


def paragraph(rng: random.Random, n: int, p: int) -> str:
    parts = [sentence(rng) for _ in range(rng.randint(3, 4))]
    extras = [
        f"See [the previous post](../post-{max(n - 1, 0)}/) for context.",
        f"The **chart** ![trend {n}](images/chart-{p}.png \"Chart {p}\") shows it.",
        f"Read [the guide][guide] or the `code` in [this file](files/example {p}.txt).",
        f"A note on this[^note{p}] and a [section link](#section-{n}-{p}).",
        f"Visit <https://example.org/{n}/{p}> or mail <someone@example.com>.",
        f"*Emphasis* and ~~not~~ __strong__ text with 5 < 6 & \"quotes\" ({rng.choice(EMOJI)}).",
    ]
    parts.insert(rng.randrange(len(parts) + 1), extras[(n + p) % len(extras)])
    return " ".join(parts)


def body(rng: random.Random, n: int) -> str:
    blocks: list[str] = []
    if n % 5 == 0:
        blocks += [paragraph(rng, n, 0), "<!--more-->"]
    for p in range(1, 5):
        blocks.append(f"## Section {p}: {cjk(rng, 6) if p == 2 else words(rng, 3)}")
        blocks += [paragraph(rng, n, p), paragraph(rng, n, p + 4)]
        if p == 1:
            language = list(CODE)[n % len(CODE)]
            blocks.append(f"```{language}\n{CODE[language].format(n=n)}\n```")
        if p == 2:
            rows = "\n".join(
                f"| {cjk(rng, 4)} | {rng.randint(1, 999)} | {words(rng, 2)} {rng.choice(EMOJI)} |"
                for _ in range(4)
            )
            blocks.append(f"| 名稱 | Count | Notes |\n|:---|---:|:---:|\n{rows}")
        if p == 3:
            blocks.append("\n".join(f"- {sentence(rng)}" for _ in range(4)))
            blocks.append(f"> {sentence(rng)}\n> {sentence(rng)}")
            blocks.append("---")
    blocks.append("\n".join(f"[^note{p}]: Footnote {p}: {sentence(rng)}" for p in range(1, 5)))
    blocks.append(f"[guide]: https://example.org/guide/{n}")
    return "\n\n".join(blocks) + "\n"


def post_date(n: int) -> datetime:
    offset = OFFSETS[n % len(OFFSETS)]
    tz = timezone(timedelta(hours=int(offset[:3]), minutes=int(offset[0] + offset[3:])))
    return datetime(2015, 1, 1, 9, 30, tzinfo=tz) + timedelta(hours=5 * n, minutes=n % 60)


def front_matter(rng: random.Random, n: int, flavour: str) -> tuple[str, str]:
    """(front matter, file name)."""
    date = post_date(n)
    title = f"{cjk(rng, 8)[:-1]} {rng.choice(EMOJI)} post {n}" if n % 2 else (
        f"Post {n}: {words(rng, 4)} {rng.choice(EMOJI)}")  # fmt: skip
    title = title.replace('"', "'")
    categories = [CATEGORIES[n % len(CATEGORIES)], CATEGORIES[(n // 3) % len(CATEGORIES)]]
    tags = rng.sample(TAGS, 3)
    slug = f"post-{n}"
    stamp = date.strftime("%Y-%m-%d %H:%M:%S %z")
    if flavour == "pelican":
        lines = [f"Title: {title}", f"Date: {stamp}", f"Category: {categories[0]}",
                 f"Tags: {', '.join(tags)}", f"Slug: {slug}", ""]  # fmt: skip
        return "\n".join(lines) + "\n", f"{slug}.md"
    if flavour == "hugo":
        lines = ["---", f'title: "{title}"', f"date: {date.isoformat()}", f"slug: {slug}",
                 f"categories: [{', '.join(categories)}]", f"tags: [{', '.join(tags)}]",
                 "---"]  # fmt: skip
        return "\n".join(lines) + "\n\n", f"{slug}.md"
    lines = ["---", "layout: post", f'title: "{title}"', f"date: {stamp}",
             f"categories: {' '.join(c.replace(' ', '-') for c in categories)}",
             f"tags: [{', '.join(tags)}]", "author: Benchmark Writer", "---"]  # fmt: skip
    if n % 50 == 7:
        lines.insert(-1, "draft: true")
    return "\n".join(lines) + "\n\n", f"{date:%Y-%m-%d}-{slug}.md"


def posts(count: int, flavour: str = "feedpub", seed: int = 9) -> Iterator[tuple[str, str]]:
    """(file name, text) of each post."""
    for n in range(count):
        rng = random.Random(seed * 1_000_003 + n)
        head, name = front_matter(rng, n, flavour)
        yield name, head + body(rng, n)


FEEDPUB_CONFIG = """\
[site]
title = "Benchmark 基準"
url = "https://example.com/blog/"
timezone = "Asia/Taipei"
author = { name = "Benchmark", email = "bench@example.com" }

[feed]
limit = 20

[pages]
enabled = false
"""
HUGO_SITE = Path(__file__).resolve().parent / "hugo-site"
"""The Hugo side: its config and minimal layouts (a page per post, a list per section
and taxonomy, RSS on), copied next to the generated posts."""
PELICAN_CONFIG = """\
SITENAME = "Benchmark"
SITEURL = "https://example.com/blog"
PATH = "content"
TIMEZONE = "Asia/Taipei"
DEFAULT_LANG = "en"
FEED_DOMAIN = SITEURL
FEED_ALL_ATOM = "feeds/all.atom.xml"
FEED_ALL_RSS = "feeds/all.rss.xml"
CATEGORY_FEED_ATOM = "feeds/{slug}.atom.xml"
DEFAULT_PAGINATION = False
MARKDOWN = {
    "extension_configs": {
        "markdown.extensions.codehilite": {"css_class": "highlight", "noclasses": True},
        "markdown.extensions.extra": {},
        "markdown.extensions.toc": {},
    },
    "output_format": "html5",
}
"""


def write_site(root: Path, count: int, flavour: str = "feedpub") -> Path:
    """Write a site of ``count`` posts under ``root``; return the folder the posts are in."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
    root.mkdir(parents=True, exist_ok=True)
    if flavour == "feedpub":
        (root / "feedpub.toml").write_text(FEEDPUB_CONFIG, encoding="utf-8")
        folder = root / "content" / "posts"
    elif flavour == "hugo":
        shutil.copytree(HUGO_SITE, root, dirs_exist_ok=True)
        folder = root / "content" / "posts"
    else:
        (root / "pelicanconf.py").write_text(PELICAN_CONFIG, encoding="utf-8")
        folder = root / "content"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in posts(count, flavour):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-n", "--posts", type=int, default=10_000)
    parser.add_argument("--flavour", choices=FLAVOURS, default="feedpub")
    args = parser.parse_args()
    folder = write_site(args.folder, args.posts, args.flavour)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"{args.posts} posts, {size / max(args.posts, 1) / 1024:.1f} KB each, in {folder}",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
