"""Findings for ``feedpub check``: what would embarrass an author in ten thousand inboxes.

Every finding points at a line and column of the source file (1-based; columns
count characters), so an editor can jump to it. Codes are stable slugs:

Errors (``feedpub check`` exits 1; ``digest send`` refuses the post):

``content-error``
    Anything ``feedpub build`` cannot read or accept: front matter that does not
    parse, a bad date, a file that is not UTF-8, two posts with the same slug,
    id or permalink. The message is the build's own.

Warnings (``--strict`` makes them fail too):

``repeated-text``
    A heading, paragraph or list item whose whole text is one passage said two
    or more times in a row (``### 一、背景一、背景``): export tools such as
    Notion's do this. Short refrains (``la la la``) are left alone.
``repeated-block``
    A heading, paragraph or list item identical to the one right before it.
``template-syntax``
    Liquid (``{% … %}``, ``{{ … }}``) or Hugo shortcodes (``{{< … >}}``,
    ``{{% … %}}``) left in the body: feeds and email show them as written.
    Inside code blocks and inline code they are examples and pass.
``missing-file``
    A relative link or image whose file is not in the site (looked for next
    to the post, or under ``content/``, ``static/`` and the site folder for
    ``/``-rooted paths). Page-like targets (``about/``, ``x.html``) are not
    checked: feedpub cannot know what the web server has.
``empty-link-text``
    A link with nothing to click on (``[](https://…)``).
``javascript-url``
    A ``javascript:`` or ``vbscript:`` link. A warning rather than an error:
    the sanitizer removes it, so no script reaches a reader, but the link is
    dead in every feed and email.
``insecure-link``
    An ``http://`` link or image on an ``https://`` site (mixed content;
    mail clients warn or block the image).
``missing-alt``
    An image without alt text (``![](cat.png)``, ``<img>`` without ``alt``;
    an explicit ``alt=""`` marks a decorative image and passes).
``unrendered-math``
    TeX math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``): feed readers and mail
    clients show it as written. Prices (``$5 and $10``) follow Pandoc's rule
    and pass. One finding per post, at the first formula.
``title-from-filename``
    No ``title`` key: the title is made from the file name.
``empty-summary``
    No ``summary`` key and no text outside images, code and HTML, so feeds and
    digests show an empty (or code) summary.
``too-large``
    The post's own email (its HTML in the email layout, CSS inlined) is over
    ``mail.max_html_bytes``: Gmail clips email over about 102 KB, so feedpub
    sends only the summary and a link.

Info (never fails a check):

``draft``
    ``draft: true`` or ``published: false``: not in feeds or email.
``future-date``
    Dated after now: not in feeds or email until then.
"""

from __future__ import annotations

import os.path
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt

from feedpub import build, content
from feedpub.config import Settings
from feedpub.content import Post
from feedpub.entries import Entry, make_entry
from feedpub.errors import ContentError

Severity = Literal["error", "warning", "info"]

CODES: dict[str, Severity] = {
    "content-error": "error",
    "repeated-text": "warning",
    "repeated-block": "warning",
    "template-syntax": "warning",
    "missing-file": "warning",
    "empty-link-text": "warning",
    "javascript-url": "warning",
    "insecure-link": "warning",
    "missing-alt": "warning",
    "unrendered-math": "warning",
    "title-from-filename": "warning",
    "empty-summary": "warning",
    "too-large": "warning",
    "draft": "info",
    "future-date": "info",
}
"""Every code the linter emits, with its severity."""


