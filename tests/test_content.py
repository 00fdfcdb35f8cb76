"""Reading posts: front matter, dates, slugs, and every way a real post file goes wrong."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from feedpub.config import LimitsConfig
from feedpub.content import (
    Post,
    find_post_names,
    parse_date,
    read_post,
    slugify,
)
from feedpub.errors import ContentError

TAIPEI = ZoneInfo("Asia/Taipei")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


@pytest.fixture
def read(make_site: Any) -> Any:
    """Writes one post into a fresh site and reads it back (``timezone=`` changes the site's)."""

    def read_one(name: str, text: str | bytes, timezone: str = "UTC") -> Post:
        make_site(posts={name: text})
        settings = make_site.settings()
        site = replace(settings.site, timezone=timezone)
        return read_post(settings.posts_dir / name, site=site, site_dir=settings.site_dir)

    return read_one


@pytest.fixture
def read_error(read: Any) -> Any:
    def read_failing(name: str, text: str | bytes, timezone: str = "UTC") -> ContentError:
        with pytest.raises(ContentError) as caught:
            read(name, text, timezone)
        return caught.value

    return read_failing


# ---------------------------------------------------------------- finding files


def test_find_post_names_takes_markdown_recursively_and_skips_hidden_and_editor_files(
    make_site: Any,
) -> None:
    root = make_site(
        posts={
            "2024-01-02-b.md": "x",
            "a.markdown": "x",
            "UPPER.MD": "x",
            "bundle/index.md": "x",
            "bundle/photo.jpg": b"\xff\xd8",
            "deep/er/post.md": "x",
            ".hidden.md": "x",
            ".git/objects.md": "x",
            ".#lock.md": "x",
            "backup.md~": "x",
            ".swapped.md.swp": "x",
            "#autosave.md#": "x",
            "notes.txt": "x",
        }
    )
    (root / "content/posts/folder.md").mkdir()
    posts_dir = root / "content" / "posts"
    found = [Path(p).relative_to(posts_dir).as_posix() for p in find_post_names(posts_dir)]
    assert found == [
        "2024-01-02-b.md",
        "UPPER.MD",
        "a.markdown",
        "bundle/index.md",
        "deep/er/post.md",
    ]


def test_find_post_names_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert find_post_names(tmp_path / "nowhere") == []


# ---------------------------------------------------------------- front matter


JEKYLL_POST = """\
---
layout: post
title: "Things we learned about LLMs in 2024"
date: 2025-02-11 10:00:00 +0800
categories: ['NotionExport']
tags: llm ai
author:
  name: Simon Willison
  email: simon@example.com
description: A look back
image: /img/cover.png
lang: zh_TW
math: true
---

📌 文章來源

---

### 🚀 GPT-4

---
"""


def test_jekyll_post_reads_every_key(read: Any) -> None:
    post = read("2025-02-11-llms.md", JEKYLL_POST)
    assert post.title == "Things we learned about LLMs in 2024"
    assert post.title_from_filename is False
    assert post.date == utc(2025, 2, 11, 2, 0)
    assert post.date.utcoffset() == timedelta(hours=8)
    assert post.categories == ("NotionExport",)
    assert post.tags == ("llm", "ai")
    assert post.author == "Simon Willison"
    assert post.author_email == "simon@example.com"
    assert post.summary == "A look back"
    assert post.image == "/img/cover.png"
    assert post.lang == "zh-TW"
    assert post.slug == "llms"
    assert post.draft is False
    assert post.extra == {"layout": "post", "math": True}
    assert post.key_lines["title"] == 3
    assert post.key_lines["date"] == 4
    assert post.key_lines["author"] == 7
    assert post.key_lines["math"] == 13
    assert post.relpath == "content/posts/2025-02-11-llms.md"
    assert post.path.is_absolute()


def test_only_the_first_block_is_front_matter_and_later_rules_stay_in_the_body(read: Any) -> None:
    post = read("rules.md", JEKYLL_POST)
    assert post.body == "\n📌 文章來源\n\n---\n\n### 🚀 GPT-4\n\n---\n"
    assert post.body_line == 15


def test_crlf_and_a_byte_order_mark_read_like_lf(read: Any) -> None:
    text = (
        "\ufeff---\r\ntitle: Windows\r\ndate: 2024-06-01\r\n---\r\n"
        "line one\r\n\r\n---\r\nend\r\n"
    )
    post = read("windows.md", text.encode("utf-8"))
    assert post.title == "Windows"
    assert post.date == utc(2024, 6, 1)
    assert post.body == "line one\n\n---\nend\n"
    assert post.key_lines == {"title": 2, "date": 3}
    assert post.body_line == 5


def test_toml_front_matter(read: Any) -> None:
    post = read(
        "toml.md",
        '+++\ntitle = "Hugo style"\ndate = 2025-02-11T10:00:00+08:00\n'
        'updated = 2025-03-01T09:30:00\ntags = ["go", "hugo"]\ndraft = false\n'
        "[params]\nmood = 'happy'\n+++\nbody\n---\nmore\n",
        timezone="Asia/Taipei",
    )
    assert post.title == "Hugo style"
    assert post.date == utc(2025, 2, 11, 2)
    assert post.updated == datetime(2025, 3, 1, 9, 30, tzinfo=TAIPEI)
    assert post.tags == ("go", "hugo")
    assert post.extra == {"params": {"mood": "happy"}}
    assert post.key_lines == {
        "title": 2, "date": 3, "updated": 4, "tags": 5, "draft": 6, "params": 7
    }
    assert post.body == "body\n---\nmore\n"
    assert post.body_line == 10


def test_toml_local_date_takes_the_site_timezone(read: Any) -> None:
    post = read("d.md", "+++\ndate = 2024-07-04\n+++\n", timezone="America/New_York")
    assert post.date == utc(2024, 7, 4, 4)


def test_broken_toml_names_the_line_in_the_file(read_error: Any) -> None:
    error = read_error("bad.md", '+++\ntitle = "ok"\ntags = ["a",\ndate = 2024-01-01\n+++\n')
    assert error.path == Path("content/posts/bad.md")
    assert error.line == 4
    assert "TOML" in error.message


@pytest.mark.parametrize(
    ("front_matter", "line", "words"),
    [
        ("title: ok\nsubtitle: Part 2: the end\ndate: 2024-01-01\n", 3, "quote"),
        ("title: ok\ndate: 2024-01-01\nfoo: bar\n  bad: indent\n", 5, "mapping"),
        ("title: ok\ntags: [a, b\ndate: 2024-01-01\n", 4, "starts on line 3"),
        ('title: "unclosed\ndate: 2024-01-01\n', 4, "quoted"),
    ],
)
def test_broken_yaml_names_the_line_in_the_file(
    read_error: Any, front_matter: str, line: int, words: str
) -> None:
    error = read_error("broken.md", f"---\n{front_matter}---\nbody\n")
    assert error.path == Path("content/posts/broken.md")
    assert error.line == line
    assert words in str(error)
    assert str(error).startswith(f"content/posts/broken.md:{line}: ")


def test_line_separators_in_a_title_do_not_shift_yaml_line_numbers(read_error: Any) -> None:
    error = read_error("ls.md", "---\ntitle: one\u2028two\u0085three\nx: 1\n  y: 2\n---\n")
    assert error.line == 4


@pytest.mark.parametrize(
    ("front_matter", "what"),
    [("- a\n- b\n", "a list"), ("just some words\n", "a single value")],
)
def test_front_matter_that_is_not_a_mapping(read_error: Any, front_matter: str, what: str) -> None:
    error = read_error("list.md", f"---\n{front_matter}---\n")
    assert what in error.message
    assert error.line == 2


def test_unclosed_front_matter(read_error: Any) -> None:
    error = read_error("open.md", "---\ntitle: never closed\ndate: 2024-01-01\n\nbody\n")
    assert error.line == 1
    assert "never closed" in error.message


def test_front_matter_not_on_the_first_line_is_refused(read_error: Any) -> None:
    error = read_error("2024-01-01-late.md", b"\n\n---\ntitle: Late\n---\nbody\n")
    assert error.line == 3
    assert "first line" in error.message


def test_empty_front_matter_with_a_dated_name(read: Any) -> None:
    post = read("2024-02-29-leap.md", "---\n---\nbody\n")
    assert post.date == utc(2024, 2, 29)
    assert post.title == "Leap"
    assert post.body == "body\n"


def test_yaml_merge_keys_and_anchors_are_understood(read: Any) -> None:
    post = read(
        "merge.md",
        "---\ndefaults: &d {draft: true, tags: [a]}\n<<: *d\n"
        "title: Merged\ndate: 2024-01-01\n---\n",
    )
    assert post.draft is True
    assert post.tags == ("a",)


# ---------------------------------------------------------------- bad files


def test_binary_file_is_an_error_not_a_crash(read_error: Any) -> None:
    error = read_error("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "binary" in error.message
    assert error.path == Path("content/posts/image.md")


def test_latin1_file_names_the_line_of_the_bad_byte(read_error: Any) -> None:
    text = "---\ntitle: ok\ndate: 2024-01-01\n---\nUn café crème\n"
    error = read_error("latin1.md", text.encode("latin-1"))
    assert "UTF-8" in error.message
    assert "0xe9" in error.message
    assert error.line == 5


def test_utf16_file_says_so(read_error: Any) -> None:
    error = read_error("notepad.md", "---\ntitle: x\n---\n".encode("utf-16"))
    assert "UTF-16" in error.message


def test_pelican_headers_get_an_error_that_says_what_was_expected(read_error: Any) -> None:
    error = read_error(
        "pelican.md",
        "Title: My super title\nDate: 2010-12-03 10:20\nTags: thats, awesome\n"
        "Category: yeah\n\nThis is the content of my super blog post.\n",
    )
    assert error.line == 1
    assert "Pelican" in error.message
    assert "---" in error.message
    assert "+++" in error.message


def test_control_characters_are_removed_from_title_and_body(read: Any) -> None:
    text = (
        b'---\ntitle: "bell\\a and\\x01 nul"\ndate: 2024-01-01\n---\n'
        b"form\x0cfeed\x1b[0m \xef\xbf\xbf end\n"
    )
    post = read("controls.md", text)
    assert post.title == "bell and nul"
    assert post.body == "formfeed[0m  end\n"


@pytest.mark.parametrize(
    "text",
    [
        "---\ntitle: " + "[" * 5000 + "]" * 5000 + "\n---\n",
        "---\n" + "".join(" " * i + f"k{i}:\n" for i in range(1500)) + "---\n",
        "+++\ntitle = " + "[" * 5000 + "]" * 5000 + "\n+++\n",
    ],
)
def test_absurdly_nested_front_matter_is_an_error_not_a_crash(make_site: Any, text: str) -> None:
    make_site(posts={"nested.md": text})
    settings = make_site.settings()
    # The indented case is over the default size limit: this is about nesting alone.
    with pytest.raises(ContentError) as caught:
        read_post(settings.posts_dir / "nested.md", site=settings.site,
                  site_dir=settings.site_dir, limits=LimitsConfig(post_bytes=2_000_000))
    assert "nest" in caught.value.message


def test_control_characters_in_the_front_matter_do_not_break_yaml(read: Any) -> None:
    post = read("c1.md", b"---\ntitle: odd\x01\xc2\x80 title\ndate: 2024-01-01\n---\n")
    assert post.title == "odd title"


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-02-11 10:00:00 +0800", utc(2025, 2, 11, 2)),
        ("2016-05-27 20:10 +0300", utc(2016, 5, 27, 17, 10)),
        ("2014-09-09 21:10:33 -0700", utc(2014, 9, 10, 4, 10, 33)),
        ("2025-02-11T10:00:00+08:00", utc(2025, 2, 11, 2)),
        ("2025-02-11T10:00:00Z", utc(2025, 2, 11, 10)),
        ("2025-02-11t10:00z", utc(2025, 2, 11, 10)),
        ("2025-02-11 10:00 UTC", utc(2025, 2, 11, 10)),
        ("2025-02-11T10:00:00+08", utc(2025, 2, 11, 2)),
        ("2025-02-11T10:00:00.250-05:30", utc(2025, 2, 11, 15, 30, 0, 250000)),
        ("2025-02-11", utc(2025, 2, 10, 16)),
        ("2025-2-1", utc(2025, 1, 31, 16)),
        ("2025-02-11 10:00", utc(2025, 2, 11, 2)),
        ("  2025-02-11 10:00:59  ", utc(2025, 2, 11, 2, 0, 59)),
        ("Tue, 11 Feb 2025 10:00:00 +0800", utc(2025, 2, 11, 2)),
        (date(2025, 2, 11), utc(2025, 2, 10, 16)),
        (datetime(2025, 2, 11, 10, 0), utc(2025, 2, 11, 2)),
        (datetime(2025, 2, 11, 10, 0, tzinfo=timezone(timedelta(hours=-7))), utc(2025, 2, 11, 17)),
    ],
)
def test_parse_date_gives_the_right_instant(value: object, expected: datetime) -> None:
    parsed = parse_date(value, tz=TAIPEI)
    assert parsed.tzinfo is not None
    assert parsed == expected


