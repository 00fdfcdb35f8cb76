"""Files -> Post: front matter, dates, slugs. Knows nothing of what comes downstream."""

from __future__ import annotations

import html
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from feedpub.config import LimitsConfig, SiteConfig, toml_error
from feedpub.errors import ContentError

POST_SUFFIXES = (".md", ".markdown")


@dataclass(frozen=True)
class Post:
    path: Path
    """Absolute path of the source file."""
    relpath: str
    """Path relative to the site folder (POSIX separators), used in every message."""
    title: str
    title_from_filename: bool
    date: datetime
    """Aware: an offset given in the file is kept, a naive date takes site.timezone."""
    updated: datetime | None
    slug: str
    id: str | None
    """The ``id`` key when the author set one."""
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    author: str | None
    summary: str | None
    """The ``summary`` / ``description`` / ``excerpt`` key, as written (Markdown)."""
    draft: bool
    image: str | None
    lang: str | None
    body: str
    """Markdown after the front matter, LF line endings."""
    body_line: int
    """1-based line number in the file of the body's first line."""
    key_lines: Mapping[str, int] = field(default_factory=dict)
    """1-based line number of each front matter key, for messages that point at it."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Front matter keys feedpub does not use, kept as they were."""
    author_email: str | None = None
    """The ``email`` of an ``author`` mapping, when given."""


# ---------------------------------------------------------------- finding files


