"""``feedpub check --fix``: repair what ``check`` finds when the repair is certain.

Pure functions over one post's source (its bytes, and the outline of its one
Markdown conversion) and what the catalog knows about the others (their
permalinks). Each fix is an :class:`Edit` of the file's text; whatever is not
certain is left as it is, and stays a finding.

Two kinds of finding are repaired:

``repeated-text``
    A single-line heading, paragraph or list item that is exactly two copies of
    the same run with nothing between (an export's doubling, Notion's above
    all) keeps one copy. Long passages are fixed on their own; short ones only
    in a post where other blocks are doubled the same way (an export doubles
    every block, so a deliberate "對不起對不起" comes out four times, and is
    left). In such a post a list item whose second copy lost its bold label
    (``Label text text``) keeps ``Label text``. A refrain with a space between,
    three copies, a block over several lines (a poem) or text in code is left.
``template-syntax``
    Jekyll's ``{{ site.url }}``, ``{{ site.baseurl }}``, ``{{ '/p' | relative_url }}``
    (and ``absolute_url``), ``{% raw %}``/``{% endraw %}``, ``{% post_url name %}``
    and ``{% highlight %}``; Hugo's ``{{< figure >}}``, ``{{< highlight >}}``,
    ``{{< baseurl >}}``, ``{{< ref >}}`` and ``{{< relref >}}``. Any other tag, an
    option that changes the result, or a post that cannot be named for certain is
    left.

Bytes outside a fix never change: the front matter, a BOM, CRLF line endings
and a missing final newline stay as they were, so a post's id and permalink do
not change either. Fixing is repeated until nothing changes (at most a few
passes), so a second ``--fix`` has nothing to do.
"""

from __future__ import annotations

import difflib
import html
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from uniseg.graphemecluster import grapheme_cluster_boundaries

from feedpub import content, markup
from feedpub.content import remove_xml_forbidden
from feedpub.errors import FeedpubError
from feedpub.outline import Outline, OutlineBlock, blank_code_spans

if TYPE_CHECKING:
    from feedpub.catalog import Catalog, Progress
    from feedpub.config import Settings
    from feedpub.lint import LintReport

FIXABLE = ("repeated-text", "template-syntax")
"""The codes ``--fix`` repairs (where it can); ``--select`` chooses among them."""

