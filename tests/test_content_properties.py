"""Whatever a post file holds, reading it gives a Post or a ContentError, never anything else."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedpub.config import SiteConfig
from feedpub.content import Post, _load_simple_yaml, read_post
from feedpub.errors import ContentError

SITES = st.sampled_from(
    [
        SiteConfig(title="t", url="https://example.com/", timezone=zone)
        for zone in ("UTC", "Asia/Taipei", "America/New_York", "Pacific/Chatham")
    ]
)
KEYS = st.sampled_from(
    ["title", "date", "updated", "last_modified_at", "slug", "id", "categories", "category",
     "tags", "author", "summary", "description", "excerpt", "draft", "published", "image",
     "lang", "layout"]
)
# Every code point, surrogates and controls included: what a broken editor or export writes.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
NASTY_TEXT = st.text(ANY_CHAR, max_size=200) | st.sampled_from(
    ["", "---", "+++", "...", "\x00", "\ufeff", "\u2028", "\x85", "\r", "title: a: b", "- x",
     "date: 2024-13-45", "date: 2024-02-11 10:00:00 +0800", "draft: maybe", "[", "{", "&a", "*a",
     "!!python/object:os.system", "? complex", "title = 'x'", "[table]", "a = 99999999999999999999"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=40)
    | st.dates()
    | st.datetimes(timezones=st.none() | st.just(UTC) | st.just(timezone(timedelta(hours=-7))))
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FILE_NAMES = st.builds(
    lambda prefix, stem, suffix: prefix + stem + suffix,
    st.sampled_from(["", "2024-02-29-", "2023-02-29-", "9999-12-31-", "0001-01-01-"]),
    st.text(st.characters(exclude_characters="/\x00", codec="utf-8"), max_size=30).filter(
        lambda s: s not in ("", ".", "..") and len(s.encode()) < 200
    ),
    st.sampled_from([".md", ".markdown"]),
)


@pytest.fixture(scope="module")
def posts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site") / "content" / "posts"
    folder.mkdir(parents=True)
    return folder


def read_bytes(posts_dir: Path, name: str, data: bytes, site: SiteConfig) -> Post | None:
    """Reads ``data`` as a post; a ContentError is a fine answer, any other exception is not."""
    for old in posts_dir.iterdir():
        old.unlink()
    path = posts_dir / name
    path.write_bytes(data)
    try:
        post = read_post(path, site=site, site_dir=posts_dir.parent.parent)
    except ContentError as error:
        assert error.path is not None
        assert not error.path.is_absolute()
        assert error.line is None or error.line >= 1
        assert str(error)
        return None
    check_post(post)
    return post


_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def check_post(post: Post) -> None:
    assert post.date.tzinfo is not None
    assert post.date.utcoffset() is not None
    assert post.date.astimezone(UTC)
    assert post.updated is None or post.updated.utcoffset() is not None
    assert post.slug and post.slug == post.slug.strip("-")
    assert "\n" not in post.title and post.title == post.title.strip()
    assert not _XML_FORBIDDEN.search(post.title + post.body + (post.summary or ""))
    assert "\r" not in post.body
    assert all(category and not _XML_FORBIDDEN.search(category) for category in post.categories)
    assert post.body_line >= 1


PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(
    data=st.binary(max_size=600)
    | st.builds(lambda head, rest: head + rest, st.sampled_from([b"---\n", b"+++\n"]),
                st.binary(max_size=600)),
    name=FILE_NAMES,
    site=SITES,
)
def test_any_bytes(posts_dir: Path, data: bytes, name: str, site: SiteConfig) -> None:
    read_bytes(posts_dir, name, data, site)


@PROPERTY
@given(
    fence=st.sampled_from(["---", "+++"]),
    front_matter=st.lists(NASTY_TEXT, max_size=8).map("\n".join),
    body=st.lists(NASTY_TEXT, max_size=6).map("\n".join),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    name=FILE_NAMES,
    site=SITES,
)
def test_any_front_matter_and_body_text(
    posts_dir: Path, fence: str, front_matter: str, body: str, newline: str, bom: bool,
    name: str, site: SiteConfig,
) -> None:
    text = f"{fence}\n{front_matter}\n{fence}\n{body}".replace("\n", newline)
    data = ("\ufeff" if bom else "") + text
    read_bytes(posts_dir, name, data.encode("utf-8", "surrogatepass"), site)


@PROPERTY
@given(
    front_matter=st.dictionaries(KEYS | st.text(max_size=10), VALUES, max_size=8),
    body=NASTY_TEXT,
    name=FILE_NAMES,
    site=SITES,
)
def test_any_yaml_values_under_known_keys(
    posts_dir: Path, front_matter: dict[str, object], body: str, name: str, site: SiteConfig
) -> None:
    dumped = yaml.safe_dump(front_matter, allow_unicode=True, sort_keys=False)
    data = f"---\n{dumped}---\n{body}".encode("utf-8", "surrogatepass")
    post = read_bytes(posts_dir, name, data, site)
    if post is not None and isinstance(front_matter.get("date"), datetime | date):
        assert post.date.replace(tzinfo=None).date() == _as_date(front_matter["date"])


def _as_date(value: object) -> date:
    return value.date() if isinstance(value, datetime) else value  # type: ignore[return-value]


@PROPERTY
@given(
    title=st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=80),
    when=st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
    site=SITES,
)
def test_a_dated_post_keeps_its_instant(
    posts_dir: Path, title: str, when: datetime, site: SiteConfig
) -> None:
    dumped = yaml.safe_dump({"title": title, "date": when.isoformat()}, allow_unicode=True)
    post = read_bytes(posts_dir, "2024-01-01-post.md", f"---\n{dumped}---\n".encode(), site)
    assert post is not None
    expected = when if when.tzinfo is not None else when.replace(tzinfo=site.tz)
    # Compared as timestamps: Python never calls an ambiguous wall time (DST fold)
    # equal to a time in another zone.
    assert post.date.timestamp() == expected.timestamp()
    assert post.date.utcoffset() == expected.utcoffset()


# The fast path for simple front matter must agree with PyYAML, value for value.
# What is left after read_post removed what XML and YAML refuse (and YAML's extra line breaks).
CLEAN_CHAR = st.characters(codec="utf-8").filter(
    lambda c: c == "\t" or not (c < " " or "\x7f" <= c <= "\x9f" or c in "\ufffe\uffff\u2028\u2029")
)
SIMPLE_VALUES = st.text(CLEAN_CHAR, max_size=25) | st.sampled_from(
    ["yes", "No", "on", "~", "null", "1_000", "0x1F", "0o17", "017", "1:30", "-1.5e3", ".inf",
     ".NaN", "2024-01-01", "2024-1-1", "2024-01-01 10:00:00", "2024-01-01T10:00:00+07:00",
     "2025-02-11 10:00:00 +0800", "2024-13-45", "'it''s'", '"q"', '"a\\tb"', "[a, b]", "[]",
     "[1, yes, ~]", "[a, , b]", "[a,b,]", "a #b", "a: b", "a:b", "-x", "- x", "x:", "@x", "`x`",
     "%x", "|", ">", "!tag x", "&a x", "*a", "?x", "<<", "=", "plain text  ", "\ttab"]
)


def pyyaml_with_keys_as_written(text: str) -> dict[str, object]:
    """What PyYAML's pure-Python loader gives, keys as written (``on:`` is 'on', not True)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        assert isinstance(node, yaml.MappingNode)
        loader.flatten_mapping(node)
        return {
            str(key.value): loader.construct_object(value, deep=True) for key, value in node.value
        }
    finally:
        loader.dispose()


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True), SIMPLE_VALUES),
        max_size=8,
    )
)
def test_simple_front_matter_reads_as_pyyaml_does(lines: list[tuple[str, str]]) -> None:
    text = "".join(f"{key}: {value}\n" for key, value in lines)
    try:
        fast = _load_simple_yaml(text)
    except ValueError:
        # read_post then asks PyYAML, which must refuse it too, naming the line.
        with pytest.raises((ValueError, yaml.YAMLError)):
            yaml.load(text, Loader=yaml.SafeLoader)
        return
    if fast is None:
        return
    try:
        expected = pyyaml_with_keys_as_written(text)
    except (yaml.YAMLError, ValueError):
        pytest.fail(f"the fast path read front matter that PyYAML refuses: {text!r}")
    assert repr(fast.data) == repr(expected)
    for number, (key, _) in enumerate(lines, start=2):
        assert number <= fast.lines[key]


def test_simple_front_matter_falls_back_when_unsure() -> None:
    assert _load_simple_yaml("title: a: b\n") is None
    assert _load_simple_yaml("tags:\n  - a\n") is None
    assert _load_simple_yaml('title: "esc\\"aped"\n') is None
    simple = _load_simple_yaml("title: 'It''s'\ndate: 2024-01-01\ntags: [a, 2]\n")
    assert simple is not None
    assert simple.data == {"title": "It's", "date": date(2024, 1, 1), "tags": ["a", 2]}
    assert simple.lines == {"title": 2, "date": 3, "tags": 4}