def find_post_names(posts_dir: Path) -> list[str]:
    """The path of every ``.md`` / ``.markdown`` file under ``posts_dir``, sorted.

    Hidden files and folders and editor leftovers (``.#x.md``, ``x.md~``,
    ``.x.md.swp``, ``#x.md#``) are skipped. Strings, not ``Path``: a rebuild's scan of
    10,000 posts makes none (creating one costs more than the ``stat``).
    """
    if not posts_dir.is_dir():
        return []
    found: list[str] = []
    folders = [str(posts_dir)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith((".", "#")):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.name.lower().endswith(POST_SUFFIXES) and entry.is_file():
                    found.append(entry.path)
    # "\0" sorts before every character, so a folder's files stay together, as Path sorts.
    return sorted(found, key=lambda p: p.replace(os.sep, "\0"))


def check_inside(path: Path, site_dir: Path, relpath: str) -> None:
    """Refuse a post whose file is outside the site once symbolic links are followed."""
    real = os.path.realpath(path)
    real_site = os.path.realpath(site_dir)
    if os.path.commonpath([real, real_site]) != real_site:
        raise ContentError(
            "is a symbolic link to a file outside the site; posts are read only from "
            "inside the site folder: copy the file in instead",
            path=relpath,
        )


# ---------------------------------------------------------------- limits

_FENCE = re.compile(r"[ \t]*(?:>[ \t]?)*(`{3,}|~{3,})")
_CONTAINER = re.compile(r"[ \t]*(?:>|[-*+][ \t]|[-*+]$|\d{1,9}[.)](?:[ \t]|$))")
_EMPHASIS_RUN = re.compile(r"[*_]+")
_THEMATIC_BREAK = re.compile(r"[ \t]*(?:[-*_][ \t]*){3,}")
_BRACKETS = re.compile(r"\\.|[\[\]]")


def check_shape(body: str, *, nesting: int, relpath: str, first_line: int = 1) -> None:
    """Refuse Markdown nested deeper than ``nesting`` before it is converted.

    Python-Markdown recurses once per level of lists and quotes (and of emphasis), and
    takes time quadratic in the brackets left open in a paragraph: ten thousand
    ``- `` or ``[`` would exhaust the stack or take minutes. No post written by a
    person comes near the limit, and real posts pass with a few scans in C.
    """
    run = 4 * nesting + 1
    suspects = _suspects(nesting)
    if (
        suspects.match("\n" + body[: nesting + 1]) is not None
        or suspects.search(body) is not None
        or "*" * run in body
        or "_" * run in body
    ):
        _check_lines(body, nesting, relpath, first_line)
    if body.count("[") > nesting:
        _check_brackets(body, nesting, relpath, first_line)


def _check_lines(body: str, nesting: int, relpath: str, first_line: int) -> None:
    """Lists and quotes nested too deeply, or a run of emphasis marks, outside code fences."""
    fence: str | None = None
    for number, line in enumerate(body.split("\n"), start=first_line):
        opener = _FENCE.match(line)
        if fence is not None:
            if opener and opener[1][0] == fence[0] and len(opener[1]) >= len(fence):
                fence = None
            continue
        if opener:
            fence = opener[1]
            continue
        depth, at = 0, 0
        while depth <= nesting and (container := _CONTAINER.match(line, at)) is not None:
            indent = len(container[0]) - len(container[0].lstrip(" \t"))
            depth += 1 + indent // 4
            at = container.end()
        if depth > nesting:
            raise _too_deep(relpath, number, f"{depth} levels of lists or quotes", nesting)
        if ("*" in line or "_" in line) and not _THEMATIC_BREAK.fullmatch(line):
            run = max(map(len, _EMPHASIS_RUN.findall(line)), default=0)
            if run > 4 * nesting:
                raise _too_deep(relpath, number, f"a run of {run} * or _", nesting)


def _check_brackets(body: str, nesting: int, relpath: str, first_line: int) -> None:
    """More than ``nesting`` brackets open at once within one paragraph."""
    offset = 0
    for paragraph in body.split("\n\n"):
        if paragraph.count("[") > nesting:
            open_brackets = 0
            for bracket in _BRACKETS.finditer(paragraph):
                if bracket[0] == "[":
                    open_brackets += 1
                    if open_brackets > nesting:
                        line = first_line + body.count("\n", 0, offset + bracket.start())
                        raise _too_deep(relpath, line, f"{open_brackets} brackets [ left open",
                                        nesting)
                elif bracket[0] == "]" and open_brackets:
                    open_brackets -= 1
        offset += len(paragraph) + 2


@lru_cache(maxsize=8)
def _suspects(nesting: int) -> re.Pattern[str]:
    """Lines that could be nested deeper than ``nesting``: each level takes at least one
    of these characters before the text. (A line break leads, so the search is fast.)"""
    return re.compile(rf"\n[ \t>*+\-0-9.)]{{{nesting + 1}}}")


def _too_deep(relpath: str, line: int, what: str, nesting: int) -> ContentError:
    return ContentError(
        f"is nested too deeply to render: {what} (the limit set by [limits] nesting is "
        f"{nesting})",
        path=relpath,
        line=line,
    )


# ---------------------------------------------------------------- dates

_DATE_TIME = re.compile(
    r"""
    (?P<year>\d{4})[-/](?P<month>\d{1,2})[-/](?P<day>\d{1,2})
    (?:
        (?:[Tt]|[ \t]+)
        (?P<hour>\d{1,2}):(?P<minute>\d{2})
        (?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?
    )?
    [ \t]*
    (?P<zone>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?
    """,
    re.VERBOSE,
)
FIRST_YEAR = 1900
"""The earliest year RFC 2822 (and so an RSS pubDate) allows."""
_RFC2822_YEAR = re.compile(
    r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?[ \t]+(\d+)\b"
)
_DATE_FORMS = "2025-01-31, 2025-01-31 09:30, 2025-01-31 09:30:00 +0800 or 2025-01-31T09:30:00+08:00"


def parse_date(value: object, *, tz: ZoneInfo) -> datetime:
    """Any date form a post may carry, as an aware datetime.

    Accepts what PyYAML and tomllib hand over (aware and naive datetimes,
    dates, strings such as Jekyll's ``2025-02-11 10:00:00 +0800``), ISO 8601
    with ``T`` or a space, with or without seconds, offsets as ``Z``,
    ``+08:00``, ``+0800`` or ``+08``, plain dates, and RFC 2822 dates. An offset
    that is given is kept; a value without one is taken in ``tz``.
    Raises ValueError naming the value otherwise.
    """
    if isinstance(value, datetime):
        parsed = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    elif isinstance(value, date):
        parsed = datetime.combine(value, time(), tzinfo=tz)
    elif isinstance(value, str):
        parsed = _parse_date_text(value.strip(), tz)
    else:
        raise ValueError(f"{value!r} is not a date: write it as {_DATE_FORMS}")
    try:
        in_utc = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{value!s} is too far from today to be a post's date") from None
    if not FIRST_YEAR <= min(parsed.year, in_utc.year) <= max(parsed.year, in_utc.year) <= 9999:
        # RFC 822 dates (RSS) cannot carry a year before 1900; readers take "Jan 1" as 2001.
        raise ValueError(
            f"{value!s} is outside the years feeds can carry ({FIRST_YEAR} to 9999)"
        )
    return parsed


def _parse_date_text(text: str, tz: ZoneInfo) -> datetime:
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        try:
            rfc2822 = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            rfc2822 = None
        if rfc2822 is None:
            raise ValueError(f"cannot read {text!r} as a date: write it as {_DATE_FORMS}")
        year = _RFC2822_YEAR.search(text)
        if year is not None and len(year[1]) > 2 and int(year[1]) != rfc2822.year:
            # email.utils reads 0001 as 2001 (a two-digit year): never guess.
            raise ValueError(
                f"{text!r} has the year {year[1]}, outside the years feeds can carry "
                f"({FIRST_YEAR} to 9999)"
            )
        return rfc2822 if rfc2822.tzinfo is not None else rfc2822.replace(tzinfo=tz)
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        naive = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            int(fraction),
        )
        zone = _offset(match["zone"]) if match["zone"] else tz
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a real date or time ({exc})") from None
    return naive.replace(tzinfo=zone)


