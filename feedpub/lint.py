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
``unused-footnote``
    A footnote defined (``[^note]: …``) but never referred to (``[^note]``):
    it is left out of feeds, pages and email, as GitHub and Pandoc leave it out.
``unrendered-math``
    TeX math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) that cannot be rendered:
    the converter does not know a command or cannot parse the formula, or it is
    inside raw HTML. It shows as written; the rest becomes MathML (and images in
    email). Prices (``$5 and $10``) follow Pandoc's rule and pass. One finding
    per post, at the first such formula.
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

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import urlsplit

from feedpub import assets
from feedpub.config import Settings
from feedpub.content import Post
from feedpub.entries import Entry, make_entry_with_outline
from feedpub.errors import ContentError
from feedpub.mathml import conversion_error, find_math, formula_parts
from feedpub.outline import Outline, OutlineBlock, OutlineLink, blank_code_spans

if TYPE_CHECKING:
    from feedpub.catalog import EntryRef

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
    "unused-footnote": "warning",
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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        code = str(data["code"])
        return cls(str(data["path"]), int(data["line"]), int(data["column"]), CODES[code], code,
                   str(data["message"]))  # fmt: skip


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


def _finding(source: str, line: int, column: int, code: str, message: str) -> Finding:
    return Finding(source, line, column, CODES[code], code, message)


# --- the site ---------------------------------------------------------------


def content_error_finding(error: ContentError, settings: Settings) -> Finding:
    """A post the catalog rejects, as an error with the catalog's own message."""
    path = error.path or Path()
    if path.is_absolute() and path.is_relative_to(settings.site_dir):
        path = path.relative_to(settings.site_dir)
    relpath = path.as_posix()
    line = error.line
    message = error.message
    if error.key and not message.startswith(error.key):
        message = f"{error.key}: {message}"
    return Finding(relpath, line or 1, 1, "error", "content-error", message)