def test_parse_date_keeps_the_written_offset() -> None:
    parsed = parse_date("2025-02-11 10:00:00 +0800", tz=NEW_YORK)
    assert parsed.utcoffset() == timedelta(hours=8)
    assert (parsed.hour, parsed.minute) == (10, 0)


def test_naive_dates_follow_daylight_saving_in_the_site_timezone() -> None:
    before = parse_date("2025-03-08 12:00", tz=NEW_YORK)
    after = parse_date("2025-03-10 12:00", tz=NEW_YORK)
    autumn = parse_date(datetime(2025, 11, 3, 12, 0), tz=NEW_YORK)
    assert before == utc(2025, 3, 8, 17)
    assert after == utc(2025, 3, 10, 16)
    assert autumn == utc(2025, 11, 3, 17)


@pytest.mark.parametrize(
    "value",
    ["next tuesday", "2025-02-30", "2025-13-01 10:00", "2025-02-11 25:00", "11/02/2025",
     "2025-02-11 10:00 +2500", "", 20250211, True, ["2025-02-11"], {"y": 2025}],
)
def test_parse_date_refuses_what_is_not_a_date_and_names_it(value: object) -> None:
    with pytest.raises(ValueError, match=r"date|time|2025") as caught:
        parse_date(value, tz=TAIPEI)
    if isinstance(value, str) and value:
        assert value in str(caught.value)