@dataclass(frozen=True)
class Finding:
    path: str
    """Relative to the site folder, POSIX separators."""
    line: int
    column: int
    severity: Severity
    code: str
    message: str

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.code)

    def to_json(self) -> dict[str, str | int]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class LintReport:
    findings: tuple[Finding, ...]
    """Sorted by path, line and column."""
    posts: int
    """Post files looked at, readable or not."""

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity == severity)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def warnings(self) -> int:
        return self.count("warning")

    @property
    def infos(self) -> int:
        return self.count("info")

    def failed(self, *, strict: bool = False) -> bool:
        """Whether ``check`` should exit 1: any error, or with ``strict`` any warning."""
        return self.errors > 0 or (strict and self.warnings > 0)

    def summary(self) -> str:
        """``3 errors, 5 warnings in 42 posts`` (info counted too when there is some)."""
        parts = [_plural(self.errors, "error"), _plural(self.warnings, "warning")]
        if self.infos:
            parts.append(_plural(self.infos, "info", "infos"))
        return f"{', '.join(parts)} in {_plural(self.posts, 'post')}"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _finding(post: Post, line: int, column: int, code: str, message: str) -> Finding:
    return Finding(post.relpath, line, column, CODES[code], code, message)


# --- the site ---------------------------------------------------------------


def lint_site(
    settings: Settings,
    now: datetime,
    *,
    jobs: int | None = None,
    progress: build.Progress | None = None,
) -> LintReport:
    """Every finding for every post of the site.

    Reads and renders the posts as ``feedpub build`` does, through its cache (so
    a check after a build renders nothing again), and each post the build
    rejects is an error here, with the build's own message. ``jobs`` and
    ``progress`` are the build's.
    """
    catalog = build.scan(settings, now, jobs=jobs, progress=progress)
    refs = [*catalog.published, *catalog.drafts, *catalog.future]
    rendered = {entry.source: entry for entry in catalog.load(refs)}
    exists = cache(Path.exists)
    findings: list[Finding] = []
    posts: dict[str, Post] = {}
    files = content.find_post_files(settings.posts_dir)
    for path in files:
        relpath = path.relative_to(settings.site_dir).as_posix()
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir)
        except ContentError:
            continue  # the catalog holds the same error; reported below
        posts[relpath] = post
        findings.extend(
            lint_post(post, settings=settings, now=now, entry=rendered.get(relpath),
                      exists=exists)
        )
    findings.extend(_content_error(error, settings, posts) for error in catalog.errors)
    return LintReport(tuple(sorted(set(findings), key=Finding.sort_key)), posts=len(files))


def _content_error(error: ContentError, settings: Settings, posts: dict[str, Post]) -> Finding:
    path = error.path or Path()
    if path.is_absolute() and path.is_relative_to(settings.site_dir):
        path = path.relative_to(settings.site_dir)
    relpath = path.as_posix()
    line = error.line
    if line is None and error.key and relpath in posts:
        line = posts[relpath].key_lines.get(error.key)
    message = error.message
    if error.key and not message.startswith(error.key):
        message = f"{error.key}: {message}"
    return Finding(relpath, line or 1, 1, "error", "content-error", message)


def errors_for(
    items: Iterable[Entry | Post], report: LintReport
) -> list[Finding]:
    """The error findings of ``report`` in the source files of these entries or posts.

    What ``digest send`` calls before it mails anything::

        report = lint_site(settings, now)
        blocking = errors_for(edition_entries, report)
        if blocking and not force: refuse, naming each finding
    """
    sources = {item.source if isinstance(item, Entry) else item.relpath for item in items}
    return [f for f in report.findings if f.severity == "error" and f.path in sources]


# --- one post ---------------------------------------------------------------


def lint_post(
    post: Post,
    *,
    settings: Settings,
    now: datetime,
    entry: Entry | None = None,
    exists: Callable[[Path], bool] = Path.exists,
) -> list[Finding]:
    """The findings for one readable post (duplicates across posts are lint_site's).

    ``entry`` is the post rendered by :func:`feedpub.entries.make_entry`; it is
    rendered here when not given. ``exists`` tells whether a file is there (pass
    a cached one when linting many posts).
    """
    document = parse_markdown(post.body, first_line=post.body_line)
    findings: list[Finding] = []
    findings += _front_matter_findings(post, now)
    findings += _repetition_findings(post, document)
    findings += _template_findings(post, document)
    findings += _link_findings(post, document, settings, exists)
    findings += _math_findings(post, document)
    if entry is None:
        entry = make_entry(post, settings.site)
    findings += _summary_findings(post, document, entry)
    findings += _size_findings(post, settings, entry)
    return sorted(findings, key=Finding.sort_key)