def errors_for(
    items: Iterable[Entry | Post], report: LintReport
) -> list[Finding]:
    """The error findings of ``report`` in the source files of these entries or posts.

    What ``digest send`` calls before it mails anything::

        report = catalog.lint(sources=...)
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
    outline: Outline | None = None,
    exists: Callable[[Path], bool] = Path.exists,
) -> list[Finding]:
    """The findings for one readable post (duplicates across posts are the catalog's).

    ``entry`` and ``outline`` are what :func:`feedpub.entries.make_entry_with_outline`
    gives for the post: every rule reads the one Markdown conversion that renders
    it. The post is rendered here when either is missing. ``exists`` tells whether a
    file is there (pass a cached one when linting many posts).
    """
    if entry is None or outline is None:
        entry, outline = make_entry_with_outline(post, settings.site)
    findings = post_findings(post, settings=settings, entry=entry, outline=outline)
    findings += _context_findings(
        post.relpath, post.draft, post.date, post.key_lines, outline,
        settings=settings, now=now, exists=exists,
    )
    return sorted(findings, key=Finding.sort_key)


def post_findings(
    post: Post, *, settings: Settings, entry: Entry, outline: Outline
) -> list[Finding]:
    """The findings that depend on the post alone (not on ``now`` nor on other files),
    so they can be cached with its conversion."""
    findings: list[Finding] = []
    if post.title_from_filename:
        findings.append(_finding(
            post.relpath, 1, 1, "title-from-filename",
            f"no `title` key, so the title is made from the file name: {post.title!r}; "
            "add `title: …` to the front matter",
        ))  # fmt: skip
    prose = list(_prose_blocks(outline))  # blanking code spans once, for every rule
    findings += _repetition_findings(post.relpath, outline)
    findings += _template_findings(post.relpath, prose)
    findings += _link_findings(post.relpath, outline, settings)
    findings += _math_findings(post.relpath, prose)
    findings += _footnote_findings(post, prose)
    findings += _summary_findings(post, prose, entry)
    findings += _size_findings(post, settings, entry)
    return sorted(findings, key=Finding.sort_key)


def context_findings(
    ref: EntryRef,
    outline: Outline,
    *,
    settings: Settings,
    now: datetime,
    exists: Callable[[Path], bool] = Path.exists,
) -> list[Finding]:
    """The findings that depend on ``now`` (drafts, future dates) or on other files
    (missing files): worked out on every check, never cached."""
    return _context_findings(
        ref.source, ref.draft, ref.published, dict(ref.lines), outline,
        settings=settings, now=now, exists=exists,
    )


def _context_findings(
    source: str,
    draft: bool,
    date: datetime,
    key_lines: Mapping[str, int],
    outline: Outline,
    *,
    settings: Settings,
    now: datetime,
    exists: Callable[[Path], bool],
) -> list[Finding]:
    findings: list[Finding] = []
    if draft:
        key = "draft" if "draft" in key_lines else "published"
        findings.append(_finding(
            source, key_lines.get(key, 1), 1, "draft",
            "draft: not in feeds or email until you remove "
            f"`{'draft: true' if key == 'draft' else 'published: false'}`",
        ))  # fmt: skip
    elif date > now:
        findings.append(_finding(
            source, key_lines.get("date", 1), 1, "future-date",
            f"dated {date.isoformat()}, after now ({now.isoformat(timespec='seconds')}): "
            "not in feeds or email until then",
        ))  # fmt: skip
    findings += _missing_file_findings(source, outline, settings, exists)
    return findings


# --- what the reader sees -----------------------------------------------------

_TEXT_KINDS = ("heading", "paragraph", "list item")
_HTML_HIDDEN = re.compile(
    r"<!--.*?-->|<(pre|code|script|style|textarea|kbd|samp)\b.*?</\1\s*>",
    re.DOTALL | re.IGNORECASE,
)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def visible_text(block: OutlineBlock) -> str:
    """The block's text with what a reader does not see as prose blanked out (same
    length, same line breaks): code spans (found as Python-Markdown finds them), HTML
    comments and code elements. Code and rules are all blank."""
    if block.kind in ("code", "rule"):
        return _blank(block.text)
    text = block.text if block.kind == "html" else blank_code_spans(block.text)
    return _HTML_HIDDEN.sub(lambda m: _blank(m.group(0)), text)


def _prose_blocks(outline: Outline) -> Iterator[tuple[OutlineBlock, str]]:
    """Blocks whose text a reader sees as prose (not code), with their visible text."""
    for block in outline.blocks:
        if block.kind not in ("code", "rule"):
            yield block, visible_text(block)


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


def _position_in_text(block: OutlineBlock, index: int) -> tuple[int, int]:
    """(line, column) in the file of character ``index`` of the block's text with each
    run of whitespace made one space (as :func:`_collapsed` gives it)."""
    for match in re.finditer(r"\S+", block.text):
        if index < len(match.group(0)):
            return block.position(match.start() + index)
        index -= len(match.group(0)) + 1
    return block.line, 1


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _repetition_findings(source: str, outline: Outline) -> Iterator[Finding]:
    previous: OutlineBlock | None = None
    previous_text = ""
    for block in outline.blocks:
        if block.kind not in _TEXT_KINDS:
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
                    source, line, column, "repeated-text",
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
                source, line, column, "repeated-block",
                f"this {block.kind} repeats the one before it (line {previous.line}): "
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


def template_matches(visible: str) -> Iterator[re.Match[str]]:
    """Each piece of Liquid or Hugo syntax in a block's visible text (see
    :func:`visible_text`), as ``template-syntax`` finds it; the group that matched
    (``hugo``, ``tag`` or ``output``) says which kind. ``feedpub.fix`` repairs these."""
    return _TEMPLATE.finditer(visible)


_Prose: TypeAlias = Sequence[tuple[OutlineBlock, str]]
"""Each block a reader sees as prose, with its visible text (see :func:`_prose_blocks`)."""


def _template_findings(source: str, prose: _Prose) -> Iterator[Finding]:
    for block, visible in prose:
        for match in template_matches(visible):
            kind = match.lastgroup
            what = {
                "hugo": "a Hugo shortcode",
                "tag": "a Liquid tag",
                "output": "a Liquid/Jinja expression",
            }[kind or "output"]
            line, column = block.position(match.start())
            yield _finding(
                source, line, column, "template-syntax",
                f"{what} {_quote(match.group(0), 60)} is not expanded by feedpub: feeds and "
                "email show it as written; replace it with Markdown, or put an example "
                "in `code`",
            )


# --- links and images -------------------------------------------------------


_PAGE_SUFFIXES = {"", ".html", ".htm", ".php", ".asp", ".aspx", ".xml", ".json"}
_LOCAL_HOSTS = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\]|0\.0\.0\.0|.*\.local)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def _link_findings(source: str, outline: Outline, settings: Settings) -> Iterator[Finding]:
    https_site = settings.site.url.startswith("https://")
    for link in outline.links:
        noun = "image" if link.image else "link"
        if link.image and _alt_missing(link):
            yield _finding(
                source, link.line, link.column, "missing-alt",
                f"image {_quote(link.target, 60)} has no alt text: readers who do not "
                "see images (screen readers, mail clients that block them) get nothing; "
                "describe it in ![…](…)",
            )
        if not link.image and link.text is not None and not link.text.strip():
            yield _finding(
                source, link.line, link.column, "empty-link-text",
                f"link to {_quote(link.target, 60)} has no text to click on",
            )
        if link.kind == "reference":
            continue  # its target is the definition's, checked there
        problem = _scheme_problem(link.target, https_site)
        if problem:
            code, message = problem
            yield _finding(
                source, link.target_line, link.target_column, code, f"{noun} {message}"
            )


def _alt_missing(link: OutlineLink) -> bool:
    if link.kind == "html":
        return link.text is None  # alt="" marks a decorative image on purpose
    return not (link.text or "").strip()


def _scheme_problem(target: str, https_site: bool) -> tuple[str, str] | None:
    # Browsers drop ASCII tabs, newlines and control characters inside a scheme.
    compact = re.sub(r"[\x00-\x20]", "", target)
    scheme = _SCHEME.match(compact)
    if not scheme:
        return None
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


def _missing_file_findings(
    source: str, outline: Outline, settings: Settings, exists: Callable[[Path], bool]
) -> Iterator[Finding]:
    for link in outline.links:
        target = link.target
        if link.kind == "reference" or _SCHEME.match(re.sub(r"[\x00-\x20]", "", target)):
            continue
        if not target or target.startswith(("#", "?", "//")) or "{{" in target or "{%" in target:
            continue
        missing = _missing_file(target, source, settings, exists)
        if missing:
            yield _finding(
                source, link.target_line, link.target_column, "missing-file",
                f"{'image' if link.image else 'link'} {_quote(target, 60)} points at a file "
                f"that is not in the site (looked for {', '.join(missing)})",
            )


def _missing_file(
    target: str, source: str, settings: Settings, exists: Callable[[Path], bool]
) -> list[str] | None:
    """The places looked at when ``target`` names a file that will not be published
    (with the resolver ``build`` uses); None when it will be, or names no file."""
    layout = assets.SiteLayout(settings.site_dir, settings.site.url)
    found = assets.link_source(layout, source, target)
    candidates = [found] if found is not None else assets.root_sources(layout, target)
    if found is None and candidates and not settings.pages.enabled:
        # Another tool (Jekyll) makes the pages and publishes the site folder's files too.
        candidates.append(settings.site_dir / candidates[0].relative_to(layout.static_dir))
    if not candidates:
        return None
    for candidate in candidates:
        published = not settings.pages.enabled or assets.published_relpath(layout, candidate, {})
        if published and _exists(exists, candidate):
            return None
    return [candidate.relative_to(settings.site_dir).as_posix() for candidate in candidates]


def _exists(exists: Callable[[Path], bool], path: Path) -> bool:
    try:
        return exists(path)
    except (OSError, ValueError):
        return False  # a name too long for the file system, a NUL byte: no such file


# --- math -------------------------------------------------------------------


def _math_findings(source: str, prose: _Prose) -> Iterator[Finding]:
    """Formulas that stay raw TeX: the converter cannot read them, or they are inside
    raw HTML, which Markdown (and so the converter) leaves alone."""
    formulas: list[tuple[int, int, str, str]] = []
    for block, visible in prose:
        for offset, formula in find_math(visible):
            tex, display = formula_parts(formula)
            if block.kind == "html":
                why = "math inside HTML is not converted"
            else:
                why = conversion_error(tex, display=display) or ""
            if why:
                line, column = block.position(offset)
                formulas.append((line, column, formula, why))
    if not formulas:
        return
    formulas.sort()
    line, column, formula, why = formulas[0]
    more = f" (and {len(formulas) - 1} more in this post)" if len(formulas) > 1 else ""
    yield _finding(
        source, line, column, "unrendered-math",
        f"math {_quote(' '.join(formula.split()), 40)} cannot be rendered ({_quote(why, 60)}), "
        f"so feeds, pages and email show it as written (raw TeX){more}",
    )


# --- footnotes ----------------------------------------------------------------

# Python-Markdown's footnote syntax: a definition starts a line (up to three spaces in).
_FOOTNOTE_DEFINITION = re.compile(r" {0,3}(\[\^([^\]]+)\]):")
_FOOTNOTE_REFERENCE = re.compile(r"\[\^([^\]]+)\]")
_FENCE_LINE = re.compile(r" *(`{3,}|~{3,})")


def _footnote_definitions(post: Post) -> Iterator[tuple[str, int, int]]:
    """(label, line, column) of each footnote definition outside fenced code."""
    fence: str | None = None
    for number, line in enumerate(post.body.split("\n")):
        opening = _FENCE_LINE.match(line)
        if fence is not None:
            if opening is not None and opening.group(1).startswith(fence) and \
                    not line.strip().strip(fence[0]):
                fence = None
            continue
        if opening is not None:
            fence = opening.group(1)
            continue
        match = _FOOTNOTE_DEFINITION.match(line)
        if match is not None:
            yield match.group(2), post.body_line + number, match.start(1) + 1


def _footnote_findings(post: Post, prose: _Prose) -> Iterator[Finding]:
    """Definitions no text refers to: the rendering leaves them out, numbering the
    others 1, 2, 3 (see :mod:`feedpub.markup`)."""
    definitions = list(_footnote_definitions(post))
    if not definitions:
        return
    referred = {match.group(1)
                for block, visible in prose if block.kind != "html"
                for match in _FOOTNOTE_REFERENCE.finditer(visible)}  # fmt: skip
    for label, line, column in definitions:
        if label not in referred:
            yield _finding(
                post.relpath, line, column, "unused-footnote",
                f"footnote [^{label}] is never referred to, so feeds, pages and email "
                f"leave it out; add [^{label}] where it belongs in the text, or remove it",
            )


# --- summary and size -------------------------------------------------------

_MARKUP = re.compile(r"!\[[^\]]*\]\([^)]*\)|<[^>]*>|[*_~`#>|\\-]")


def _has_prose(prose: _Prose) -> bool:
    """Whether the body has any text outside code, images and HTML."""
    return any(
        _MARKUP.sub("", visible).strip() for block, visible in prose if block.kind in _TEXT_KINDS
    )


def _summary_findings(post: Post, prose: _Prose, entry: Entry) -> Iterator[Finding]:
    if post.summary and post.summary.strip():
        return
    if entry.summary_text.strip() and _has_prose(prose):
        return
    yield _finding(
        post.relpath, 1, 1, "empty-summary",
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
        post.relpath, post.body_line, 1, "too-large",
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