def test_jekyll_offset_in_a_post(read: Any) -> None:
    post = read("j.md", "---\ndate: 2014-09-09 21:10:33 -0700\n---\n", timezone="Asia/Taipei")
    assert post.date == utc(2014, 9, 10, 4, 10, 33)


def test_yaml_aware_datetime_in_a_post(read: Any) -> None:
    post = read("a.md", "---\ndate: 2025-01-31T23:30:00+07:00\n---\n", timezone="America/New_York")
    assert post.date == utc(2025, 1, 31, 16, 30)


def test_naive_post_date_in_taipei(read: Any) -> None:
    post = read("t.md", "---\ndate: 2025-03-01 09:00:00\n---\n", timezone="Asia/Taipei")
    assert post.date == utc(2025, 3, 1, 1)


@pytest.mark.parametrize(
    ("written", "expected"),
    [("2025-03-08 12:00", utc(2025, 3, 8, 17)), ("2025-03-10 12:00", utc(2025, 3, 10, 16))],
)
def test_naive_post_date_in_new_york_across_dst(
    read: Any, written: str, expected: datetime
) -> None:
    post = read("ny.md", f"---\ndate: {written}\n---\n", timezone="America/New_York")
    assert post.date == expected


def test_date_only_post_is_midnight_in_the_site_timezone(read: Any) -> None:
    post = read("d.md", "---\ndate: 2025-03-01\n---\n", timezone="Asia/Taipei")
    assert post.date == datetime(2025, 3, 1, tzinfo=TAIPEI)


