"""The catalog: the site scanned once, each post parsed once, the publishing rule,
duplicates, and the cache that every command shares."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedpub import catalog as catalog_module
from feedpub import content
from feedpub.catalog import Catalog, load_catalog
from tests.conftest import SiteFactory

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def scanned(make_site: SiteFactory, posts: dict[str, str | bytes], now: datetime = NOW) -> Catalog:
    make_site(posts=posts)
    return load_catalog(make_site.settings(), now, jobs=1)


def test_every_bad_file_is_reported_and_the_good_ones_kept(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2024-01-01-good.md": "---\ntitle: Good\n---\n",
        "bad-yaml.md": "---\ntitle: a: b\n---\n",
        "binary.md": b"\x00\x01\x02",
        "undated.md": "---\ntitle: Undated\n---\n",
        "2024-01-02-also-good.md": "fine\n",
    })
    assert [ref.slug for ref in catalog.published] == ["also-good", "good"]
    assert sorted(str(error.path) for error in catalog.errors) == [
        "content/posts/bad-yaml.md",
        "content/posts/binary.md",
        "content/posts/undated.md",
    ]
    assert catalog.files == 5


def test_duplicate_permalinks_ignore_case_and_name_both_files(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2024-01-01-hello.md": "first\n",
        "2024-01-01-Hello.md": "second\n",
        "2024-01-01-other.md": "---\nslug: HELLO\n---\nthird\n",
    })
    assert [ref.source for ref in catalog.readable] == ["content/posts/2024-01-01-Hello.md"]
    assert len(catalog.errors) == 2
    for error in catalog.errors:
        assert error.key == "slug"
        assert error.message.startswith("permalink '")
        assert "content/posts/2024-01-01-Hello.md" in error.message
    assert {str(e.path) for e in catalog.errors} == {
        "content/posts/2024-01-01-hello.md",
        "content/posts/2024-01-01-other.md",
    }
    # The `slug:` line where there is one; a slug from the file name has no line.
    assert {str(e.path): e.line for e in catalog.errors} == {
        "content/posts/2024-01-01-hello.md": None,
        "content/posts/2024-01-01-other.md": 2,
    }


def test_one_slug_in_different_years_is_two_posts(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2023-12-31-year-in-review.md": "2023\n",
        "2024-12-31-year-in-review.md": "2024\n",
    })
    assert catalog.errors == []
    refs = sorted(catalog.readable, key=lambda ref: ref.source)
    assert [ref.slug for ref in refs] == ["year-in-review", "year-in-review"]
    assert len({ref.url for ref in refs}) == len({ref.id for ref in refs}) == 2


def test_duplicate_ids_name_both_files_and_the_id_line(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2024-01-01-a.md": "---\nid: post-1\n---\n",
        "2024-01-02-b.md": "---\ntitle: B\nid: post-1\n---\n",
        "2024-01-03-c.md": "---\nid: Post-1\n---\n",
    })
    assert sorted(ref.slug for ref in catalog.readable) == ["a", "c"]
    [error] = catalog.errors
    assert (str(error.path), error.line, error.key) == ("content/posts/2024-01-02-b.md", 3, "id")
    assert "content/posts/2024-01-01-a.md" in error.message


def test_drafts_and_future_posts_are_sorted_out_for_now(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2024-01-01-draft.md": "---\ndraft: true\n---\n",
        "2099-01-01-future.md": "later\n",
        "2024-01-02-now.md": "now\n",
    })
    assert catalog.errors == []
    assert [ref.slug for ref in catalog.published] == ["now"]
    assert [ref.slug for ref in catalog.drafts] == ["draft"]
    assert [ref.slug for ref in catalog.future] == ["future"]


def test_a_future_post_is_published_once_now_passes_its_date(make_site: SiteFactory) -> None:
    make_site(posts={"f.md": "---\ndate: 2030-06-01 09:00 +0200\n---\n"})
    settings = make_site.settings()
    before = load_catalog(settings, datetime(2030, 6, 1, 6, 59, tzinfo=UTC), jobs=1)
    at = load_catalog(settings, datetime(2030, 6, 1, 7, 0, tzinfo=UTC), jobs=1)
    assert ([r.slug for r in before.future], before.published) == (["f"], [])
    assert ([r.slug for r in at.published], at.future) == (["f"], [])


def test_post_dates_are_always_aware(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "a.md": "---\ndate: 2024-01-01\n---\n",
        "b.md": "---\ndate: 2024-01-01 10:00\n---\n",
        "c.md": "+++\ndate = 2024-01-01T10:00:00\n+++\n",
        "2024-01-01-d.md": "x",
    })
    assert len(catalog.published) == 4
    assert all(ref.published.tzinfo is not None for ref in catalog.published)


def test_each_post_is_read_once_per_scan_and_converted_once(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_site(posts={f"2024-01-0{day}-p{day}.md": f"Post {day}\n" for day in range(1, 4)})
    settings = make_site.settings()
    reads: list[Path] = []
    real_read = content.read_post

    def counting_read(path: Path, **kwargs: object) -> content.Post:
        reads.append(path)
        return real_read(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(content, "read_post", counting_read)
    catalog = load_catalog(settings, NOW, jobs=1)
    assert len(reads) == 3  # front matter of each, once
    catalog.load(catalog.published)
    catalog.lint()
    catalog.load(catalog.published)
    assert len(reads) == 6  # and each body converted once, for entries and findings alike
    assert catalog.rendered == 3

    reads.clear()
    again = load_catalog(settings, NOW, jobs=1)
    again.lint()
    again.load(again.published)
    assert reads == []  # all from the cache
    assert again.rendered == 0


def test_a_changed_post_is_read_again_and_a_removed_one_forgotten(
    make_site: SiteFactory,
) -> None:
    root = make_site(posts={"2024-01-01-a.md": "one\n", "2024-01-02-b.md": "two\n"})
    settings = make_site.settings()
    first = load_catalog(settings, NOW, jobs=1)
    first.load(first.published)
    (root / "content/posts/2024-01-01-a.md").write_text("---\ntitle: New\n---\nchanged\n")
    (root / "content/posts/2024-01-02-b.md").unlink()

    second = load_catalog(settings, NOW, jobs=1)
    assert second.read == 1
    [entry] = second.load(second.published)
    assert entry.title == "New"


def test_a_corrupt_cache_is_rebuilt_not_trusted(make_site: SiteFactory) -> None:
    make_site(posts={"2024-01-01-a.md": "one\n"})
    settings = make_site.settings()
    load_catalog(settings, NOW, jobs=1)
    cache = settings.cache_dir / catalog_module._CACHE_NAME
    for extra in cache.parent.glob(cache.name + "-*"):
        extra.unlink()
    cache.write_bytes(b"this is not a database" * 100)

    catalog = load_catalog(settings, NOW, jobs=1)
    assert [ref.slug for ref in catalog.published] == ["a"]
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (1,)


def test_categories_are_those_of_published_posts(make_site: SiteFactory) -> None:
    catalog = scanned(make_site, {
        "2024-01-01-a.md": "---\ncategories: [beta, Alpha]\n---\n",
        "2024-01-02-b.md": "---\ncategories: alpha\ndraft: true\n---\n",
        "2099-01-01-c.md": "---\ncategories: [Future]\n---\n",
    })
    assert catalog.categories == ("Alpha", "beta")
