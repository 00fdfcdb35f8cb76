"""The publication's pages: every post at its permalink, the home page, archives,
categories, newsletters, assets where links resolve, and a site in which every link
works, through `feedpub serve` and through a plain static server."""

from __future__ import annotations

import functools
import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import feedparser
import pytest
from click.testing import CliRunner

import feedpub.build
from feedpub.build import build
from feedpub.catalog import lint_site
from feedpub.cli import main
from tests.conftest import BASIC_CONFIG, SiteFactory, static_server

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SITE = "https://example.com/"


def post(title: str, date: str, body: str = "Body text.", extra: str = "") -> str:
    return f"---\ntitle: {title}\ndate: {date}\n{extra}---\n\n{body}\n"


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfabd40000"
                    "000049454e44ae426082")


@pytest.fixture
def blog(make_site: SiteFactory) -> SiteFactory:
    make_site(
        posts={
            "2025-01-15-welcome.md": post(
                "Welcome", "2025-01-15 09:00", "Hello. ![Chart](../images/chart.png)\n\n"
                "[Notes](../../static/notes.pdf) and [About](/about/).",
                extra="categories: [News, C++]\n"),
            "2025-02-01-second.md": post("Second <post> & more", "2025-02-01 09:00",
                                         "Text with $E = mc^2$ and `$5` in code.",
                                         extra="categories: News\n"),
            "trip/index.md": post("Trip", "2024-06-01", "![Harbour](harbour.png)"),
            "2025-03-01-draft.md": post("Draft", "2025-03-01", extra="draft: true\n"),
            "2099-01-01-future.md": post("Future", "2099-01-01"),
        },
        files={
            "content/images/chart.png": PNG,
            "content/posts/trip/harbour.png": PNG,
            "static/notes.pdf": b"%PDF-1.4",
            "static/about/index.html": "<h1>About</h1>",
        },
    )
    return make_site


def public_files(root: Path) -> dict[str, bytes]:
    public = root / "public"
    return {p.relative_to(public).as_posix(): p.read_bytes()
            for p in sorted(public.rglob("*")) if p.is_file()}


def test_each_published_post_gets_a_page_and_drafts_and_future_posts_none(
    blog: SiteFactory,
) -> None:
    build(blog.settings(), NOW, jobs=1)
    files = public_files(blog.root)
    assert "2025/01/15/welcome/index.html" in files
    assert "2025/02/01/second/index.html" in files
    assert "2024/06/01/trip/index.html" in files
    assert not any("draft" in name or "future" in name for name in files)
    for page in ("index.html", "archive/index.html", "archive/2025/index.html",
                 "archive/2024/index.html", "categories/news/index.html",
                 "categories/c-plus-plus/index.html", "editions/weekly/index.html",
                 "404.html", "sitemap.xml", "robots.txt", "style.css"):
        assert page in files, page