def test_missing_date_falls_back_to_the_file_name(read: Any) -> None:
    post = read("2024-05-06-hello-world.md", "---\ntags: [x]\n---\nHi\n", timezone="Asia/Taipei")
    assert post.date == datetime(2024, 5, 6, tzinfo=TAIPEI)
    assert post.slug == "hello-world"
    assert post.title == "Hello World"
    assert post.title_from_filename is True


def test_no_front_matter_at_all_with_a_dated_file_name(read: Any) -> None:
    post = read("2023-12-31-new-year's-eve.md", "Just words.\n\n---\n\nMore.\n")
    assert post.date == utc(2023, 12, 31)
    assert post.title == "New Year's Eve"
    assert post.slug == "new-year-s-eve"
    assert post.body == "Just words.\n\n---\n\nMore.\n"
    assert post.body_line == 1


def test_date_key_wins_over_the_file_name(read: Any) -> None:
    post = read("2020-01-01-old.md", "---\ndate: 2024-08-09 10:11\n---\n")
    assert post.date == utc(2024, 8, 9, 10, 11)
    assert post.slug == "old"


@pytest.mark.parametrize(
    "text", ["---\ntitle: No date here\n---\nbody\n", "No front matter and no date.\n"]
)
def test_missing_date_without_a_dated_name_is_an_error_with_the_path(
    read_error: Any, text: str
) -> None:
    error = read_error("undated.md", text)
    assert error.path == Path("content/posts/undated.md")
    assert "date" in error.message
    assert "2025-01-31-undated.md" in error.message