def _front_matter_findings(post: Post, now: datetime) -> Iterator[Finding]:
    if post.title_from_filename:
        yield _finding(
            post, 1, 1, "title-from-filename",
            f"no `title` key, so the title is made from the file name: {post.title!r}; "
            "add `title: …` to the front matter",
        )
    if post.draft:
        key = "draft" if "draft" in post.key_lines else "published"
        yield _finding(
            post, post.key_lines.get(key, 1), 1, "draft",
            "draft: not in feeds or email until you remove "
            f"`{'draft: true' if key == 'draft' else 'published: false'}`",
        )
    elif post.date > now:
        yield _finding(
            post, post.key_lines.get("date", 1), 1, "future-date",
            f"dated {post.date.isoformat()}, after now ({now.isoformat(timespec='seconds')}): "
            "not in feeds or email until then",
        )


# --- Markdown structure -----------------------------------------------------

BlockKind = Literal["heading", "paragraph", "list item", "table", "html", "code", "rule",
                    "definition"]


@dataclass(frozen=True)
class Block:
    kind: BlockKind
    start: int
    """First line, 1-based, in the source file."""
    lines: tuple[str, ...]
    """The block's source lines as written, container markers (``>``, ``-``) included."""
    text: str = ""
    """Inline content of headings, paragraphs and list items (Markdown), else empty."""

    @property
    def source(self) -> str:
        return "\n".join(self.lines)

    @cached_property
    def visible(self) -> str:
        """:attr:`source` with code spans and comments blanked (see :func:`visible_source`)."""
        return visible_source(self)

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), 1-based, of a character offset into :attr:`source`."""
        line = self.start
        for text in self.lines:
            if offset <= len(text):
                return line, offset + 1
            offset -= len(text) + 1
            line += 1
        return self.start + len(self.lines) - 1, len(self.lines[-1]) + 1


@dataclass(frozen=True)
class Document:
    blocks: tuple[Block, ...]
    """In source order."""

    def text_blocks(self) -> Iterator[Block]:
        """Blocks whose text a reader sees as prose: not code."""
        return (block for block in self.blocks if block.kind not in ("code", "rule"))


# Only the block structure is used: inline parsing would be most of the time.
_MARKDOWN = MarkdownIt("commonmark").enable("table").disable("inline")


def parse_markdown(body: str, *, first_line: int = 1) -> Document:
    """The body's leaf blocks with their lines in the source file.

    ``first_line`` is where the body starts in the file (after the front matter).
    CommonMark's rules (markdown-it) decide what is code, a table or HTML.
    """
    lines = tuple(body.split("\n"))
    tokens = _MARKDOWN.parse(body)
    blocks: list[Block] = []
    covered: set[int] = set()
    open_items = 0
    open_tables = 0
    for index, token in enumerate(tokens):
        if token.type == "list_item_open":
            open_items += 1
        elif token.type == "list_item_close":
            open_items -= 1
        elif token.type == "table_close":
            open_tables -= 1
        if token.map is None or open_tables:
            continue
        if token.type == "table_open":
            open_tables += 1
        start, end = token.map
        kind: BlockKind | None = None
        text = ""
        if token.type == "inline":
            parent = tokens[index - 1].type
            if parent == "heading_open":
                kind = "heading"
            elif parent == "paragraph_open":
                kind = "list item" if open_items else "paragraph"
            else:
                continue
            text = token.content
        elif token.type == "table_open":
            kind = "table"
        elif token.type == "html_block":
            kind = "html"
        elif token.type in ("fence", "code_block"):
            kind = "code"
        elif token.type == "hr":
            kind = "rule"
        if kind is None:
            continue
        end = max(end, start + 1)
        covered.update(range(start, end))
        blocks.append(Block(kind, first_line + start, lines[start:end], text))
    for number, line in enumerate(lines):
        if number not in covered and _DEFINITION.match(line):
            blocks.append(Block("definition", first_line + number, (line,)))
    blocks.sort(key=lambda block: block.start)
    return Document(tuple(blocks))


# A footnote ("[^1]: text", the footnotes extension) looks like one but holds prose.
_DEFINITION = re.compile(r"^[ >]{0,8}\[(?!\^)(?:[^\]\\]|\\.)+\]:[ \t]*(<[^>\n]*>|\S+)")


def _text_columns(block: Block) -> list[tuple[int, int]] | None:
    """For each character of ``block.text``, its (line, column); None when unmappable."""
    positions: list[tuple[int, int]] = []
    parts = block.text.split("\n")
    if len(parts) > len(block.lines):
        return None
    for number, (part, raw) in enumerate(zip(parts, block.lines, strict=False)):
        column = _column_of(raw, part)
        positions.extend((block.start + number, column + k + 1) for k in range(len(part)))
        positions.append((block.start + number, column + len(part) + 1))  # the line break
    return positions


def _column_of(raw: str, part: str) -> int:
    """Where ``part`` (a line of inline content) starts in its source line, 0-based."""
    stripped = raw.rstrip()
    if part and stripped.endswith(part.rstrip()):
        return len(stripped) - len(part.rstrip())
    found = raw.find(part) if part else -1
    return found if found >= 0 else len(raw) - len(raw.lstrip())


# --- masking: what is code or a comment is not checked ----------------------

_CODE_SPAN_RUN = re.compile(r"(?<!\\)(`+)")
_HTML_HIDDEN = re.compile(
    r"<!--.*?-->|<(pre|code|script|style|textarea|kbd|samp)\b.*?</\1\s*>",
    re.DOTALL | re.IGNORECASE,
)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def visible_source(block: Block) -> str:
    """The block's source with code spans, HTML comments and code elements blanked out
    (same length, same line breaks), so offsets still point into the source."""
    text = _HTML_HIDDEN.sub(lambda m: _blank(m.group(0)), block.source)
    pieces: list[str] = []
    done = search_from = 0
    while opening := _CODE_SPAN_RUN.search(text, search_from):
        # A code span ends at the next run of exactly as many backticks.
        closing = re.compile(rf"(?<!`){opening.group(1)}(?!`)").search(text, opening.end())
        if closing is None:
            search_from = opening.end()
            continue
        pieces += [text[done : opening.start()], _blank(text[opening.start() : closing.end()])]
        done = search_from = closing.end()
    pieces.append(text[done:])
    return "".join(pieces)


# --- repeated text ----------------------------------------------------------

_MIN_PASSAGE_WEIGHT = 5
"""A repeated passage needs at least this many letters or digits (a wide CJK
character counts two), so refrains such as "la la la" and "no, no" pass."""


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in "WF"


def _substantial(passage: str, *, heading: bool, spaced: bool) -> bool:
    """Whether a passage said twice is more likely an export's doubling than a refrain.

    A single Latin word said twice with a space between ("Walla Walla", "Hello?
    Hello?") is ordinary prose in a paragraph; it counts only in a heading.
    """
    letters = [char for char in passage if char.isalnum()]
    weight = sum(2 if _is_wide(char) else 1 for char in letters)
    if weight < _MIN_PASSAGE_WEIGHT:
        return False
    one_word = not any(char.isspace() or _is_wide(char) for char in passage)
    return heading or not (spaced and one_word)


def repetition(text: str) -> tuple[int, int, bool] | None:
    """(passage length, times, spaced) when ``text`` is one passage said twice or more
    in a row, with or without a space between; None otherwise."""
    for joined, spaced in ((text, False), (text + " ", True)):
        period = (joined + joined).find(joined, 1)
        if 0 < period < len(joined):
            return period - spaced, len(joined) // period, spaced
    return None


def _position_in_text(block: Block, index: int) -> tuple[int, int]:
    """(line, column) in the file of character ``index`` of the block's text with each
    run of whitespace made one space (as :func:`_collapsed` gives it)."""
    columns = _text_columns(block)
    words = list(re.finditer(r"\S+", block.text))
    for match in words:
        if index < len(match.group(0)):
            origin = match.start() + index
            return columns[origin] if columns else (block.start, 1)
        index -= len(match.group(0)) + 1
    return block.start, 1


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _repetition_findings(post: Post, document: Document) -> Iterator[Finding]:
    previous: Block | None = None
    previous_text = ""
    for block in document.blocks:
        if block.kind not in ("heading", "paragraph", "list item"):
            previous, previous_text = block, ""
            continue
        text = _collapsed(block.text)
        heading = block.kind == "heading"
        found = repetition(text)
        if found:
            length, times, spaced = found
            passage = text[:length]
            if _substantial(passage, heading=heading, spaced=spaced):
                line, column = _position_in_text(block, length + spaced)
                yield _finding(
                    post, line, column, "repeated-text",
                    f"this {block.kind} says the same passage {_times(times)} in a row: "
                    f"{_quote(passage)} (left by an export tool?); keep one copy",
                )
        if (
            previous is not None
            and previous.kind == block.kind
            and text == previous_text
            and _substantial(text, heading=heading, spaced=False)
        ):
            line, column = _position_in_text(block, 0)
            yield _finding(
                post, line, column, "repeated-block",
                f"this {block.kind} repeats the one before it (line {previous.start}): "
                f"{_quote(text)}; keep one copy",
            )
        previous, previous_text = block, text


def _times(times: int) -> str:
    return {2: "twice", 3: "three times"}.get(times, f"{times} times")


def _quote(text: str, limit: int = 40) -> str:
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


# --- template syntax from other generators ---------------------------------

_TEMPLATE = re.compile(
    r"(?P<hugo>\{\{[<%].*?[>%]\}\})"
    r"|(?P<tag>\{%-?\s*[A-Za-z_][^\n]*?%\})"
    r"|(?P<output>\{\{-?\s*[^{}\n\s][^{}\n]*?\}\})"
)


def _template_findings(post: Post, document: Document) -> Iterator[Finding]:
    for block in document.text_blocks():
        visible = block.visible
        for match in _TEMPLATE.finditer(visible):
            kind = match.lastgroup
            what = {
                "hugo": "a Hugo shortcode",
                "tag": "a Liquid tag",
                "output": "a Liquid/Jinja expression",
            }[kind or "output"]
            line, column = block.position(match.start())
            yield _finding(
                post, line, column, "template-syntax",
                f"{what} {_quote(match.group(0), 60)} is not expanded by feedpub: feeds and "
                "email show it as written; replace it with Markdown, or put an example "
                "in `code`",
            )


# --- links and images -------------------------------------------------------


LinkKind = Literal["markdown", "autolink", "html", "definition"]


@dataclass(frozen=True)
class Link:
    kind: LinkKind
    image: bool
    text: str | None
    """Link text or alt text; None when there is none (an ``<img>`` without ``alt``,
    an autolink or a reference definition)."""
    target: str
    offset: int
    """Where the link starts in the block's source."""
    target_offset: int


def find_links(visible: str) -> Iterator[Link]:
    """Inline links and images, autolinks, HTML ``<a>``/``<img>`` and reference definitions
    in a block's visible source."""
    yield from _markdown_links(visible)
    for match in _AUTOLINK.finditer(visible):
        yield Link("autolink", False, None, match.group(1), match.start(), match.start() + 1)
    yield from _html_links(visible)
    definition = _DEFINITION.match(visible)
    if definition:
        target = definition.group(1).strip("<>")
        yield Link("definition", False, None, target, definition.start(1), definition.start(1))


_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>")
_HTML_TAG = re.compile(r"<(a|img)\b([^>]*)>", re.IGNORECASE)
_HTML_ATTRIBUTE = re.compile(
    r"([A-Za-z_:][\w:.-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?", re.DOTALL
)
_HTML_CLOSING_A = re.compile(r"</a\s*>", re.IGNORECASE)


def _html_links(visible: str) -> Iterator[Link]:
    for match in _HTML_TAG.finditer(visible):
        name = match.group(1).lower()
        attributes: dict[str, tuple[str, int]] = {}
        for attribute in _HTML_ATTRIBUTE.finditer(match.group(2)):
            value = attribute.group(2) or ""
            quoted = value[:1] in ("'", '"')
            attributes[attribute.group(1).lower()] = (
                value[1:-1] if quoted else value,
                match.start(2) + attribute.start(2) + quoted,
            )
        key = "src" if name == "img" else "href"
        if key not in attributes:
            continue
        target, target_offset = attributes[key]
        if name == "img":
            alt = attributes.get("alt")
            yield Link("html", True, alt[0] if alt else None, target, match.start(),
                       target_offset)
            continue
        closing = _HTML_CLOSING_A.search(visible, match.end())
        inner = visible[match.end() : closing.start()] if closing else "…"
        if "<img" in inner.lower():
            inner = "image"
        text = re.sub(r"<[^>]*>", "", inner)
        yield Link("html", False, text, target, match.start(), target_offset)


def _markdown_links(text: str) -> Iterator[Link]:
    """``[text](target "title")`` and ``![alt](src)``; nested ones too (an image in a link)."""
    for opening in re.finditer(r"(?<!\\)\[", text):
        start = opening.start()
        close = _matching_bracket(text, start)
        if close is None or close + 1 >= len(text) or text[close + 1] != "(":
            continue
        parsed = _destination(text, close + 2)
        if parsed is None:
            continue
        target, target_offset = parsed
        image = text[start - 1 : start] == "!" and text[start - 2 : start - 1] != "\\"
        label = text[start + 1 : close]
        yield Link("markdown", image, label, target, start - image, target_offset)


def _matching_bracket(text: str, start: int) -> int | None:
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return index
        elif char == "\n" and text[index + 1 : index + 2] == "\n":
            return None
        index += 1
    return None


def _destination(text: str, index: int) -> tuple[str, int] | None:
    """The target of an inline link whose ``(`` ends just before ``index``, when the
    rest (an optional title, then ``)``) makes it a link."""
    index = _skip_space(text, index)
    if text[index : index + 1] == "<":
        end = text.find(">", index)
        if end < 0 or "\n" in text[index:end]:
            return None
        target, start, index = text[index + 1 : end], index + 1, end + 1
    else:
        start = index
        depth = 0
        while index < len(text) and text[index] not in " \t\n":
            char = text[index]
            if char == "\\":
                index += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            index += 1
        target = text[start:index]
    index = _skip_space(text, index)
    closer = {'"': '"', "'": "'", "(": ")"}.get(text[index : index + 1])
    if closer:
        end = text.find(closer, index + 1)
        if end < 0:
            return None
        index = _skip_space(text, end + 1)
    if text[index : index + 1] != ")":
        return None
    return target, start


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\n":
        index += 1
    return index


_PAGE_SUFFIXES = {"", ".html", ".htm", ".php", ".asp", ".aspx", ".xml", ".json"}
_LOCAL_HOSTS = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\]|0\.0\.0\.0|.*\.local)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _link_findings(
    post: Post, document: Document, settings: Settings, exists: Callable[[Path], bool]
) -> Iterator[Finding]:
    https_site = settings.site.url.startswith("https://")
    for block in document.text_blocks():
        visible = block.visible
        for link in find_links(visible):
            noun = "image" if link.image else "link"
            line, column = block.position(link.offset)
            if link.image and _alt_missing(link):
                yield _finding(
                    post, line, column, "missing-alt",
                    f"image {_quote(link.target, 60)} has no alt text: readers who do not "
                    "see images (screen readers, mail clients that block them) get nothing; "
                    "describe it in ![…](…)",
                )
            if not link.image and link.text is not None and not link.text.strip():
                yield _finding(
                    post, line, column, "empty-link-text",
                    f"link to {_quote(link.target, 60)} has no text to click on",
                )
            target_line, target_column = block.position(link.target_offset)
            problem = _target_problem(link.target, post, settings, exists, https_site)
            if problem:
                code, message = problem
                yield _finding(post, target_line, target_column, code, f"{noun} {message}")