_BOM = b"\xef\xbb\xbf"
_PASSES = 4


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` of a post's file (BOM left out) with ``replacement``."""

    start: int
    end: int
    replacement: str
    code: str
    line: int
    column: int
    """Where the fixed text starts in the file, 1-based."""
    message: str
    """What the fix did, for the report; empty for the second half of a fix (the
    closing fence of a code block)."""


@dataclass(frozen=True)
class SiteLinks:
    """What a fix needs to know about the site: its URL and every post's permalink."""

    url: str
    """``site.url``: absolute, with a trailing slash."""
    permalinks: Mapping[str, str] = field(default_factory=dict)
    """Each post's path below ``content/`` (POSIX separators) -> its permalink."""

    @property
    def origin(self) -> str:
        """``https://example.com``: Jekyll's ``site.url``."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        """``/blog`` or empty: Jekyll's ``site.baseurl``."""
        return urlsplit(self.url).path.rstrip("/")

    def post(self, name: str) -> str | None:
        """The permalink of the one post ``name`` names (``2020-01-01-x``, ``posts/x.md``,
        ``/posts/x``), or None when no post or several match."""
        wanted = _post_key(name.strip().lstrip("/"))
        if not wanted or ".." in wanted.split("/"):
            return None
        found = {
            url for path, url in self.permalinks.items()
            if (key := _post_key(path)) == wanted or key.endswith("/" + wanted)
        }  # fmt: skip
        return found.pop() if len(found) == 1 else None

    def site_path(self, url: str) -> str:
        """The path of one of the site's URLs, base path included."""
        return urlsplit(url).path or "/"


def _post_key(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.suffix.lower() in (".md", ".markdown"):
        pure = pure.with_suffix("")
    if pure.name in ("index", "_index"):
        pure = pure.parent
    return pure.as_posix().strip("/") if str(pure) != "." else ""


@dataclass(frozen=True)
class PostFix:
    """One post file, before and after its fixes."""

    source: str
    """The post's path relative to the site folder."""
    before: bytes
    after: bytes
    edits: tuple[Edit, ...]
    """Every edit made, the first pass's positions in the original file."""
    left: tuple[str, ...] = ()
    """Why the file was not fixed at all, when it was not (a lone CR, …)."""

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        """A unified diff of the fix (``a/`` and ``b/`` paths, as git shows them)."""
        before = _lines(_decode(self.before))
        after = _lines(_decode(self.after))
        lines = difflib.unified_diff(
            before, after, fromfile=f"a/{self.source}", tofile=f"b/{self.source}"
        )
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                       for line in lines)  # fmt: skip


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _decode(data: bytes) -> str:
    return data.removeprefix(_BOM).decode("utf-8", errors="replace")


# --- one post ---------------------------------------------------------------------------


def fix_post(
    data: bytes,
    *,
    source: str,
    body_line: int,
    links: SiteLinks,
    outline: Outline | None = None,
    select: Collection[str] | None = None,
) -> PostFix:
    """The post file ``data`` with every certain fix made.

    ``body_line`` is where the body starts (:attr:`feedpub.content.Post.body_line`);
    ``outline`` is the catalog's outline of the file as it is (worked out when
    missing). ``select`` limits the fixes to some of :data:`FIXABLE`.
    """
    bom = data.startswith(_BOM)
    try:
        text = data.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError:
        return PostFix(source, data, data, (), ("not UTF-8",))
    if re.search(r"\r(?!\n)", text):
        return PostFix(source, data, data, (), ("a line ends with a lone CR",))
    if remove_xml_forbidden(text) != text:
        return PostFix(source, data, data, (), ("it has characters XML forbids",))
    codes = set(FIXABLE if select is None else select) & set(FIXABLE)
    newline = "\r\n" if "\r\n" in text else "\n"
    made: list[Edit] = []
    for number in range(_PASSES):
        if outline is None or number:
            outline = outline_of(text, body_line)
        edits = plan_fixes(text, outline, body_line=body_line, links=links, select=codes)
        if not edits:
            break
        text = apply_edits(text, edits, newline=newline)
        made += edits
    after = (_BOM if bom else b"") + text.encode("utf-8")
    if after[: _body_offset(after, body_line)] != data[: _body_offset(data, body_line)]:
        # Never reached by the planners; a guard all the same: a fix leaves the front
        # matter (and so the post's id and permalink) exactly as it was.
        return PostFix(source, data, data, (), ("a fix would touch the front matter",))
    return PostFix(source, data, after, tuple(made))


def _body_offset(data: bytes, body_line: int) -> int:
    offset = 0
    for _ in range(body_line - 1):
        found = data.find(b"\n", offset)
        if found < 0:
            return len(data)
        offset = found + 1
    return offset


def outline_of(text: str, body_line: int) -> Outline:
    """The outline of a post file's text whose body starts at ``body_line``."""
    lines = text.replace("\r\n", "\n").split("\n")
    body = "\n".join(lines[body_line - 1 :])
    return markup.render_with_outline(
        body, base_url="https://example.invalid/", id_prefix="", first_line=body_line
    )[1]


def apply_edits(text: str, edits: Iterable[Edit], *, newline: str = "\n") -> str:
    """``text`` with ``edits`` made (sorted, none overlapping); line breaks inside a
    replacement are written as ``newline``."""
    pieces: list[str] = []
    done = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.start < done:
            continue
        pieces += [text[done : edit.start], edit.replacement.replace("\n", newline)]
        done = edit.end
    pieces.append(text[done:])
    return "".join(pieces)


def plan_fixes(
    text: str,
    outline: Outline,
    *,
    body_line: int,
    links: SiteLinks,
    select: Collection[str] = FIXABLE,
) -> list[Edit]:
    """The certain fixes for a post file's ``text`` (BOM left out) and its outline,
    sorted and not overlapping."""
    source = _SourceText(text, body_line)
    edits: list[Edit] = []
    if "template-syntax" in select:
        edits += _template_edits(source, outline, links)
    if "repeated-text" in select:
        edits += _doubling_edits(source, outline)
    kept: list[Edit] = []
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if kept and edit.start < kept[-1].end:
            continue  # two fixes of the same text: the first one wins, the next pass sees
        kept.append(edit)
    return kept


class _SourceText:
    """The file's text with its lines' offsets, so outline positions become offsets."""

    def __init__(self, text: str, body_line: int) -> None:
        self.text = text
        self.body_line = body_line
        self.starts = [0]
        for match in re.finditer("\n", text):
            self.starts.append(match.end())
        self.body_start = self.starts[body_line - 1] if body_line <= len(self.starts) else len(text)

    def offset(self, line: int, column: int) -> int | None:
        if not 1 <= line <= len(self.starts):
            return None
        offset = self.starts[line - 1] + column - 1
        return offset if offset >= self.body_start else None

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) without its line break."""
        start = self.starts[number - 1]
        end = self.starts[number] if number < len(self.starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n")

    def line_span(self, number: int) -> tuple[int, int]:
        """(start, end) of line ``number`` with its line break."""
        start = self.starts[number - 1]
        end = self.starts[number] if number < len(self.starts) else len(self.text)
        return start, end

    def lines(self) -> int:
        return len(self.starts)


# --- doubled text -------------------------------------------------------------------------

_TEXT_KINDS = ("heading", "paragraph", "list item")
_LONG = 10
"""A doubled passage with at least this weight (letters and digits; a wide CJK
character counts two) is fixed on its own: nobody writes a phrase this long twice
with nothing between on purpose."""
_LONG_HEADING = 6
_SHORT = 5
"""The linter's own bound: shorter doublings are refrains (``la la``)."""
_EXPORT = 3
"""Doubled blocks that make a post look like an export, where short ones are fixed."""
_SEPARATORS = " \t:：,，、;；-–—"
_LINE_PREFIX = re.compile(
    r"[ \t>]*(?:#{1,6}[ \t]+|[-*+][ \t]+|\d{1,9}[.)][ \t]+)?(?:\[[ xX]\][ \t]+)?"
)
"""What may come before a block's text on its line: quote, heading and list markers."""
_LINE_SUFFIX = re.compile(r"[ \t]*(?:#+[ \t]*)?")
_HTML_HIDDEN = re.compile(r"<!--.*?-->|<(code|kbd|samp)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)


def _weight(text: str) -> int:
    return sum(
        2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text if char.isalnum()
    )  # fmt: skip


def _visible(text: str) -> str:
    blanked = blank_code_spans(text)
    return _HTML_HIDDEN.sub(lambda m: " " * len(m.group(0)), blanked)


def _grapheme_boundary(text: str, index: int) -> bool:
    return index in set(grapheme_cluster_boundaries(text))


def _halves(text: str) -> int | None:
    """The length of A when ``text`` is exactly A + A (not A said four times), the two
    copies read alike (code spans, links) and the seam is between two characters a
    reader sees as separate (not inside an emoji)."""
    size = len(text)
    if size < 2 or size % 2 or text[: size // 2] != text[size // 2 :]:
        return None
    half = size // 2
    if (text + text).find(text, 1) != half:
        return None  # said four, six… times: a refrain, or doubled twice
    passage = text[:half]
    if _visible(text) != _visible(passage) * 2 or not _grapheme_boundary(text, half):
        return None
    return half if _reads_alike(text, [passage, passage]) else None


def _reads_alike(text: str, parts: list[str]) -> bool:
    """Whether the inline Markdown ``text`` renders as its ``parts`` rendered one after
    the other: no link, code span or emphasis runs across a seam. (White space is left
    out of the comparison: a paragraph loses the space a part starts with.)"""
    whole = _inline_html(text)
    return whole == "".join(_inline_html(part) for part in parts) and "\x00" not in whole


def _inline_html(text: str) -> str:
    rendered = markup.render_markdown(text, base_url="https://example.invalid/", id_prefix="")
    match = re.fullmatch(r"<p>(.*)</p>", rendered, re.DOTALL)
    if match is None:
        return "\x00"  # not one paragraph: never alike
    return re.sub(r"\s+", "", match.group(1))


def _label_dropped(text: str) -> int | None:
    """For ``Label text text`` (a list item whose second copy lost its bold label, text
    starting with a space or a colon or comma): the length of ``Label text``."""
    for size in range(len(text) // 2, 0, -1):
        tail = text[-size:]
        head = text[: -2 * size]
        if (
            text[-2 * size : -size] == tail
            and tail[0] in _SEPARATORS
            and head.strip()
            and len(head) <= 60
            and _weight(_visible(tail)) >= _LONG
            and _grapheme_boundary(text, len(text) - size)
            and _visible(text) == _visible(head) + _visible(tail) * 2
            and _reads_alike(text, [head + tail, tail])
        ):
            return len(text) - size
    return None


@dataclass(frozen=True)
class _Doubled:
    block: OutlineBlock
    start: int
    text: str
    half: int | None
    """Where the second copy starts, when the whole text is doubled."""


def _doubling_edits(source: _SourceText, outline: Outline) -> list[Edit]:
    candidates: list[_Doubled] = []
    for block in outline.blocks:
        located = _single_line(source, block)
        if located is None:
            continue
        half = _halves(block.text)
        if half is not None and _weight(_visible(block.text[:half])) < _SHORT:
            half = None
        if half is not None or block.kind == "list item":
            candidates.append(_Doubled(block, located, block.text, half))
    doubled = [c for c in candidates if c.half is not None]
    export = len(doubled) >= _EXPORT
    edits: list[Edit] = []
    for item in candidates:
        keep = len(item.text)
        if item.half is not None:
            weight = _weight(_visible(item.text[: item.half]))
            bound = _LONG_HEADING if item.block.kind == "heading" else _LONG
            if weight < bound and not export:
                continue  # short, and alone in the post: maybe a refrain
            keep = item.half
        if export and item.block.kind == "list item":
            keep = _label_dropped(item.text[:keep]) or keep
        if keep == len(item.text):
            continue
        line, column = item.block.starts[0]
        edits.append(Edit(
            item.start + keep, item.start + len(item.text), "", "repeated-text", line, column,
            f"kept one copy of {_quote(item.text[:keep])}",
        ))  # fmt: skip
    return edits


def _single_line(source: _SourceText, block: OutlineBlock) -> int | None:
    """Where a one-line text block's text starts in the file, when the file's line holds
    exactly that text (after the block's markers) and nothing else."""
    if block.kind not in _TEXT_KINDS or "\n" in block.text or len(block.starts) != 1:
        return None
    line, column = block.starts[0]
    start = source.offset(line, column)
    if start is None:
        return None
    written = source.line(line)
    begin = column - 1
    if written[begin : begin + len(block.text)] != block.text:
        return None
    if not _LINE_PREFIX.fullmatch(written[:begin]):
        return None
    if not _LINE_SUFFIX.fullmatch(written[begin + len(block.text) :]):
        return None
    return start


def _quote(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())  # one line in the report, whatever the fix wrote
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


# --- Liquid and Hugo -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    line: int
    column: int
    start: int
    end: int
    text: str
    after: str
    """The block's text right after the match (for ``{{< baseurl >}}/``)."""
    whole_line: bool
    """The match is the whole of its line, at column 1."""


def _templates(source: _SourceText, outline: Outline) -> list[_Template]:
    """Every piece of template syntax ``check`` reports, placed in the file."""
    from feedpub.lint import template_matches, visible_text

    found: list[_Template] = []
    for block in outline.blocks:
        if block.kind in ("code", "rule"):
            continue
        visible = visible_text(block)
        for match in template_matches(visible):
            line, column = block.position(match.start())
            start = source.offset(line, column)
            if start is None or source.text[start : match.end() - match.start() + start] != (
                match.group(0)
            ):
                continue
            after = visible[match.end() : match.end() + 1]
            whole = column == 1 and source.line(line).rstrip(" \t") == match.group(0)
            found.append(_Template(line, column, start, start + len(match.group(0)),
                                   match.group(0), after, whole))  # fmt: skip
    found.sort(key=lambda t: t.start)
    return list({t.start: t for t in found}.values())


def _template_edits(source: _SourceText, outline: Outline, links: SiteLinks) -> list[Edit]:
    templates = _templates(source, outline)
    edits, inside = _highlight_edits(source, templates)
    previous: _Template | None = None
    previous_kind = ""
    for template in templates:
        if template.start in inside:
            continue
        adjacent = previous is not None and previous.end == template.start
        kind, replacement, note = _resolve(
            template, source, links, after_base=adjacent and previous_kind == "baseurl"
        )
        previous, previous_kind = template, kind
        if replacement is None:
            continue
        start, end = template.start, template.end
        if replacement == "" and template.whole_line:
            start, end = source.line_span(template.line)  # the tag's own line goes
        edits.append(Edit(
            start, end, replacement, "template-syntax", template.line, template.column,
            f"{_quote(template.text, 60)} -> {_quote(replacement or '(removed)', 60)}{note}",
        ))  # fmt: skip
    return edits


_SITE_VARIABLE = re.compile(r"\{\{\s*site\.(url|baseurl)\s*\}\}")
_URL_FILTER = re.compile(
    r"\{\{\s*(['\"])([^'\"{}|\s]*)\1\s*\|\s*(relative_url|absolute_url)\s*\}\}"
)
_RAW = re.compile(r"\{%\s*(raw|endraw)\s*%\}")
_POST_URL = re.compile(r"\{%\s*post_url\s+([^\s%#?]+)\s*%\}")
_HUGO_REF = re.compile(
    r"\{\{([<%])\s*(ref|relref)\s+(?:\"([^\"#?]+)\"|([^\s\"'#?<>%]+))\s*([>%])\}\}"
)
_HUGO_BASEURL = re.compile(r"\{\{<\s*baseurl\s*>\}\}")
_HUGO_FIGURE = re.compile(r"\{\{<\s*figure\s+(.*?)\s*/?>\}\}")
_ATTRIBUTE = re.compile(r"\s*([A-Za-z]+)=(?:\"([^\"\\]*)\"|`([^`]*)`)")


def _resolve(
    template: _Template, source: _SourceText, links: SiteLinks, *, after_base: bool
) -> tuple[str, str | None, str]:
    """(kind, replacement or None when not certain, a note for the report)."""
    text = template.text
    if match := _SITE_VARIABLE.fullmatch(text):
        if match.group(1) == "url":
            return "url", links.origin, ""
        return "baseurl", links.base_path, ""
    if match := _URL_FILTER.fullmatch(text):
        path = match.group(2)
        relative = links.base_path + "/" + path.lstrip("/")
        if match.group(3) == "absolute_url":
            return "url", links.origin + relative, ""
        return "url", relative, ""
    if _RAW.fullmatch(text):
        return "raw", "", ""
    if match := _POST_URL.fullmatch(text):
        url = links.post(match.group(1))
        if url is None:
            return "post", None, ""
        path = links.site_path(url)
        if after_base and links.base_path and path.startswith(links.base_path + "/"):
            path = path[len(links.base_path) :]  # Jekyll: {{ site.baseurl }}{% post_url %}
        return "post", path, ""
    if match := _HUGO_REF.fullmatch(text):
        if {"<": ">", "%": "%"}[match.group(1)] != match.group(5):
            return "ref", None, ""  # {{< ref "x" %}}: not Hugo's syntax
        url = links.post(match.group(3) or match.group(4) or "")
        if url is None:
            return "ref", None, ""
        return "ref", url if match.group(2) == "ref" else links.site_path(url), ""
    if _HUGO_BASEURL.fullmatch(text):
        return "url", links.url.rstrip("/") if template.after == "/" else links.url, ""
    if match := _HUGO_FIGURE.fullmatch(text):
        return "figure", _figure(match.group(1), template, source), ""
    return "", None, ""


def _figure(arguments: str, template: _Template, source: _SourceText) -> str | None:
    """Markdown (or, with a caption, HTML) for ``{{< figure … >}}``; None when an
    argument is not one feedpub can say the same way."""
    values: dict[str, str] = {}
    position = 0
    while position < len(arguments):
        match = _ATTRIBUTE.match(arguments, position)
        if match is None:
            return None
        name = match.group(1)
        if name in values or name not in ("src", "alt", "caption", "link"):
            return None  # width, class, title, attr…: the figure would not look the same
        values[name] = match.group(2) if match.group(2) is not None else match.group(3)
        position = match.end()
    src = values.get("src", "")
    link = values.get("link")
    if not src or any(_unsafe_url(url) for url in (src, link) if url is not None):
        return None
    caption = values.get("caption")
    alt = values.get("alt")
    if caption is not None and re.search(r"[*_`\[\]\\<>{}]", caption):
        return None  # Hugo renders a caption as Markdown; only plain text is certain
    if alt is None:
        alt = caption or ""  # Hugo's own fallback
    if not caption:
        if re.search(r"[\[\]\\`]", alt):
            return None
        image = f"![{alt}]({src})"
        return f"[{image}]({link})" if link else image
    if not (template.whole_line and _stands_alone(source, template.line)):
        return None
    image = f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
    if link:
        image = f'<a href="{html.escape(link)}">{image}</a>'
    caption = html.escape(caption, quote=False)
    return f"<figure>\n{image}\n<figcaption>{caption}</figcaption>\n</figure>"


def _unsafe_url(url: str) -> bool:
    return not url or bool(re.search(r"[\s()<>\"'\\]", url)) or url.lower().startswith(
        ("javascript:", "vbscript:", "data:")
    )


def _stands_alone(source: _SourceText, line: int) -> bool:
    """Whether the lines around ``line`` are blank (or the body's edges)."""
    return _stands_alone_edge(source, line, -1) and _stands_alone_edge(source, line, 1)


_JEKYLL_OPEN = re.compile(r"\{%\s*highlight\s+([\w+#.-]+)((?:\s+[^%]*?)?)\s*%\}")
_JEKYLL_CLOSE = re.compile(r"\{%\s*endhighlight\s*%\}")
_HUGO_OPEN = re.compile(r"\{\{<\s*highlight\s+([\w+#.-]+)((?:\s+[^>]*?)?)\s*>\}\}")
_HUGO_CLOSE = re.compile(r"\{\{<\s*/highlight\s*>\}\}")
_BACKTICK_RUN = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.MULTILINE)