def test_impossible_date_in_the_file_name(read_error: Any) -> None:
    error = read_error("2024-02-30-nope.md", "---\ntitle: x\n---\n")
    assert "file name" in error.message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("next tuesday", "next tuesday"),
        ("2024-13-45", "2024-13-45"),
        ("[2024]", "[2024] is not a date"),
    ],
)
def test_unreadable_date_names_key_line_and_value(read_error: Any, value: str, shown: str) -> None:
    error = read_error("when.md", f"---\ntitle: When\n\ndate: {value}\n---\n")
    assert error.key == "date"
    assert error.line == 4
    assert shown in error.message


def test_updated_and_last_modified_at(read: Any) -> None:
    jekyll = read("a.md", "---\ndate: 2024-01-01\nlast_modified_at: 2024-02-02 08:00 +0100\n---\n")
    assert jekyll.updated == utc(2024, 2, 2, 7)
    both = read(
        "b.md", "---\ndate: 2024-01-01\nlast_modified_at: 2024-02-02\nupdated: 2024-03-03\n---\n"
    )
    assert both.updated == utc(2024, 3, 3)
    assert read("c.md", "---\ndate: 2024-01-01\n---\n").updated is None


# ---------------------------------------------------------------- titles


def test_titles_become_one_line_of_plain_text(read: Any) -> None:
    post = read(
        "t.md",
        "---\ntitle: |\n  Using <em>Python</em>   &amp;\n  <strong>Rust</strong>\n\n"
        "date: 2024-01-01\n---\n",
    )
    assert post.title == "Using Python & Rust"


def test_tags_inside_a_word_do_not_split_it(read: Any) -> None:
    post = read("w.md", '---\ntitle: "<b>Py</b>thon<br/>rocks&nbsp;hard"\ndate: 2024-01-01\n---\n')
    assert post.title == "Python rocks hard"


def test_a_title_about_an_html_element_keeps_it(read: Any) -> None:
    post = read("v.md", '---\ntitle: "The <video> element & Vec<String>"\ndate: 2024-01-01\n---\n')
    assert post.title == "The <video> element & Vec<String>"