def test_a_post_page_carries_what_readers_and_crawlers_need(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    html = (blog.root / "public/2025/02/01/second/index.html").read_text(encoding="utf-8")
    assert "<title>Second &lt;post&gt; &amp; more · Test Site</title>" in html
    assert '<link rel="canonical" href="https://example.com/2025/02/01/second/">' in html
    assert '<meta property="og:title" content="Second &lt;post&gt; &amp; more">' in html
    assert 'rel="alternate" type="application/atom+xml"' in html
    assert '<html lang="en" dir="ltr">' in html
    assert '<a href="/categories/news/">News</a>' in html
    # Newer and older posts, as root-relative links that work on any host.
    assert 'href="/2025/01/15/welcome/" rel="prev"' in html
    assert "<math" in html and "<code>$5</code>" in html
    assert 'action="https://example.com/subscribe"' in html
    ld = json.loads(re.search(r'<script type="application/ld\+json">(.*?)</script>',
                              html, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert ld["@type"] == "BlogPosting" and ld["headline"] == "Second <post> & more"
    assert ld["datePublished"].startswith("2025-02-01T09:00")


def test_assets_are_published_where_links_in_feeds_and_pages_point(
    blog: SiteFactory,
) -> None:
    build(blog.settings(), NOW, jobs=1)
    files = public_files(blog.root)
    assert files["images/chart.png"] == PNG  # content/images/
    assert files["2024/06/01/trip/harbour.png"] == PNG  # beside its page bundle
    assert files["notes.pdf"] == b"%PDF-1.4"  # static/
    feed = feedparser.parse(files["atom.xml"])
    welcome = next(e for e in feed.entries if e.title == "Welcome")
    content = welcome.content[0].value
    # Read from the post's file, the way an editor shows it, then published there.
    assert 'src="https://example.com/images/chart.png"' in content
    assert 'href="https://example.com/notes.pdf"' in content
    for link in re.findall(r'(?:src|href)="https://example\.com/([^"#?]*)"', content):
        path = unquote(link)
        assert path + ("index.html" if path.endswith("/") or not path else "") in files, link


def test_check_warns_exactly_when_a_published_link_would_be_broken(
    make_site: SiteFactory,
) -> None:
    make_site(
        posts={"2025-01-15-a.md": post("A", "2025-01-15",
                                        "![ok](../images/here.png) ![gone](../images/gone.png)")},
        files={"content/images/here.png": PNG},
    )
    settings = make_site.settings()
    build(settings, NOW, jobs=1)
    findings = [f for f in lint_site(settings, NOW).findings if f.code == "missing-file"]
    assert [f.message.split("“")[1].split("”")[0] for f in findings] == ["../images/gone.png"]
    content = feedparser.parse((make_site.root / "public/atom.xml").read_bytes()) \
        .entries[0].content[0].value
    published = set(public_files(make_site.root))
    for src in re.findall(r'src="https://example\.com/([^"]+)"', content):
        assert (src in published) == ("gone" not in src)


def test_an_unchanged_rebuild_writes_nothing_and_a_fresh_one_the_same_bytes(
    blog: SiteFactory,
) -> None:
    settings = blog.settings()
    build(settings, NOW, jobs=1)
    first = public_files(blog.root)
    stamps = {p: p.stat().st_mtime_ns for p in (blog.root / "public").rglob("*")}
    again = build(settings, NOW, jobs=1)
    assert again.written == [] and again.rendered == 0
    assert {p: p.stat().st_mtime_ns for p in (blog.root / "public").rglob("*")} == stamps
    shutil.rmtree(blog.root / "public")
    shutil.rmtree(blog.root / ".feedpub-cache")
    build(settings, NOW, jobs=2)
    assert public_files(blog.root) == first


def test_pages_rendered_a_few_posts_at_a_time_are_the_same_site(
    blog: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = blog.settings()
    build(settings, NOW, jobs=1)
    whole = public_files(blog.root)
    shutil.rmtree(blog.root / "public")
    shutil.rmtree(blog.root / ".feedpub-cache")
    monkeypatch.setattr(feedpub.build, "_PAGE_BATCH_SOURCES", 1)
    build(settings, NOW, jobs=1)
    assert public_files(blog.root) == whole
    assert any(name.startswith("math/") for name in whole)  # images of the second batch too


def test_a_static_file_at_a_pages_path_takes_its_place_build_after_build(
    blog: SiteFactory,
) -> None:
    blog.write("static/index.html", "<h1>My own home page</h1>")
    for _ in range(2):
        build(blog.settings(), NOW, jobs=1)
        home = (blog.root / "public" / "index.html").read_text(encoding="utf-8")
        assert home == "<h1>My own home page</h1>"
    assert (blog.root / "public" / "archive" / "index.html").exists()


def test_one_changed_post_renders_its_page_and_its_neighbours_only(blog: SiteFactory) -> None:
    settings = blog.settings()
    build(settings, NOW, jobs=1)
    blog.write("content/posts/2025-02-01-second.md",
               post("Second, renamed", "2025-02-01 09:00", "New text."))
    report = build(settings, NOW, jobs=1)
    written = {p.relative_to(blog.root / "public").as_posix() for p in report.written}
    assert "2025/02/01/second/index.html" in written
    assert "2025/01/15/welcome/index.html" in written  # its "newer" link shows the title
    assert "2024/06/01/trip/index.html" not in written
    assert "Second, renamed" in (blog.root / "public/index.html").read_text(encoding="utf-8")


def test_a_removed_post_loses_its_page_and_nothing_else_is_deleted(blog: SiteFactory) -> None:
    settings = blog.settings()
    build(settings, NOW, jobs=1)
    public = blog.root / "public"
    (public / "2025/01/15/welcome/notes.txt").write_text("mine", encoding="utf-8")
    (public / "CNAME").write_text("example.com", encoding="utf-8")
    (public / "2024/06/01/trip/index.html").write_text("edited by hand", encoding="utf-8")
    (blog.root / "content/posts/2025-01-15-welcome.md").unlink()
    (blog.root / "content/posts/trip/index.md").unlink()
    build(settings, NOW, jobs=1)
    assert not (public / "2025/01/15/welcome/index.html").exists()
    assert (public / "2025/01/15/welcome/notes.txt").read_text(encoding="utf-8") == "mine"
    assert (public / "CNAME").exists()
    # A page someone changed after feedpub wrote it is theirs now.
    assert (public / "2024/06/01/trip/index.html").read_text(encoding="utf-8") == (
        "edited by hand"
    )
    assert not (public / "categories/c-plus-plus/index.html").exists()


def test_pages_off_writes_the_feeds_only(make_site: SiteFactory) -> None:
    make_site(posts={"2025-01-15-a.md": post("A", "2025-01-15")},
              config=BASIC_CONFIG + "\n[pages]\nenabled = false\n",
              files={"static/x.css": "x"})
    build(make_site.settings(), NOW, jobs=1)
    assert set(public_files(make_site.root)) == {
        "atom.xml", "rss.xml", "feed.json",
    }


def test_init_turns_pages_on_and_feeds_only_off(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(main, ["init", str(tmp_path / "b"), "--feeds-only"]).exit_code == 0
    assert "enabled = true" in (tmp_path / "a/feedpub.toml").read_text(encoding="utf-8")
    assert "enabled = false" in (tmp_path / "b/feedpub.toml").read_text(encoding="utf-8")
    assert (tmp_path / "a/static").is_dir()
    built = runner.invoke(main, ["--site", str(tmp_path / "a"), "build"])
    assert built.exit_code == 0, built.output
    assert (tmp_path / "a/public/index.html").exists()


def test_page_templates_can_be_overridden_file_by_file(blog: SiteFactory) -> None:
    blog.write("templates/pages/404.html", "{% extends 'feedpub/404.html' %}"
               "{% block title %}Lost · {{ site.title }}{% endblock %}")
    build(blog.settings(), NOW, jobs=1)
    lost = (blog.root / "public/404.html").read_text(encoding="utf-8")
    assert "<title>Lost · Test Site</title>" in lost
    assert "Page not found" in lost  # the rest is the built-in page


# --- every link works ---------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name in ("href", "src") or (tag == "form" and name == "action")):
                if tag == "link" and dict(attrs).get("rel") == "canonical":
                    continue
                self.found.append(value)


def crawl(fetch: functools.partial[tuple[int, bytes, str]], start: str) -> dict[str, int]:
    """Every page and file reachable from ``start`` on this site -> its status."""
    seen: dict[str, int] = {}
    queue = [start]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        status, body, media_type = fetch(url)
        seen[url] = status
        if status != 200 or "html" not in media_type:
            continue
        parser = _Links()
        parser.feed(body.decode("utf-8"))
        for link in parser.found:
            target = urljoin(url, link).split("#")[0]
            if urlsplit(target).path.endswith("/subscribe"):
                continue  # served by `feedpub serve`, checked in tests/test_web.py
            if target.startswith(SITE):
                target = "/" + target[len(SITE):]
            if target.startswith("/"):
                queue.append(target)
    return seen


@pytest.fixture
def public_served(blog: SiteFactory) -> Iterator[str]:
    build(blog.settings(), NOW, jobs=1)
    with static_server(blog.root / "public") as base:
        yield base


def _fetch_http(base: str, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, b"", ""


def test_every_link_resolves_through_a_plain_static_server(public_served: str) -> None:
    statuses = crawl(functools.partial(_fetch_http, public_served), "/")
    assert len(statuses) > 20
    assert {url: code for url, code in statuses.items() if code != 200} == {}


def test_every_link_resolves_through_feedpub_serve(blog: SiteFactory) -> None:
    import warnings

    from feedpub.web import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    settings = blog.settings()
    build(settings, NOW, jobs=1)
    with TestClient(create_app(settings)) as client:
        def fetch(path: str) -> tuple[int, bytes, str]:
            response = client.get(path)
            return response.status_code, response.content, response.headers.get(
                "content-type", "")

        statuses = crawl(functools.partial(fetch), "/")
        missing = client.get("/no/such/page/")
        assert missing.status_code == 404
        assert "Page not found" in missing.text and "/style.css" in missing.text
    assert {url: code for url, code in statuses.items() if code != 200} == {}
    assert "/2025/01/15/welcome/" in statuses and "/images/chart.png" in statuses


def test_the_sitemap_names_every_post_and_robots_points_at_it(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    sitemap = (blog.root / "public/sitemap.xml").read_text(encoding="utf-8")
    locations = re.findall(r"<loc>([^<]+)</loc>", sitemap)
    assert "https://example.com/2025/01/15/welcome/" in locations
    assert "https://example.com/2024/06/01/trip/" in locations
    assert not any("draft" in loc for loc in locations)
    assert "Sitemap: https://example.com/sitemap.xml" in (
        blog.root / "public/robots.txt").read_text(encoding="utf-8")


# --- the subscribe form on the pages and on other sites ------------------------------

EMBEDDING = BASIC_CONFIG.replace(
    '[[newsletter]]', '[web]\nembed_origins = ["https://blog.example"]\n\n[[newsletter]]'
)


def _client(make_site: SiteFactory, config: str = EMBEDDING) -> object:
    import warnings

    from feedpub.web import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    make_site(posts={"2025-01-15-a.md": post("A", "2025-01-15")}, config=config)
    return TestClient(create_app(make_site.settings()))


def _embedded_form() -> dict[str, str]:
    return {"email": "reader@example.org", "newsletter": "weekly", "embedded": "1",
            "homepage": ""}


def test_embed_prints_a_plain_form_that_posts_to_serve(make_site: SiteFactory) -> None:
    make_site(posts={}, config=EMBEDDING)
    result = CliRunner().invoke(main, ["--site", str(make_site.root), "embed"])
    assert result.exit_code == 0
    assert '<form method="post" action="https://example.com/subscribe"' in result.output
    assert 'name="embedded" value="1"' in result.output and "<script" not in result.output
    assert result.stderr == ""
    make_site(posts={}, config=BASIC_CONFIG)
    unlisted = CliRunner().invoke(main, ["--site", str(make_site.root), "embed"])
    assert "web.embed_origins is empty" in unlisted.stderr


def test_an_embedded_form_is_accepted_from_a_listed_origin_only(
    make_site: SiteFactory,
) -> None:
    with _client(make_site) as client:  # type: ignore[attr-defined]
        listed = client.post("/subscribe", data=_embedded_form(),
                             headers={"Origin": "https://blog.example"})
        assert listed.status_code == 200
        assert "Check your inbox" in listed.text
        assert listed.headers["access-control-allow-origin"] == "https://blog.example"
        other = client.post("/subscribe", data=_embedded_form(),
                            headers={"Origin": "https://evil.example"})
        assert other.status_code == 403
        assert "access-control-allow-origin" not in other.headers
        # No Origin (not a browser): the form token is still required.
        scripted = client.post("/subscribe", data=_embedded_form())
        assert scripted.status_code == 400 and "open for too long" in scripted.text
        preflight = client.options("/subscribe", headers={
            "Origin": "https://blog.example", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "POST"


def test_the_form_on_the_sites_own_pages_needs_no_listing(make_site: SiteFactory) -> None:
    with _client(make_site, BASIC_CONFIG) as client:  # type: ignore[attr-defined]
        own = client.post("/subscribe", data=_embedded_form(),
                          headers={"Origin": "https://example.com"})
        assert own.status_code == 200 and "Check your inbox" in own.text


def test_a_new_users_site_has_no_dead_link_in_feed_email_or_pages(tmp_path: Path) -> None:
    """feedpub init, a post with an image, build, digest send: every link to the site in
    the feed, the email and the pages leads to a file in public/ (or to `serve`)."""
    import mailbox

    site = tmp_path / "mysite"
    runner = CliRunner()
    env = {"FEEDPUB_SECRET": "s" * 32}

    def feedpub(*args: str) -> None:
        result = runner.invoke(main, ["--site", str(site), *args], env=env)
        assert result.exit_code == 0, result.output

    feedpub("init", str(site), "--url", SITE)
    feedpub("subscribers", "add", "reader@example.org", "--confirmed")
    feedpub("digest", "send", "--now", "2030-01-01T00:00:00+00:00")  # the baseline
    (site / "content/images").mkdir()
    (site / "content/images/cat.png").write_bytes(PNG)
    (site / "content/posts/2030-01-02-cat.md").write_text(
        post("A cat", "2030-01-02 10:00", "Look: ![A cat](../images/cat.png)\n\n"
             "[Older posts](/archive/)"), encoding="utf-8")
    feedpub("build", "--now", "2030-01-03T00:00:00+00:00")
    feedpub("digest", "send", "--now", "2030-01-07T09:05:00+00:00")

    [(_, message)] = mailbox.Maildir(site / "outbox", create=False).items()
    html = next(part for part in message.walk() if part.get_content_type() == "text/html")
    email_html = html.get_payload(decode=True).decode("utf-8")
    feed = (site / "public/atom.xml").read_text(encoding="utf-8")
    pages = "".join(p.read_text(encoding="utf-8") for p in (site / "public").rglob("*.html"))
    served = ("subscribe", "unsubscribe/", "preferences/", "confirm/")
    published = set(public_files(site))
    links = set()
    for text in (email_html, feed, pages):
        links |= set(re.findall(r'(?:href|src)="(?:https://example\.com)?/([^"#?]*)"', text))
    assert "images/cat.png" in links and "2030/01/02/cat/" in links
    for link in sorted(links):
        path = unquote(link)
        if path.startswith(served):
            continue
        target = path + "index.html" if path.endswith("/") or not path else path
        assert target in published, link