def _highlight_edits(
    source: _SourceText, templates: list[_Template]
) -> tuple[list[Edit], set[int]]:
    """Fences for ``{% highlight %}…{% endhighlight %}`` and ``{{< highlight >}}…`` that
    stand on lines of their own, blank lines around; and the starts of every template
    inside them (code now, not for other fixes)."""
    edits: list[Edit] = []
    inside: set[int] = set()
    for index, opening in enumerate(templates):
        if opening.start in inside or not opening.whole_line:
            continue
        for open_re, close_re in ((_JEKYLL_OPEN, _JEKYLL_CLOSE), (_HUGO_OPEN, _HUGO_CLOSE)):
            match = open_re.fullmatch(opening.text)
            if match is None:
                continue
            closing = next(
                (t for t in templates[index + 1 :] if close_re.fullmatch(t.text)), None
            )
            if closing is None or not closing.whole_line:
                break
            if not (_stands_alone_edge(source, opening.line, -1)
                    and _stands_alone_edge(source, closing.line, 1)):  # fmt: skip
                break
            body_start, _ = source.line_span(opening.line + 1)
            code = source.text[body_start : source.line_span(closing.line)[0]]
            runs = [len(m.group(1)) for m in _BACKTICK_RUN.finditer(code) if m.group(1)[0] == "`"]
            fence = "`" * max(3, *(run + 1 for run in runs)) if runs else "```"
            options = match.group(2).strip()
            note = f" (options dropped: {options})" if options else ""
            edits.append(Edit(
                opening.start, opening.end, fence + match.group(1), "template-syntax",
                opening.line, opening.column,
                f"{_quote(opening.text, 60)} … {_quote(closing.text)} -> a fenced code block{note}",
            ))  # fmt: skip
            edits.append(Edit(closing.start, closing.end, fence, "template-syntax",
                              closing.line, closing.column, ""))  # fmt: skip
            inside.update(t.start for t in templates if opening.start <= t.start <= closing.start)
            break
    return edits, inside


