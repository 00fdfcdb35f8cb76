"""Measure the email path: size of a 10-post digest, render time, per-recipient cost.

    python benchmarks/email_render.py               # 10 posts, 2,000 recipients
    python benchmarks/email_render.py -n 20 -r 5000

The posts go through the real pipeline (Markdown with a highlighted code
block, a list, a table and an image -> Entry) in a temporary site. Prints:
the HTML size of the digest, the time to render one edition (jinja2 +
premailer + html2text, median of several), and the cost per recipient of
``MessageTemplate.build`` (placeholders substituted + MIME built) without and
with DKIM (a fresh 2048-bit RSA key from ``openssl genrsa``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feedpub.catalog import load_catalog
from feedpub.config import Settings, load_settings
from feedpub.mail.message import DkimSigner, build_message, prepare_message
from feedpub.mail.render import Recipient, RenderedEdition, render_edition

CONFIG = """\
[site]
title = "Benchmark"
url = "https://example.com/"

[mail]
from = "Benchmark <news@example.com>"
postal_address = "1 Benchmark Road, Testville"
{dkim}
"""

POST = """\
---
title: "Post {n}: what a newsletter looks like"
date: {date}
categories: [python, email]
---
Paragraph one of post {n}: feed readers keep only a safe subset of HTML, so the
post is rendered once and sanitised; links become absolute, and
[the guide](https://example.org/guide/{n}) explains the rest.

![A diagram](/images/diagram-{n}.png)

- a list item with `inline code`
- another with **bold** text

```python
def handler(request):
    return {{"post": {n}, "ok": True}}
```

| name | value |
|------|-------|
| a    | {n}   |

Paragraph three: 中文也可以，日本語もどうぞ。 Emoji too 🎉.
"""

BASE = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def make_site(folder: Path, posts: int, dkim_key: Path | None) -> Settings:
    dkim = ""
    if dkim_key is not None:
        dkim = (f'dkim_selector = "bench"\ndkim_domain = "example.com"\n'
                f'dkim_key_file = "{dkim_key}"')
    (folder / "feedpub.toml").write_text(CONFIG.format(dkim=dkim), encoding="utf-8")
    post_dir = folder / "content" / "posts"
    post_dir.mkdir(parents=True)
    for n in range(posts):
        date = BASE + timedelta(days=n)
        (post_dir / f"{date:%Y-%m-%d}-post-{n}.md").write_text(
            POST.format(n=n, date=date.isoformat()), encoding="utf-8")
    return load_settings(folder, env={"FEEDPUB_SECRET": "bench"})


def recipients(count: int) -> list[Recipient]:
    return [
        Recipient(
            email=f"reader{i}@example.org",
            name=f"Reader {i}",
            unsubscribe_url=f"https://example.com/unsubscribe/token-{i:08d}.abcdefghijklmnop",
            preferences_url=f"https://example.com/preferences/token-{i:08d}.abcdefghijklmnop",
        )
        for i in range(count)
    ]


def per_recipient_ms(settings: Settings, rendered: RenderedEdition, people: list[Recipient],
                     signer: DkimSigner | None) -> float:
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=rendered, edition_key="weekly/bench", signer=signer)
    start = time.perf_counter()
    for person in people:
        template.build(person, date=BASE)
    return (time.perf_counter() - start) / len(people) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--posts", type=int, default=10)
    parser.add_argument("-r", "--recipients", type=int, default=2000)
    parser.add_argument("--renders", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "dkim.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True)
        site = Path(tmp) / "site"
        site.mkdir()
        settings = make_site(site, args.posts, key)
        assert settings.mail.dkim is not None
        now = BASE + timedelta(days=args.posts + 1)
        catalog = load_catalog(settings, now)
        entries = catalog.load(catalog.published[: args.posts])
        newsletter = settings.newsletters[0]

        def render() -> RenderedEdition:
            return render_edition(entries, settings=settings, newsletter=newsletter,
                                  kind="digest", edition_id="bench", date=now)

        rendered = render()  # warm-up: imports, cssutils, template compilation
        times = []
        for _ in range(args.renders):
            start = time.perf_counter()
            rendered = render()
            times.append(time.perf_counter() - start)

        people = recipients(args.recipients)
        unsigned = replace(settings, mail=replace(settings.mail, dkim=None))
        plain = per_recipient_ms(unsigned, rendered, people, signer=None)
        signer = DkimSigner.from_config(settings.mail.dkim)
        signed = per_recipient_ms(settings, rendered, people[: max(args.recipients // 10, 50)],
                                  signer)
        start = time.perf_counter()
        build_message(settings=settings, newsletter=newsletter, rendered=rendered,
                      recipient=people[0], edition_key="weekly/bench", date=BASE,
                      signer=signer)
        one_off = (time.perf_counter() - start) * 1000

        print(f"digest of {len(entries)} posts: HTML {len(rendered.html.encode()) / 1000:.1f} KB "
              f"as rendered, {rendered.html_bytes / 1000:.1f} KB with personal links "
              f"(limit {settings.mail.max_html_bytes / 1000:.0f} KB), "
              f"text {len(rendered.text.encode()) / 1000:.1f} KB, "
              f"summarised: {len(rendered.summarized_ids)}")
        print(f"render one edition: median {statistics.median(times) * 1000:.1f} ms "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {args.renders} runs)")
        print(f"per recipient (personalise + MIME): {plain:.3f} ms without DKIM, "
              f"{signed:.3f} ms with DKIM (rsa-sha256, 2048 bit)")
        print(f"build_message one-off (prepare + build + sign): {one_off:.2f} ms")


if __name__ == "__main__":
    main()