@lru_cache(maxsize=64)
def _offset(zone: str) -> timezone:
    if zone.upper() in ("Z", "UTC", "GMT"):
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"offset {zone} has more than 59 minutes or seconds")
    return timezone(sign * timedelta(hours=hours, minutes=minutes, seconds=seconds))


# ---------------------------------------------------------------- slugs


_ASCII_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_DASHES = re.compile(r"-{2,}")


def slugify(text: str) -> str:
    """Lower case; letters, digits and marks of any script kept; everything else one '-'.

    Non-ASCII letters stay (a Chinese title keeps its Chinese slug): URLs
    percent-encode them later.
    """
    text = unicodedata.normalize("NFC", text).lower()
    if _ASCII_SLUG.fullmatch(text):
        return text
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" else "-" for c in text)
    return _DASHES.sub("-", kept).strip("-")


_DATED_NAME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})-(.+)", re.DOTALL)


@dataclass(frozen=True)
class _Name:
    """What a post's file name says: its slug's words and, maybe, its date."""

    words: str
    date_text: str | None


def _name_of(relpath: str) -> _Name:
    folder, _, file_name = relpath.rpartition("/")
    stem = file_name.rpartition(".")[0] or file_name
    if stem.lower() == "index" and folder:
        stem = folder.rpartition("/")[2]
    match = _DATED_NAME.fullmatch(stem)
    if match is None:
        return _Name(stem, None)
    return _Name(match[4], f"{match[1]}-{match[2]}-{match[3]}")


_WORD_SEPARATORS = re.compile(r"[-_\s]+")


def _title_from_words(words: str) -> str:
    """Jekyll's fallback title: the file name's words, each capitalised."""
    return " ".join(w[:1].upper() + w[1:] for w in _WORD_SEPARATORS.split(words) if w)


# ---------------------------------------------------------------- text clean-up

