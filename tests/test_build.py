from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest

from feedpub.build import build
from feedpub.catalog import load_catalog
from feedpub.config import Settings
from feedpub.entries import Entry
from feedpub.errors import FeedpubError
from tests.conftest import BASIC_CONFIG, SiteFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def post(title: str, date: str, body: str = "Body text.", extra: str = "") -> str:
    return f"---\ntitle: {title}\ndate: {date}\n{extra}---\n\n{body}\n"


def outputs(site: Path) -> dict[str, bytes]:
    public = site / "public"
    return {
        p.relative_to(public).as_posix(): p.read_bytes()
        for p in sorted(public.rglob("*")) if p.is_file()
    }


@pytest.fixture
def blog(make_site: SiteFactory) -> SiteFactory:
    make_site(
        posts={
            "2025-02-11-taipei.md": post(
                "台北的早晨 ☕", "2025-02-11 10:00:00 +0800", extra="categories: 筆記 travel\n"
            ),
            "2025-03-01-second.md": post("Second", "2025-03-01", extra="categories: [travel]\n"),
            "2025-04-01-draft.md": post("Draft", "2025-04-01", extra="draft: true\n"),
            "2030-01-01-future.md": post("Future", "2030-01-01T00:00:00Z"),
        }
    )
    return make_site



def published_entries(settings: Settings) -> list[Entry]:
    catalog = load_catalog(settings, NOW, jobs=1)
    return catalog.load(catalog.published)

def test_build_writes_every_feed_that_a_reader_can_parse(blog: SiteFactory) -> None:
    report = build(blog.settings(), NOW, jobs=1)
    assert report.errors == []
    assert (report.posts, report.published) == (4, 2)
    files = outputs(blog.root)
    for name in ("atom.xml", "rss.xml", "feed.json"):
        assert name in files
    assert "feed.xsl" not in files  # XSLT only when [feed] xslt = true
    atom = feedparser.parse(files["atom.xml"])
    assert atom.bozo == 0
    assert [e.title for e in atom.entries] == ["Second", "台北的早晨 ☕"]
    taipei = atom.entries[1]
    assert taipei.link == "https://example.com/2025/02/11/taipei/"
    assert taipei.published_parsed[:5] == (2025, 2, 11, 2, 0)
    assert "categories/travel/atom.xml" in files
    travel = feedparser.parse(files["categories/travel/atom.xml"])
    assert {e.title for e in travel.entries} == {"Second", "台北的早晨 ☕"}


def test_future_posts_appear_once_their_time_has_come(blog: SiteFactory) -> None:
    build(blog.settings(), datetime(2030, 1, 2, tzinfo=UTC), jobs=1)
    titles = [e.title for e in feedparser.parse(outputs(blog.root)["atom.xml"]).entries]
    assert titles == ["Future", "Second", "台北的早晨 ☕"]


def test_rebuilding_unchanged_input_renders_nothing_and_writes_identical_bytes(
    blog: SiteFactory,
) -> None:
    first = build(blog.settings(), NOW, jobs=1)
    before = outputs(blog.root)
    second = build(blog.settings(), NOW, jobs=1)
    assert (first.read, first.rendered) == (4, 2)
    assert (second.read, second.rendered) == (0, 0)
    assert outputs(blog.root) == before


def test_an_unchanged_rebuild_still_restores_a_feed_removed_or_edited_by_hand(
    blog: SiteFactory,
) -> None:
    build(blog.settings(), NOW, jobs=1)
    before = outputs(blog.root)
    (blog.root / "public" / "rss.xml").unlink()
    (blog.root / "public" / "categories" / "travel" / "atom.xml").write_text("edited")
    report = build(blog.settings(), NOW, jobs=1)
    assert sorted(p.relative_to(blog.root / "public").as_posix() for p in report.written) == [
        "categories/travel/atom.xml", "rss.xml"
    ]
    assert outputs(blog.root) == before