def _stands_alone_edge(source: _SourceText, line: int, step: int) -> bool:
    neighbour = line + step
    if neighbour < source.body_line or neighbour > source.lines():
        return True
    return not source.line(neighbour).strip()


# --- the site -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixRun:
    """What ``feedpub check --fix`` (or ``--diff``) did."""

    fixes: tuple[PostFix, ...]
    """The posts that changed (or would), by path."""
    report: LintReport
    """What is left: the findings after the fixes were written (with ``write=False``,
    the findings as they are)."""
    written: bool

    @property
    def edits(self) -> int:
        return sum(1 for fix in self.fixes for edit in fix.edits if edit.message)


def site_links(catalog: Catalog) -> SiteLinks:
    """The site's URL and the permalink of every readable post (drafts and future ones
    too: a link to them works once they are out)."""
    content_dir = catalog.settings.content_dir.relative_to(catalog.settings.site_dir).as_posix()
    prefix = content_dir.rstrip("/") + "/"
    return SiteLinks(
        catalog.settings.site.url,
        {ref.source.removeprefix(prefix): ref.url for ref in catalog.readable},
    )


def plan_site(catalog: Catalog, *, select: Collection[str] | None = None) -> list[PostFix]:
    """The fixes for every readable post with a fixable finding, each post read once."""
    settings = catalog.settings
    links = site_links(catalog)
    wanted = set(FIXABLE if select is None else select)
    catalog.analyses(catalog.readable)  # a post that cannot be converted leaves `readable`
    refs = catalog.readable
    fixes: list[PostFix] = []
    for ref, analysis in zip(refs, catalog.analyses(refs), strict=True):
        if not wanted & {finding.code for finding in analysis.findings}:
            continue
        path = catalog.settings.site_dir / ref.source
        try:
            post = content.read_post(path, site=settings.site, site_dir=settings.site_dir)
            data = path.read_bytes()
        except (FeedpubError, OSError):
            continue  # changed since the scan: the report after the fixes says how
        fix = fix_post(
            data, source=ref.source, body_line=post.body_line, links=links,
            outline=analysis.outline, select=wanted,
        )
        if fix.changed:
            fixes.append(fix)
    return sorted(fixes, key=lambda fix: fix.source)