def test_emoji_and_cjk_titles_are_kept_exactly(read: Any) -> None:
    title = "🇨🇳 你好，世界 👨‍👩‍👧 日本語のタイトル"
    post = read("e.md", f'---\ntitle: "{title}"\ndate: 2024-01-01\n---\n')
    assert post.title == title


@pytest.mark.parametrize(
    ("written", "title"),
    [("2024", "2024"), ("1.10", "1.10"), ("yes", "yes"), ("2024-01-01", "2024-01-01"),
     ("No", "No"), ("~", "Fallback"), ('""', "Fallback"), ("'   '", "Fallback")],
)
def test_a_title_that_yaml_types_is_taken_as_written(read: Any, written: str, title: str) -> None:
    post = read("2024-01-01-fallback.md", f"---\ntitle: {written}\n---\n")
    assert post.title == title
    assert post.title_from_filename is (title == "Fallback")


def test_title_that_is_a_list_is_an_error(read_error: Any) -> None:
    error = read_error("l.md", "---\ndate: 2024-01-01\ntitle: [a, b]\n---\n")
    assert (error.key, error.line) == ("title", 3)


# ---------------------------------------------------------------- slugs


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Hello World", "hello-world"),
        ("Hello, World! (Part 2)", "hello-world-part-2"),
        ("snake_case.and.dots", "snake-case-and-dots"),
        ("--already--dashed--", "already-dashed"),
        ("你好，世界", "你好-世界"),
        ("Ünïcödé Straße", "ünïcödé-straße"),
        ("हिन्दी लेख", "हिन्दी-लेख"),
        ("🎉 party 🎉", "party"),
        ("🎉", ""),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_chinese_file_name_keeps_its_chinese_slug(read: Any) -> None:
    post = read("2024-01-02-你好世界.md", "今天天氣很好。\n")
    assert post.slug == "你好世界"
    assert post.title == "你好世界"
    assert post.relpath == "content/posts/2024-01-02-你好世界.md"


def test_file_name_with_spaces_and_capitals(read: Any) -> None:
    post = read("2024-01-02-My First Post!.markdown", "hello\n")
    assert post.slug == "my-first-post"
    assert post.title == "My First Post!"


def test_slug_key_is_normalised(read: Any) -> None:
    post = read("2024-01-02-file-name.md", "---\nslug: 'Custom Slug: Ünïcode!'\n---\n")
    assert post.slug == "custom-slug-ünïcode"


def test_slug_key_without_letters_is_an_error(read_error: Any) -> None:
    error = read_error("2024-01-01-x.md", "---\ntitle: X\nslug: '!!!'\n---\n")
    assert (error.key, error.line) == ("slug", 3)


def test_file_name_without_letters_is_an_error(read_error: Any) -> None:
    error = read_error("2024-01-01-🎉.md", "---\ntitle: Party\n---\n")
    assert "slug" in error.message


def test_page_bundle_takes_its_folder_name(read: Any) -> None:
    plain = read("my-trip/index.md", "---\ndate: 2024-03-04\n---\n")
    assert (plain.slug, plain.title) == ("my-trip", "My Trip")
    dated = read("2024-03-05-lisbon-trip/index.md", "Photos.\n")
    assert dated.slug == "lisbon-trip"
    assert dated.date == utc(2024, 3, 5)


# ---------------------------------------------------------------- other keys


@pytest.mark.parametrize(
    ("front_matter", "categories", "tags"),
    [
        ("categories: news python\ntags: [a, b]", ("news", "python"), ("a", "b")),
        ("categories: [News, 2024]\ntags: one", ("News", "2024"), ("one",)),
        ("category: Big News", ("Big News",), ()),
        ("categories: [a, b]\ncategory: c\ntags: x, y z", ("a", "b", "c"), ("x", "y z")),
        ("categories:\n  - a\n  - a\n  - ' b '\ntags:", ("a", "b"), ()),
        ("categories: []", (), ()),
    ],
)
def test_categories_and_tags(
    read: Any, front_matter: str, categories: tuple[str, ...], tags: tuple[str, ...]
) -> None:
    post = read("c.md", f"---\ndate: 2024-01-01\n{front_matter}\n---\n")
    assert (post.categories, post.tags) == (categories, tags)