_BYTES_XML_ALLOWS = bytes(b for b in range(256) if b >= 0x20 or b in b"\t\n\r")
_NONCHARACTER_BYTES = re.compile(b"\xef\xbf[\xbe\xbf]")
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# YAML refuses these, and counts the second set as line breaks, which would
# shift every line number it reports.
_YAML_REFUSED = re.compile("[\x7f-\x84\x86-\x9f]")
_YAML_BREAKS = re.compile("[\x85\u2028\u2029]")
_LINE_BREAK_TAG = re.compile(r"<br\b[^<>]*>", re.IGNORECASE)
_INLINE_TAG = re.compile(
    r"</?(?:a|abbr|b|bdi|bdo|cite|code|del|dfn|em|i|ins|kbd|mark|q|s|samp|small|span"
    r"|strong|sub|sup|time|u|var|wbr)\b[^<>]*>",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")


def remove_xml_forbidden(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry (C0 controls, U+FFFE/F, surrogates)."""
    if text.isprintable():  # none of them is printable, and this check is much faster
        return text
    return _XML_FORBIDDEN.sub("", text)


def plain_title(text: str) -> str:
    """One line of plain text: inline HTML tags dropped, entities decoded, whitespace collapsed."""
    if "<" in text:
        text = _INLINE_TAG.sub("", _LINE_BREAK_TAG.sub(" ", text))
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m[0]), text)
    return " ".join(remove_xml_forbidden(text).split())


# ---------------------------------------------------------------- reading one file


@dataclass(frozen=True)
class _Split:
    kind: str
    """``yaml``, ``toml`` or empty when the file has no front matter."""
    front_matter: str
    body: str
    body_line: int


_CLOSERS = {
    "yaml": re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE),
    "toml": re.compile(r"^\+\+\+[ \t]*$", re.MULTILINE),
}
_OPENERS = {"---": "yaml", "+++": "toml"}
_FENCE_NAME = {"yaml": "---", "toml": "+++"}
_HEADER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9_ -]*):(?:[ \t].*)?")
_PELICAN_KEYS = frozenset(
    {"title", "date", "modified", "tags", "category", "slug", "author", "authors",
     "summary", "lang", "status", "save_as", "url", "template", "translation"}
)
_KEY_LIKE = re.compile(r"[ \t]*\"?[A-Za-z_][\w-]*\"?[ \t]*[:=]")
_EXPECTED = "YAML front matter between --- lines (or TOML between +++ lines) at the very top"


def _decode(data: bytes, relpath: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ContentError("is UTF-16: save it as UTF-8", path=relpath, line=1)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ContentError(
            "looks like a binary file (it contains NUL bytes), not a Markdown post",
            path=relpath,
            line=data.count(b"\n", 0, nul) + 1,
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = data[exc.start : exc.start + 1].hex()
        raise ContentError(
            f"is not UTF-8 (byte 0x{byte} cannot be decoded): save it as UTF-8",
            path=relpath,
            line=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Checking the bytes first is much faster than a regex over every text.
    if data.translate(None, _BYTES_XML_ALLOWS) or _NONCHARACTER_BYTES.search(data):
        text = remove_xml_forbidden(text)
    return text


def _split(text: str, relpath: str) -> _Split:
    first_end = text.find("\n")
    first_line = (text if first_end < 0 else text[:first_end]).rstrip(" \t")
    kind = _OPENERS.get(first_line)
    if kind is None:
        _refuse_foreign_headers(text, relpath)
        return _Split("", "", text, 1)
    closer = _CLOSERS[kind].search(text, first_end + 1) if first_end >= 0 else None
    if closer is None:
        fence = _FENCE_NAME[kind]
        raise ContentError(
            f"the front matter opened by {fence} on line 1 is never closed: "
            f"add a line {fence} after its last key",
            path=relpath,
            line=1,
        )
    front_matter = text[first_end + 1 : closer.start()]
    closing_line = 2 + front_matter.count("\n")
    end = closer.end()
    if text.startswith("\n", end):
        end += 1
    return _Split(kind, front_matter, text[end:], closing_line + 1)


def _refuse_foreign_headers(text: str, relpath: str) -> None:
    """Posts written for another generator, or front matter that is not on line 1."""
    lines = text.split("\n", 40)[:40]
    header: list[str] = []
    for line in lines:
        if not line.strip():
            break
        header.append(line)
    keys = [m[1].strip().lower() for m in map(_HEADER_LINE.fullmatch, header) if m]
    if header and len(keys) == len(header) and _PELICAN_KEYS.intersection(keys):
        raise ContentError(
            f"starts with Pelican-style 'Title: …' headers, but feedpub reads {_EXPECTED}: "
            "put a line --- above and below them and write the keys in lower case",
            path=relpath,
            line=1,
        )
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fence = line.rstrip(" \t")
        following = lines[number] if number < len(lines) else ""
        if fence in _OPENERS and _KEY_LIKE.match(following):
            raise ContentError(
                f"front matter must start on the very first line, but {fence} is on line "
                f"{number}: remove what comes before it",
                path=relpath,
                line=number,
            )
        return


@dataclass
class _FrontMatter:
    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, yaml.Node] = field(default_factory=dict)
    """YAML value nodes, so a scalar can be read as written (``title: yes`` is 'yes')."""


_YAML_STR = "tag:yaml.org,2002:str"
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SIMPLE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "bool", "null", "int", "float", "timestamp")
)
_SIMPLE_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?: +(.*?))? *")
_DOUBLE_QUOTED = re.compile(r'"([^"\\]*)"')
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'")
_FLOW_LIST = re.compile(r"\[([^\[\]{}\"'#:]*)\]")
_IMPLICIT: Mapping[str | None, list[tuple[str, re.Pattern[str]]]] = (
    yaml.SafeLoader.yaml_implicit_resolvers
)
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")


class _NotSimple(Exception):
    """The fast path leaves this front matter to PyYAML."""


def _load_simple_yaml(text: str) -> _FrontMatter | None:
    """The front matter most posts have (``key: value`` lines), read without composing nodes.

    Composing YAML nodes costs about 100 µs a post, too slow for sites with
    thousands of posts. Scalars are typed by PyYAML's own implicit resolvers
    and constructor, so the result is what ``yaml.safe_load`` gives; anything
    beyond plain, simply quoted and ``[a, b]`` values returns None and goes
    through PyYAML.
    """
    constructor: yaml.constructor.SafeConstructor | None = None

    def scalar(value: str) -> tuple[Any, yaml.ScalarNode | None]:
        nonlocal constructor
        if (
            not value
            or value[0] in _INDICATORS
            or ": " in value
            or " #" in value
            or value.endswith(":")
            or "\t" in value
        ):
            raise _NotSimple
        resolvers = _IMPLICIT.get(value[0], ())
        tag = next((tag for tag, pattern in resolvers if pattern.match(value)), _YAML_STR)
        if tag == _YAML_STR:
            return value, None
        if tag not in _SIMPLE_TAGS:
            raise _NotSimple
        node = yaml.ScalarNode(tag, value)
        constructor = constructor or yaml.constructor.SafeConstructor()
        return constructor.construct_object(node, deep=True), node

    result = _FrontMatter()
    try:
        for number, line in enumerate(text.split("\n"), start=2):
            if not line or line[0] == "#":
                continue
            match = _SIMPLE_LINE.fullmatch(line)
            if match is None:
                return None
            key, value = match[1], match[2] or ""
            node: yaml.ScalarNode | None = None
            first = value[:1]
            if not first:
                data: Any = None
            elif first == '"' and (quoted := _DOUBLE_QUOTED.fullmatch(value)):
                data = quoted[1]
            elif first == "'" and (quoted := _SINGLE_QUOTED.fullmatch(value)):
                data = quoted[1].replace("''", "'")
            elif first == "[" and (flow := _FLOW_LIST.fullmatch(value)):
                items = [item.strip() for item in flow[1].split(",")]
                data = [] if items == [""] else [scalar(item)[0] for item in items]
            else:
                data, node = scalar(value)
            result.data[key] = data
            result.lines[key] = number
            if node is not None:
                result.nodes[key] = node
    except _NotSimple:
        return None
    return result


def _load_yaml(text: str, relpath: str) -> _FrontMatter:
    """Parse once, keeping each top-level key's line; errors point at lines in the file."""
    first = 2
    if not text.isascii():
        text = _YAML_BREAKS.sub(" ", _YAML_REFUSED.sub("", text))
    try:
        simple = _load_simple_yaml(text)
    except (ValueError, OverflowError):
        simple = None  # PyYAML will say which value and line
    if simple is not None:
        return simple
    loader = _YamlLoader(text)
    result = _FrontMatter()
    try:
        node = loader.get_single_node()
        if node is None:
            return result
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise ContentError(
                f"the front matter is {kind}, but it must be keys and values "
                "such as 'title: My post'",
                path=relpath,
                line=first + node.start_mark.line,
            )
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            line = first + key_node.start_mark.line
            if not isinstance(key_node, yaml.ScalarNode):
                raise ContentError(
                    "front matter keys must be plain words such as 'title'",
                    path=relpath, line=line,
                )
            key = str(key_node.value)
            try:
                if value_node.tag == _YAML_STR:
                    value = value_node.value
                else:
                    value = loader.construct_object(value_node, deep=True)
            except (ValueError, OverflowError) as exc:
                written = value_node.value if isinstance(value_node, yaml.ScalarNode) else ""
                raise ContentError(
                    f"cannot read {written!r}: {exc}" if written else f"cannot read this: {exc}",
                    path=relpath, line=first + value_node.start_mark.line, key=key,
                ) from None
            result.data[key] = value
            result.lines[key] = line
            result.nodes[key] = value_node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        hint = ""
        if exc.problem and "mapping values are not allowed" in exc.problem:
            hint = " (quote a value that contains ': ', e.g. title: \"Part 2: the end\")"
        elif exc.context_mark and mark and exc.context_mark.line != mark.line:
            hint = f" (it starts on line {first + exc.context_mark.line})"
        raise ContentError(
            f"invalid YAML front matter: {problem}{hint}",
            path=relpath,
            line=first + mark.line if mark is not None else first,
        ) from None
    except yaml.YAMLError as exc:
        raise ContentError(f"invalid YAML front matter: {exc}", path=relpath, line=first) from None
    except RecursionError:
        raise ContentError(
            "the front matter is nested too deeply to read", path=relpath, line=first
        ) from None
    finally:
        loader.dispose()
    return result


_TOML_KEY = re.compile(r"[ \t]*(?:\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+))[ \t]*[.=]")
_TOML_TABLE = re.compile(r"[ \t]*\[\[?[ \t]*(?:\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+))")


def _load_toml(text: str, relpath: str) -> _FrontMatter:
    first = 2
    text = _YAML_REFUSED.sub("", text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, at = toml_error(exc)
        line = first + at - 1 if at else first + text.count("\n")
        raise ContentError(
            f"invalid TOML front matter: {message}", path=relpath, line=line
        ) from None
    except ValueError as exc:
        raise ContentError(
            f"invalid TOML front matter: {exc}", path=relpath, line=first
        ) from None
    except RecursionError:
        raise ContentError(
            "the front matter is nested too deeply to read", path=relpath, line=first
        ) from None
    result = _FrontMatter(data=data)
    in_root = True
    for number, source_line in enumerate(text.split("\n"), start=first):
        table = _TOML_TABLE.match(source_line)
        if table:
            in_root = False
            result.lines.setdefault(next(g for g in table.groups() if g is not None), number)
            continue
        key = _TOML_KEY.match(source_line) if in_root else None
        if key:
            result.lines.setdefault(next(g for g in key.groups() if g is not None), number)
    return result


class _Fields:
    """Typed reads of front matter values; every error names the key and its line."""

    def __init__(self, front: _FrontMatter, relpath: str) -> None:
        self.front = front
        self.relpath = relpath

    def error(self, key: str, message: str) -> ContentError:
        return ContentError(
            message, path=self.relpath, line=self.front.lines.get(key), key=key
        )

    def present(self, key: str) -> bool:
        return self.front.data.get(key) is not None

    def _as_written(self, key: str) -> str | None:
        node = self.front.nodes.get(key)
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        return None

    def text(self, key: str) -> str | None:
        """A string; a number, date or yes/no is taken as written."""
        value = self.front.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return remove_xml_forbidden(value)
        if isinstance(value, bool | int | float | date | time):
            written = self._as_written(key)
            if written is not None:
                return written
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise self.error(key, f"must be text, not {_describe(value)}")

    def words(self, key: str, *, split: bool) -> list[str]:
        """A list of names, or one string (split on commas, else on spaces, as Jekyll)."""
        value = self.front.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            if not split:
                return [value]
            return value.split(",") if "," in value else value.split()
        if isinstance(value, bool | int | float | date):
            return [self.text(key) or ""]
        if isinstance(value, list):
            items: list[str] = []
            for item in value:
                if isinstance(item, bool | int | float | str | date):
                    items.append(str(item))
                elif item is not None:
                    raise self.error(
                        key, f"must be a list of names, but one item is {_describe(item)}"
                    )
            return items
        raise self.error(
            key, f"must be a list such as [news, python] or 'news python', not {_describe(value)}"
        )

    def flag(self, key: str) -> bool | None:
        value = self.front.data.get(key)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
            return _FLAG_WORDS[value.strip().lower()]
        raise self.error(key, f"must be true or false, not {value!r}")

    def date(self, key: str, tz: ZoneInfo) -> datetime | None:
        value = self.front.data.get(key)
        if value is None:
            return None
        try:
            return parse_date(value, tz=tz)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None


_FLAG_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_KNOWN_KEYS = frozenset(
    {"title", "date", "updated", "last_modified_at", "slug", "id", "categories", "category",
     "tags", "author", "summary", "description", "excerpt", "draft", "published", "image",
     "lang"}
)
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def relative_path(path: Path, site_dir: Path) -> str:
    """``path`` from the site folder, with forward slashes, as every message names it."""
    site_dir = site_dir if site_dir.is_absolute() else site_dir.absolute()
    return _relative(str(path if path.is_absolute() else path.absolute()), site_dir)


def _relative(path: str, site_dir: Path) -> str:
    """``path`` from the site folder, with forward slashes (string work: Path is slow here)."""
    inside = str(site_dir).rstrip(os.sep) + os.sep
    relative = path[len(inside) :] if path.startswith(inside) else os.path.relpath(path, site_dir)
    return relative.replace(os.sep, "/")


def read_post(
    path: Path, *, site: SiteConfig, site_dir: Path, limits: LimitsConfig | None = None
) -> Post:
    """Read one post file; raise ContentError naming the file, line and key on bad input.

    Only files inside ``site_dir`` are read: a symbolic link that leads out of it is an
    error (a link to the site's secret must never be published). A post beyond
    ``limits`` (size, nesting) is an error too, before Markdown ever sees it.
    """
    limits = limits or LimitsConfig()
    path = path if path.is_absolute() else path.absolute()
    site_dir = site_dir if site_dir.is_absolute() else site_dir.absolute()
    relpath = _relative(str(path), site_dir)
    check_inside(path, site_dir, relpath)
    try:
        with path.open("rb") as file:
            data = file.read(limits.post_bytes + 1)
    except OSError as exc:
        raise ContentError(f"cannot be read: {exc.strerror or exc}", path=relpath) from None
    if len(data) > limits.post_bytes:
        raise ContentError(
            f"is too large: more than {limits.post_bytes:,} bytes (the limit set by "
            "[limits] post_bytes); split it or raise the limit",
            path=relpath,
        )
    text = _decode(data, relpath)
    split = _split(text, relpath)
    check_shape(split.body, nesting=limits.nesting, relpath=relpath, first_line=split.body_line)
    if split.kind == "yaml":
        front = _load_yaml(split.front_matter, relpath)
    elif split.kind == "toml":
        front = _load_toml(split.front_matter, relpath)
    else:
        front = _FrontMatter()
    return _build_post(path, relpath, split, _Fields(front, relpath), site)


def _build_post(
    path: Path, relpath: str, split: _Split, fields: _Fields, site: SiteConfig
) -> Post:
    name = _name_of(relpath)
    tz = site.tz

    post_date = fields.date("date", tz)
    if post_date is None:
        if name.date_text is None:
            where = "" if split.kind else "this file has no front matter and "
            dated = f"2025-01-31-{slugify(name.words) or 'slug'}"
            rename = (
                f"folder {dated}" if path.stem.lower() == "index" else f"file {dated}{path.suffix}"
            )
            raise ContentError(
                f"{where}no date: add 'date: 2025-01-31' to the front matter or name the "
                f"{rename}",
                path=relpath,
                key="date" if split.kind else None,
            )
        try:
            post_date = parse_date(name.date_text, tz=tz)
        except ValueError as exc:
            raise ContentError(
                f"the date in the file name is wrong: {exc}", path=relpath
            ) from None
    updated_key = "updated" if fields.present("updated") else "last_modified_at"

    raw_slug = fields.text("slug")
    slug = slugify(raw_slug) if raw_slug and raw_slug.strip() else slugify(name.words)
    if not slug:
        if raw_slug:
            raise fields.error("slug", f"{raw_slug!r} has no letters or digits to make a URL from")
        raise ContentError(
            "the file name gives an empty slug: add 'slug: my-post' to the front matter",
            path=relpath,
        )

    title = plain_title(fields.text("title") or "")
    title_from_filename = not title
    if title_from_filename:
        title = plain_title(_title_from_words(name.words))

    post_id = fields.text("id")
    if post_id is not None:
        post_id = remove_xml_forbidden(post_id).strip()
        if not post_id:
            raise fields.error("id", "is empty: remove it or give the post a lasting id")

    author, author_email = _author(fields)
    draft = bool(fields.flag("draft")) or fields.flag("published") is False

    return Post(
        path=path,
        relpath=relpath,
        title=title,
        title_from_filename=title_from_filename,
        date=post_date,
        updated=fields.date(updated_key, tz),
        slug=slug,
        id=post_id,
        categories=_names(fields.words("categories", split=True)
                          + fields.words("category", split=False)),
        tags=_names(fields.words("tags", split=True)),
        author=author,
        summary=_summary(fields),
        draft=draft,
        image=_image(fields),
        lang=_lang(fields),
        body=split.body,
        body_line=split.body_line,
        key_lines=dict(fields.front.lines),
        extra={k: v for k, v in fields.front.data.items() if k not in _KNOWN_KEYS},
        author_email=author_email,
    )


def _names(items: list[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        cleaned = " ".join(remove_xml_forbidden(item).split())
        if cleaned:
            seen.setdefault(cleaned, None)
    return tuple(seen)


def _author(fields: _Fields) -> tuple[str | None, str | None]:
    value = fields.front.data.get("author")
    if isinstance(value, dict):
        name, email = value.get("name"), value.get("email")
        if not isinstance(name, str) or not name.strip():
            raise fields.error("author", "a mapping needs a name, e.g. {name: Ada, email: …}")
        if email is not None and not isinstance(email, str):
            raise fields.error("author", f"email must be text, not {_describe(email)}")
        return " ".join(name.split()), email.strip() if email else None
    if isinstance(value, list):
        names = _names(fields.words("author", split=False))
        return (", ".join(names) or None), None
    text = fields.text("author")
    return (" ".join(text.split()) or None) if text else None, None


def _summary(fields: _Fields) -> str | None:
    for key in ("summary", "description", "excerpt"):
        text = fields.text(key)
        if text and text.strip():
            return text.strip()
    return None


def _image(fields: _Fields) -> str | None:
    value = fields.front.data.get("image")
    if isinstance(value, dict):
        for key in ("path", "url", "src"):
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key]).strip()
        raise fields.error("image", "a mapping needs a path, e.g. {path: /img/cover.png}")
    text = fields.text("image")
    return text.strip() or None if text else None


def _lang(fields: _Fields) -> str | None:
    text = fields.text("lang")
    if text is None or not text.strip():
        return None
    lang = text.strip().replace("_", "-")
    if not _LANG.fullmatch(lang):
        raise fields.error("lang", f"{text!r} is not a language tag such as en, zh-TW or pt-BR")
    return lang