def _alt_missing(link: Link) -> bool:
    if link.kind == "html":
        return link.text is None  # alt="" marks a decorative image on purpose
    return not (link.text or "").strip()


def _target_problem(
    target: str,
    post: Post,
    settings: Settings,
    exists: Callable[[Path], bool],
    https_site: bool,
) -> tuple[str, str] | None:
    # Browsers drop ASCII tabs, newlines and control characters inside a scheme.
    compact = re.sub(r"[\x00-\x20]", "", target)
    scheme = _SCHEME.match(compact)
    if scheme:
        name = scheme.group(1).lower()
        if name in ("javascript", "vbscript"):
            return "javascript-url", (
                f"{_quote(target, 60)} runs a script: feeds and email remove it, "
                "so the link does nothing; link to a page instead"
            )
        try:
            host = urlsplit(compact).hostname or ""
        except ValueError:  # "http://[broken": no host to speak of
            host = ""
        if name == "http" and https_site and not _LOCAL_HOSTS.match(host):
            return "insecure-link", (
                f"{_quote(target, 60)} uses http:// on an https site; use https:// "
                "if the server offers it"
            )
        return None
    if not target or target.startswith(("#", "?", "//")) or "{{" in target or "{%" in target:
        return None
    missing = _missing_file(target, post, settings, exists)
    if missing is None:
        return None
    return "missing-file", (
        f"{_quote(target, 60)} points at a file that is not in the site "
        f"(looked for {', '.join(missing)})"
    )