@pytest.mark.parametrize(
    ("front_matter", "key", "line"),
    [
        ("tags: {a: 1}", "tags", 3),
        ("categories: [[a, b]]", "categories", 3),
        ("draft: maybe", "draft", 3),
        ("published: 2", "published", 3),
        ("author: [[a]]", "author", 3),
        ("author: {email: a@example.com}", "author", 3),
        ("image: [a.png]", "image", 3),
        ("lang: 'english please'", "lang", 3),
        ("summary: {text: x}", "summary", 3),
        ("id: ''", "id", 3),
    ],
)
def test_wrong_types_name_the_key_and_its_line(
    read_error: Any, front_matter: str, key: str, line: int
) -> None:
    error = read_error("w.md", f"---\ndate: 2024-01-01\n{front_matter}\n---\n")
    assert (error.key, error.line) == (key, line)
    assert str(error).startswith(f"content/posts/w.md:{line}: {key}: ")


@pytest.mark.parametrize(
    ("front_matter", "draft"),
    [("draft: true", True), ("published: false", True), ("draft: false", False),
     ("published: true", False), ("draft: 'yes'", True), ("", False),
     ("draft: true\npublished: true", True)],
)
def test_drafts(read: Any, front_matter: str, draft: bool) -> None:
    post = read("d.md", f"---\ndate: 2024-01-01\n{front_matter}\n---\n")
    assert post.draft is draft


def test_summary_takes_the_first_key_present(read: Any) -> None:
    post = read("s.md", "---\ndate: 2024-01-01\nexcerpt: third\ndescription: second\n---\n")
    assert post.summary == "second"
    post = read("s.md", "---\ndate: 2024-01-01\nsummary: ''\nexcerpt: '*third*'\n---\n")
    assert post.summary == "*third*"


def test_author_forms(read: Any) -> None:
    assert read("a.md", "---\ndate: 2024-01-01\nauthor: Ada  Lovelace\n---\n").author == (
        "Ada Lovelace"
    )
    both = read("b.md", "---\ndate: 2024-01-01\nauthor: [Ada, Grace]\n---\n")
    assert both.author == "Ada, Grace"
    assert read("c.md", "---\ndate: 2024-01-01\n---\n").author is None


def test_explicit_id_and_image_mapping(read: Any) -> None:
    post = read(
        "i.md",
        "---\ndate: 2024-01-01\nid: urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427\n"
        "image:\n  path: /img/a.png\n  alt: A\n---\n",
    )
    assert post.id == "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert post.image == "/img/a.png"


@pytest.mark.parametrize(
    "value",
    ["0001-01-01", "1899-12-31 23:59", date(1, 1, 1), "Mon, 01 Jan 0001 00:00:00 +0000",
     "Thu, 1 Jan 999 00:00:00 +0000", "1900-01-01 00:30 +01:00"],
)
def test_dates_feeds_cannot_carry_are_refused(value: object) -> None:
    # RSS wrote "Mon, 01 Jan 1" for year 1, and email.utils read year 0001 as 2001.
    with pytest.raises(ValueError, match="1900 to 9999"):
        parse_date(value, tz=ZoneInfo("UTC"))


def test_the_first_and_last_years_feeds_carry_are_read() -> None:
    assert parse_date("1900-01-01", tz=ZoneInfo("UTC")).year == 1900
    assert parse_date("9999-12-31", tz=ZoneInfo("UTC")).year == 9999
    # A two-digit RFC 822 year is the standard's own: 01 is 2001.
    assert parse_date("Mon, 01 Jan 01 00:00:00 +0000", tz=ZoneInfo("UTC")).year == 2001