def write_fixes(settings: Settings, fixes: Iterable[PostFix]) -> list[PostFix]:
    """Write each fixed post atomically; a post that changed since it was read is left
    alone. Returns the posts written."""
    from feedpub.writer import atomic_write

    written: list[PostFix] = []
    for fix in fixes:
        path = settings.site_dir / fix.source
        if path.read_bytes() != fix.before:
            continue  # edited meanwhile: the next check sees it again
        if atomic_write(path, fix.after):
            written.append(fix)
    return written


def fix_site(
    settings: Settings,
    now: datetime,
    *,
    select: Collection[str] | None = None,
    write: bool = True,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> FixRun:
    """``feedpub check --fix`` from Python (``write=False``: ``--diff``): fix every post
    where the fix is certain, then scan the site again for what is left."""
    from feedpub.catalog import load_catalog

    catalog = load_catalog(settings, now, jobs=jobs, progress=progress)
    fixes = plan_site(catalog, select=select)
    if not write:
        return FixRun(tuple(fixes), catalog.lint(), written=False)
    written = write_fixes(settings, fixes)
    report = load_catalog(settings, now, jobs=jobs).lint() if written else catalog.lint()
    return FixRun(tuple(written), report, written=True)


def iter_messages(fixes: Iterable[PostFix]) -> Iterator[str]:
    """One line per edit: ``path:line:column: fixed code: what was done``."""
    for fix in fixes:
        for edit in fix.edits:
            if edit.message:
                yield f"{fix.source}:{edit.line}:{edit.column}: fixed {edit.code}: {edit.message}"