def _missing_file(
    target: str, post: Post, settings: Settings, exists: Callable[[Path], bool]
) -> list[str] | None:
    """The places looked at when ``target`` names a local file that is not there."""
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    if not path or path.endswith("/") or PurePosixPath(path).suffix.lower() in _PAGE_SUFFIXES:
        return None
    site_dir = settings.site_dir
    if path.startswith("/"):
        roots = [settings.content_dir, site_dir / "static", site_dir]
    else:
        roots = [post.path.parent]
    candidates = []
    for root in roots:
        candidate = Path(os.path.normpath(root / path.lstrip("/")))
        if candidate.is_relative_to(site_dir):
            candidates.append(candidate)
    if not candidates or any(_exists(exists, candidate) for candidate in candidates):
        return None
    return [candidate.relative_to(site_dir).as_posix() for candidate in candidates]


def _exists(exists: Callable[[Path], bool], path: Path) -> bool:
    try:
        return exists(path)
    except (OSError, ValueError):
        return False  # a name too long for the file system, a NUL byte: no such file


# --- math -------------------------------------------------------------------

_DISPLAY_MATH = re.compile(r"(?<!\\)\$\$([^$]*?\S[^$]*?)(?<!\\)\$\$")
_BRACKET_MATH = re.compile(r"\\\[(.+?)\\\]", re.DOTALL)
_PAREN_MATH = re.compile(r"\\\((.+?)\\\)", re.DOTALL)
# Pandoc's rule: the opening $ has a non-space on its right, the closing $ a
# non-space on its left and no digit after it, so "$5 and $10" is not math.
_INLINE_MATH = re.compile(r"(?<![\\$])\$([^\s$](?:[^$]{0,300}?[^\s\\$])?)\$(?![\d$])")
_TEX_HINT = re.compile(r"\\[A-Za-z]+|[\^_=<>{}+]")