def test_one_changed_post_is_the_only_one_rendered_again(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    blog.write("content/posts/2025-03-01-second.md", post("Second, edited", "2025-03-01"))
    report = build(blog.settings(), NOW, jobs=1)
    assert (report.read, report.rendered) == (1, 1)
    assert feedparser.parse(outputs(blog.root)["atom.xml"]).entries[0].title == "Second, edited"


def test_touching_a_file_without_changing_it_does_not_render_it(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    path = blog.root / "content/posts/2025-03-01-second.md"
    path.write_bytes(path.read_bytes())
    assert build(blog.settings(), NOW, jobs=1).read == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda site: site.write("feedpub.toml", BASIC_CONFIG.replace(
            'url = "https://example.com/"', 'url = "https://example.org/"')),
        lambda site: site.write("templates/email/digest.html", "{{ entries }}"),
    ],
    ids=["config", "template"],
)
def test_a_change_to_config_or_templates_renders_everything_again(
    blog: SiteFactory, change: object
) -> None:
    build(blog.settings(), NOW, jobs=1)
    assert callable(change)
    change(blog)
    report = build(blog.settings(), NOW, jobs=1)
    assert (report.read, report.rendered) == (4, 2)


def test_a_config_change_reaches_the_entries(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    blog.write("feedpub.toml", BASIC_CONFIG.replace(
        'url = "https://example.com/"', 'url = "https://example.org/"'))
    entries = published_entries(blog.settings())
    assert {urlsplit(e.url).hostname for e in entries} == {"example.org"}


def test_a_broken_post_is_reported_and_the_rest_still_builds(blog: SiteFactory) -> None:
    broken = "---\ntitle: [unclosed\ndate: 2025-05-01\n---\nx\n"
    blog.write("content/posts/2025-05-01-broken.md", broken)
    report = build(blog.settings(), NOW, jobs=1)
    assert [Path(str(e.path)).name for e in report.errors] == ["2025-05-01-broken.md"]
    assert report.published == 2
    assert "atom.xml" in outputs(blog.root)


def test_two_posts_with_one_slug_the_second_is_an_error(make_site: SiteFactory) -> None:
    make_site(posts={
        "a.md": post("A", "2025-01-01", extra="slug: same\n"),
        "b.md": post("B", "2025-01-01", extra="slug: same\n"),
    })
    catalog = load_catalog(make_site.settings(), NOW, jobs=1)
    assert [ref.source for ref in catalog.published] == ["content/posts/a.md"]
    assert len(catalog.errors) == 1
    assert catalog.errors[0].path == Path("content/posts/b.md")
    assert catalog.errors[0].key == "slug"
    assert catalog.errors[0].line is not None  # the `slug:` line, for an editor to jump to
    assert "content/posts/a.md" in str(catalog.errors[0])


def test_ids_survive_edits_to_title_body_and_update_date(make_site: SiteFactory) -> None:
    make_site(posts={"2025-01-02-stable.md": post("Original", "2025-01-02T10:00:00+01:00")})
    before = published_entries(make_site.settings())[0]
    make_site.write(
        "content/posts/2025-01-02-stable.md",
        post("Renamed", "2025-01-02T10:00:00+01:00", "New body.", extra="updated: 2025-06-01\n"),
    )
    after = published_entries(make_site.settings())[0]
    assert after.title == "Renamed"
    assert after.updated > before.updated
    assert after.id == before.id == "tag:example.com,2025-01-02:stable"


def test_permalinks_are_valid_urls_for_spaces_and_non_ascii_names(
    make_site: SiteFactory,
) -> None:
    make_site(posts={
        "2025-01-03-hello world.md": post("Spaces", "2025-01-03"),
        "2025-01-04-日本語.md": post("Japanese", "2025-01-04"),
    })
    urls = sorted(e.url for e in published_entries(make_site.settings()))
    for url in urls:
        assert " " not in url and url.isascii(), url
    assert "https://example.com/2025/01/04/%E6%97%A5%E6%9C%AC%E8%AA%9E/" in urls


def test_rendering_on_several_processes_gives_the_same_feeds(make_site: SiteFactory) -> None:
    posts = {
        f"2025-01-{n % 28 + 1:02d}-post-{n}.md": post(
            f"Post {n} 🎈",
            f"2025-01-{n % 28 + 1:02d}T{n % 24:02d}:00:00Z",
            f"Text of post {n} with `code` and [a link](../x/).",
            extra=f"categories: [c{n % 3}]\n",
        )
        for n in range(80)
    }
    make_site(posts=posts)
    settings = make_site.settings()
    parallel = build(settings, NOW, jobs=2)
    files = outputs(make_site.root)
    shutil.rmtree(make_site.root / ".feedpub-cache")
    shutil.rmtree(make_site.root / "public")
    serial = build(settings, NOW, jobs=1)
    assert parallel.read == serial.read == 80
    assert parallel.rendered == serial.rendered
    assert outputs(make_site.root) == files


def test_a_deleted_post_leaves_the_feeds(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    (blog.root / "content/posts/2025-03-01-second.md").unlink()
    build(blog.settings(), NOW, jobs=1)
    atom = feedparser.parse(outputs(blog.root)["atom.xml"])
    assert [e.title for e in atom.entries] == ["台北的早晨 ☕"]


def test_a_corrupt_cache_is_rebuilt_not_trusted(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    (blog.root / ".feedpub-cache" / "catalog-v2.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (blog.root / ".feedpub-cache" / f"catalog-v2.sqlite{suffix}").unlink(missing_ok=True)
    assert build(blog.settings(), NOW, jobs=1).read == 4


def test_without_pages_a_build_renders_only_the_entries_its_feeds_show(
    make_site: SiteFactory,
) -> None:
    posts = {f"2025-02-{n:02d}-p{n}.md": post(f"P{n}", f"2025-02-{n:02d}") for n in range(1, 26)}
    make_site(posts=posts, config=BASIC_CONFIG.replace("limit = 20", "limit = 5")
              + "\n[pages]\nenabled = false\n")
    report = build(make_site.settings(), NOW, jobs=1)
    assert (report.read, report.rendered, report.published) == (25, 5, 25)
    titles = [e.title for e in feedparser.parse(outputs(make_site.root)["atom.xml"]).entries]
    assert titles == ["P25", "P24", "P23", "P22", "P21"]
    everything = published_entries(make_site.settings())
    assert len(everything) == 25 and everything[-1].content_html == "<p>Body text.</p>"


def test_a_folder_in_the_way_of_a_feed_fails_before_any_feed_changes(blog: SiteFactory) -> None:
    build(blog.settings(), NOW, jobs=1)
    before = outputs(blog.root)
    (blog.root / "public" / "rss.xml").unlink()
    (blog.root / "public" / "rss.xml").mkdir()
    blog.write("content/posts/2025-03-01-second.md", post("Second, edited", "2025-03-01"))
    with pytest.raises(FeedpubError, match="in the way of a file feedpub writes") as caught:
        build(blog.settings(), NOW, jobs=1)
    assert caught.value.path == blog.root.resolve() / "public" / "rss.xml"
    after = outputs(blog.root)
    assert after["atom.xml"] == before["atom.xml"]


def test_categories_that_differ_only_in_symbols_get_their_own_feeds(
    make_site: SiteFactory,
) -> None:
    make_site(posts={"2025-01-05-langs.md": post("Langs", "2025-01-05",
                                                 extra="categories: [C++, C#, C, R&D]\n")})
    build(make_site.settings(), NOW, jobs=1)
    folders = sorted(p.name for p in (make_site.root / "public" / "categories").iterdir())
    assert folders == ["c", "c-plus-plus", "c-sharp", "r-and-d"]