def find_math(visible: str) -> list[tuple[int, str]]:
    """(offset, formula) of each TeX formula in a block's visible source, in order."""
    return sorted(_math_spans(visible))


def _math_spans(visible: str) -> Iterator[tuple[int, str]]:
    masked = visible
    for pattern in (_DISPLAY_MATH, _BRACKET_MATH, _PAREN_MATH):
        for match in pattern.finditer(masked):
            inner = match.group(1)
            if pattern is _BRACKET_MATH and not (
                _TEX_HINT.search(inner) or not visible.replace(match.group(0), "").strip()
            ):
                continue  # \[sic\] is an escaped bracket, not math
            yield match.start(), match.group(0)
        masked = pattern.sub(lambda m: _blank(m.group(0)), masked)
    for match in _INLINE_MATH.finditer(masked):
        inner = match.group(1)
        if inner[0].isdigit() and not _TEX_HINT.search(inner):
            continue  # "$5 for lunch, 3$": amounts, not a formula
        yield match.start(), match.group(0)


def _math_findings(post: Post, document: Document) -> Iterator[Finding]:
    formulas: list[tuple[int, int, str]] = []
    for block in document.text_blocks():
        if block.kind == "definition":
            continue
        for offset, formula in find_math(block.visible):
            line, column = block.position(offset)
            formulas.append((line, column, formula))
    if not formulas:
        return
    formulas.sort()
    line, column, formula = formulas[0]
    more = f" (and {len(formulas) - 1} more in this post)" if len(formulas) > 1 else ""
    yield _finding(
        post, line, column, "unrendered-math",
        f"math {_quote(' '.join(formula.split()), 40)} will show as written (raw TeX) in feeds "
        f"and email: feed readers and mail clients do not render it{more}",
    )


# --- summary and size -------------------------------------------------------

_MARKUP = re.compile(r"!\[[^\]]*\]\([^)]*\)|<[^>]*>|[*_~`#>|\\-]")


def has_prose(document: Document) -> bool:
    """Whether the body has any text outside code, images and HTML."""
    for block in document.blocks:
        if block.kind in ("heading", "paragraph", "list item"):
            visible = visible_source(Block(block.kind, block.start, (block.text,)))
            if _MARKUP.sub("", visible).strip():
                return True
    return False


def _summary_findings(post: Post, document: Document, entry: Entry) -> Iterator[Finding]:
    if post.summary and post.summary.strip():
        return
    if entry.summary_text.strip() and has_prose(document):
        return
    yield _finding(
        post, 1, 1, "empty-summary",
        "the summary is empty: the post has no text outside images and code, so feeds and "
        "digests show nothing (or code) under its title; add `summary: …` to the front matter",
    )


_LAYOUT_ALLOWANCE = 16_000
_STYLE_ALLOWANCE_PER_TAG = 60
"""Bytes the email adds to a post's HTML, about twice what was measured with the
built-in templates (8 KB of layout; inlined CSS of up to 40 bytes per element,
that is per two tags), so posts under this bound skip the slow email rendering."""


def _size_findings(post: Post, settings: Settings, entry: Entry) -> Iterator[Finding]:
    limit = settings.mail.max_html_bytes
    size = len(entry.content_html.encode("utf-8"))
    bound = size + entry.content_html.count("<") * _STYLE_ALLOWANCE_PER_TAG + _LAYOUT_ALLOWANCE
    if bound <= limit or email_fits(entry, settings):
        return
    yield _finding(
        post, post.body_line, 1, "too-large",
        f"too large for one email: with the email's layout it is over mail.max_html_bytes "
        f"({limit / 1000:.0f} KB; Gmail clips larger messages), so instant emails and "
        f"digests carry only its summary and a link (its HTML alone is {size / 1000:.0f} KB); "
        "split the post if it should be read in the inbox",
    )


def email_fits(entry: Entry, settings: Settings) -> bool:
    """Whether the post's own email (``instant`` mode, always the full post) stays
    under ``mail.max_html_bytes`` without being cut to its summary."""
    # Imported here: premailer and friends cost more to load than most checks take.
    from feedpub.mail.render import render_edition

    rendered = render_edition(
        [entry], settings=settings, newsletter=settings.newsletters[0], kind="post",
        edition_id="check", date=entry.published,
    )
    return not rendered.summarized_ids and not rendered.over_limit
