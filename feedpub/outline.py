"""The outline of a post: what ``check`` needs from the one Markdown conversion that
renders it.

:func:`feedpub.markup.render_with_outline` registers :class:`OutlineRecorder` on its
Python-Markdown instance. The recorder reads the block tree before inline
processing (so block texts are the inline Markdown as Python-Markdown saw it),
notes which inline pattern made each link (reference-style ones included) before
the sanitizer strips anything, and recovers each line and column by searching the
source forward, never by parsing it a second time. Lint rules read only this, so
``check`` and the rendered HTML agree by construction.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from xml.etree.ElementTree import Element as XmlElement  # Python-Markdown's tree

import markdown
from markdown.extensions import Extension
from markdown.inlinepatterns import BACKTICK_RE, BacktickInlineProcessor
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor
from markdown.util import HTML_PLACEHOLDER_RE, HtmlStash

from feedpub.content import remove_xml_forbidden

BlockKind = Literal["heading", "paragraph", "list item", "table", "html", "code", "rule"]
LinkKind = Literal["inline", "reference", "autolink", "html", "definition"]


@dataclass(frozen=True)
class OutlineBlock:
    """A leaf block as Python-Markdown parsed it."""

    kind: BlockKind
    line: int
    """First line in the source file, 1-based."""
    text: str
    """Headings, paragraphs and list items: the inline Markdown as Python-Markdown saw it
    before inline processing (container markers and indentation removed); tables: one
    line per cell; HTML: the raw HTML; code and rules: empty."""
    starts: tuple[tuple[int, int], ...]
    """(line, column) in the file, 1-based, of the first character of each line of
    :attr:`text`, recovered from the source."""

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column) in the file of a character offset into :attr:`text`."""
        if not self.starts:
            return self.line, 1
        for (line, column), part in zip(self.starts, self.text.split("\n"), strict=False):
            if offset <= len(part):
                return line, max(1, column + offset)
            offset -= len(part) + 1
        line, column = self.starts[-1]
        return line, max(1, column + len(self.text.rpartition("\n")[2]))


@dataclass(frozen=True)
class OutlineLink:
    """A link or image as Python-Markdown resolved it, or a reference definition."""

    kind: LinkKind
    """``inline`` ``[t](u)``, ``reference`` ``[t][r]`` (its target is the definition's),
    ``autolink`` ``<u>``, ``html`` ``<a>``/``<img>``, ``definition`` ``[r]: u``."""
    image: bool
    target: str
    """href or src as Python-Markdown resolved it (before sanitizing)."""
    text: str | None
    """Link text or alt text; None when there is none (an ``<img>`` without ``alt``,
    an autolink, a definition)."""
    line: int
    column: int
    """Where the link starts in the file."""
    target_line: int
    target_column: int
    """Where its target is written in the file."""


@dataclass(frozen=True)
class Outline:
    """What ``check`` needs from a post's one Markdown conversion."""

    blocks: tuple[OutlineBlock, ...]
    """Leaf blocks in source order (footnotes last, where they render)."""
    links: tuple[OutlineLink, ...]
    """Sorted by position."""

    def to_json(self) -> dict[str, Any]:
        return {
            "blocks": [[b.kind, b.line, b.text, [list(s) for s in b.starts]] for b in self.blocks],
            "links": [[link.kind, link.image, link.target, link.text, link.line, link.column,
                       link.target_line, link.target_column] for link in self.links],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outline:
        return cls(
            blocks=tuple(
                OutlineBlock(kind, line, text, tuple((s[0], s[1]) for s in starts))
                for kind, line, text, starts in data["blocks"]
            ),
            links=tuple(OutlineLink(*fields) for fields in data["links"]),
        )


_BACKTICKS = BacktickInlineProcessor(BACKTICK_RE)


def blank_code_spans(text: str) -> str:
    """``text`` with its code spans blanked out (same length, same line breaks), found by
    Python-Markdown's own backtick processor, the first inline pattern to run."""
    if "`" not in text:
        return text  # most blocks: no span to find, and the search costs the most
    pieces: list[str] = []
    done = position = 0
    while match := _BACKTICKS.compiled_re.search(text, position):
        element, start, end = _BACKTICKS.handleMatch(match, text)
        if start is None or end is None:
            break
        if isinstance(element, XmlElement):
            pieces += [text[done:start], _blank(text[start:end])]
            done = end
        position = max(end, position + 1)
    pieces.append(text[done:])
    return "".join(pieces)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_PLACEHOLDERS = re.compile("\x02[^\x03]*\x03")
"""Python-Markdown's stash placeholders; the footnotes extension leaves one after the
text of a footnote before inline processing."""
_INLINE_KINDS: dict[str, LinkKind] = {
    "link": "inline", "image_link": "inline", "reference": "reference",
    "image_reference": "reference", "short_reference": "reference",
    "short_image_ref": "reference", "autolink": "autolink", "automail": "autolink",
}  # fmt: skip


@dataclass
class _Leaf:
    """An element whose text is one leaf block's inline content (or a table cell's)."""

    element: XmlElement
    block: int
    offset: int
    """Where the element's text starts in the block's text."""
    blocks_inside: set[int]
    """ids of child elements that are blocks of their own (a tight item's nested list)."""


@dataclass
class _RawBlock:
    kind: BlockKind
    parts: list[str]
    """The lines (or table cells) of the block's text."""
    fence: bool = False


class OutlineRecorder(Extension):
    """Watches one conversion: the block tree before inline processing, which inline
    pattern made each link, and where preprocessors stashed code and HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.reset()

    def reset(self) -> None:
        self.fences = 0
        """Stash entries before this index are fenced code."""
        self.blocks: list[_RawBlock] = []
        self.leaves: list[_Leaf] = []
        self.link_kinds: dict[XmlElement, LinkKind] = {}

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.registerExtension(self)
        # After SuperFences (25) stashed fenced code, before raw HTML blocks (20).
        md.preprocessors.register(_CountFences(md, self), "feedpub-fences", 22)
        # After footnotes (50) moved their text to the end, before indented code is
        # highlighted (30) and before inline processing (20).
        md.treeprocessors.register(_RecordBlocks(md, self), "feedpub-blocks", 35)
        for name, kind in _INLINE_KINDS.items():
            self._watch(md.inlinePatterns[name], kind)

    def _watch(self, processor: Any, kind: LinkKind) -> None:
        original = processor.handleMatch

        def handle_match(match: re.Match[str], data: str) -> Any:
            result = original(match, data)
            if self.active and isinstance(result[0], XmlElement):
                self.link_kinds[result[0]] = kind
            return result

        processor.handleMatch = handle_match

    def outline(self, md: markdown.Markdown, body: str, first_line: int) -> Outline:
        source = _Source(body, first_line)
        blocks = [self._locate(block, source) for block in self.blocks]
        links: list[OutlineLink] = []
        for leaf in self.leaves:
            links += _leaf_links(leaf, blocks[leaf.block], md.htmlStash, self.link_kinds)
        for block in blocks:
            if block.kind == "html":
                text = _HTML_COMMENT.sub(lambda m: _blank(m.group(0)), block.text)
                links += _html_links(block, text, 0, len(text))
        links += _definitions(md, source)
        links.sort(key=lambda link: (link.line, link.column))
        return Outline(tuple(blocks), tuple(links))

    def _locate(self, block: _RawBlock, source: _Source) -> OutlineBlock:
        if block.kind in ("code", "rule") and not block.parts:
            line = source.skip_fence() if block.fence else source.skip_rule()
            return OutlineBlock(block.kind, line, "", ())
        starts = tuple(source.find(part) for part in block.parts)
        if block.kind == "code":
            return OutlineBlock("code", starts[0][0], "", ())
        return OutlineBlock(block.kind, starts[0][0], "\n".join(block.parts), starts)


class _CountFences(Preprocessor):
    def __init__(self, md: markdown.Markdown, recorder: OutlineRecorder) -> None:
        super().__init__(md)
        self.recorder = recorder

    def run(self, lines: list[str]) -> list[str]:
        self.recorder.fences = len(self.md.htmlStash.rawHtmlBlocks)
        return lines


class _RecordBlocks(Treeprocessor):
    def __init__(self, md: markdown.Markdown, recorder: OutlineRecorder) -> None:
        super().__init__(md)
        self.recorder = recorder

    def run(self, root: XmlElement) -> None:
        if self.recorder.active:
            self._walk(root, in_item=False)

    def _walk(self, parent: XmlElement, *, in_item: bool) -> None:
        for child in parent:
            tag = child.tag
            if tag in _HEADINGS:
                self._leaf("heading", child)
            elif tag == "p":
                self._paragraph(child, in_item=in_item)
            elif tag == "li":
                if (child.text or "").strip():
                    self._leaf("list item", child)
                # A footnote is a list item only in the HTML the extension writes.
                self._walk(child, in_item=not (child.get("id") or "").startswith("fn:"))
            elif tag == "table":
                self._table(child)
            elif tag == "pre":
                code = "".join(child.itertext()).strip("\n")
                self._add(_RawBlock("code", [line for line in code.split("\n") if line.strip()]))
            elif tag == "hr":
                if "footnote" not in (parent.get("class") or ""):  # the extension's own
                    self._add(_RawBlock("rule", []))
            else:  # blockquote, ul, ol, the footnotes' div
                self._walk(child, in_item=in_item)

    def _add(self, block: _RawBlock) -> int:
        self.recorder.blocks.append(block)
        return len(self.recorder.blocks) - 1

    def _leaf(self, kind: BlockKind, element: XmlElement) -> None:
        text = _PLACEHOLDERS.sub("", element.text or "")
        index = self._add(_RawBlock(kind, text.split("\n")))
        self.recorder.leaves.append(_Leaf(element, index, 0, {id(c) for c in element}))

    def _paragraph(self, element: XmlElement, *, in_item: bool) -> None:
        stashed = HTML_PLACEHOLDER_RE.fullmatch((element.text or "").strip())
        if stashed is None or len(element):
            self._leaf("list item" if in_item else "paragraph", element)
            return
        index = int(stashed.group(1))
        if index < self.recorder.fences:
            self._add(_RawBlock("code", [], fence=True))
            return
        raw = self.md.htmlStash.rawHtmlBlocks[index]
        html = raw if isinstance(raw, str) else ""
        self._add(_RawBlock("html", html.strip("\n").split("\n")))

    def _table(self, table: XmlElement) -> None:
        cells = [cell for row in table.iter("tr") for cell in row]
        parts = [_PLACEHOLDERS.sub("", cell.text or "") for cell in cells]
        index = self._add(_RawBlock("table", parts))
        offset = 0
        for cell, part in zip(cells, parts, strict=True):
            self.recorder.leaves.append(_Leaf(cell, index, offset, set()))
            offset += len(part) + 1


class _Source:
    """The body's lines as Python-Markdown read them (tabs expanded, characters XML
    forbids removed), searched forward from a cursor to place what it parsed."""

    def __init__(self, body: str, first_line: int) -> None:
        self.first_line = first_line
        self.raw = body.split("\n")
        self.lines = [remove_xml_forbidden(line).expandtabs(4) for line in self.raw]
        self.line = 0
        self.column = 0

    def find(self, part: str) -> tuple[int, int]:
        """(line, column) in the file of ``part``'s first character: the next place where
        its text is written, else the first anywhere; the cursor moves past it."""
        needle = part.strip()
        lead = len(part) - len(part.lstrip())
        if not needle:
            return self.first_line + min(self.line, len(self.raw) - 1), 1
        found = self._search(needle, self.line, self.column) or self._search(needle, 0, 0)
        if found is None:
            return self.first_line + min(self.line, len(self.raw) - 1), 1
        number, index = found
        self.line, self.column = number, index + len(needle)
        return self.first_line + number, self.raw_column(number, index) - lead + 1

    def _search(self, needle: str, line: int, column: int) -> tuple[int, int] | None:
        for number in range(line, len(self.lines)):
            index = self.lines[number].find(needle, column if number == line else 0)
            if index >= 0:
                return number, index
        return None

    def raw_column(self, number: int, index: int) -> int:
        """The column in the file's line of column ``index`` of the line as read."""
        raw = self.raw[number]
        if raw == self.lines[number]:
            return index
        for column in range(len(raw)):
            if len(remove_xml_forbidden(raw[:column]).expandtabs(4)) >= index:
                return column
        return len(raw)

    def _next_line(self, pattern: re.Pattern[str]) -> int | None:
        for number in range(self.line, len(self.lines)):
            if pattern.match(self.lines[number]):
                return number
        return None

    def skip_fence(self) -> int:
        """The file line of the next code fence; the cursor moves past its closing fence."""
        opening = self._next_line(_FENCE)
        if opening is None:
            return self.first_line + min(self.line, len(self.raw) - 1)
        match = _FENCE.match(self.lines[opening])
        assert match is not None
        self.line, self.column = opening + 1, 0
        closing = self._next_line(re.compile(rf"^[ >]*{re.escape(match.group(1))}\s*$"))
        self.line = (closing if closing is not None else opening) + 1
        return self.first_line + opening

    def skip_rule(self) -> int:
        rule = self._next_line(_RULE)
        if rule is None:
            return self.first_line + min(self.line, len(self.raw) - 1)
        self.line, self.column = rule + 1, 0
        return self.first_line + rule


_FENCE = re.compile(r"^[ >]*(`{3,}|~{3,})")
_RULE = re.compile(r"^[ >]*([-*_])(?:[ ]*\1){2,}[ ]*$")


def _leaf_links(
    leaf: _Leaf,
    block: OutlineBlock,
    stash: HtmlStash,
    link_kinds: dict[XmlElement, LinkKind],
) -> Iterator[OutlineLink]:
    """The links Python-Markdown made inside one leaf, placed in the block's source text.

    They come in document order, so each is looked for after the one before it, in
    the text with code spans blanked: ``[`` or ``![`` for Markdown links, ``<`` for
    autolinks, the tag itself for raw HTML (which the inline processor stashed).
    """
    text = blank_code_spans(block.text)
    end = text.find("\n", leaf.offset) if block.kind == "table" else len(text)
    end = len(text) if end < 0 else end
    cursor = leaf.offset
    starts: dict[int, int] = {}
    for event, item in _document_order(leaf.element, leaf.blocks_inside, stash):
        if isinstance(item, str):  # a stashed piece of raw HTML
            start = _find_unescaped(text, item, cursor, end)
            if start is not None:
                cursor = start + len(item)
                yield from _html_links(block, text, start, min(end, start + len(item)))
            continue
        kind = link_kinds.get(item)
        if kind is None:
            continue  # made by an extension (footnote references), not written
        image = item.tag == "img"
        if event == "close":
            # Past the whole link, so the next one is not looked for inside it.
            if id(item) in starts:
                cursor = max(cursor, _syntax_end(text, starts[id(item)] + image, end, kind))
            continue
        needle = "<" if kind == "autolink" else "![" if image else "["
        start = _find_unescaped(text, needle, cursor, end)
        if start is None:
            start = leaf.offset
        else:
            starts[id(item)] = start
            cursor = start + len(needle)
        target = item.get("src" if image else "href") or ""
        if kind == "inline":
            # The target is written after the link text's closing bracket.
            after = _matching(text, start + image, end, "[", "]") or start
            written = text.find(target, after, end) if target else -1
            if written < 0:
                written = text.find("](", start, end)
                written = written + 2 if written >= 0 else start
        else:
            written = start + (kind == "autolink")
        line, column = block.position(start)
        target_line, target_column = block.position(written)
        yield OutlineLink(kind, image, target, _link_text(item, kind), line, column,
                          target_line, target_column)  # fmt: skip


def _document_order(
    element: XmlElement, skip: set[int], stash: HtmlStash
) -> Iterator[tuple[str, XmlElement | str]]:
    """("open"/"close", link or image) and ("html", stashed raw HTML) inside ``element``,
    in document order."""
    yield from _stashed(element.text, stash)
    for child in element:
        if id(child) in skip:
            continue
        link = child.tag in ("a", "img")
        if link:
            yield "open", child
        yield from _document_order(child, set(), stash)
        if link:
            yield "close", child
        yield from _stashed(child.tail, stash)


def _syntax_end(text: str, bracket: int, end: int, kind: LinkKind) -> int:
    """Where the link whose text opens with the ``[`` at ``bracket`` (or whose ``<``,
    for an autolink) ends: past ``](target)``, ``][label]`` or ``]``."""
    if kind == "autolink":
        close = text.find(">", bracket, end)
        return close + 1 if close >= 0 else bracket + 1
    label_end = _matching(text, bracket, end, "[", "]")
    if label_end is None:
        return bracket + 1
    after = text[label_end + 1 : label_end + 2]
    if after in ("(", "["):
        closing = _matching(text, label_end + 1, end, after, ")" if after == "(" else "]")
        return closing + 1 if closing is not None else label_end + 1
    return label_end + 1


def _matching(text: str, start: int, end: int, opening: str, closing: str) -> int | None:
    depth = 0
    index = start
    while index < end:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def _stashed(text: str | None, stash: HtmlStash) -> Iterator[tuple[str, str]]:
    if not text or "\x02" not in text:
        return
    for match in HTML_PLACEHOLDER_RE.finditer(text):
        index = int(match.group(1))
        if index < len(stash.rawHtmlBlocks):
            raw = stash.rawHtmlBlocks[index]
            if isinstance(raw, str):
                yield "html", raw


def _find_unescaped(text: str, needle: str, start: int, end: int) -> int | None:
    """Where ``needle`` next occurs in ``text[start:end]`` without a backslash before it."""
    while (found := text.find(needle, start, end)) >= 0:
        backslashes = len(text[:found]) - len(text[:found].rstrip("\\"))
        if backslashes % 2 == 0:
            return found
        start = found + 1
    return None


def _link_text(element: XmlElement, kind: LinkKind) -> str | None:
    if element.tag == "img":
        return element.get("alt")
    if kind == "autolink":
        return None
    text = _PLACEHOLDERS.sub("", "".join(element.itertext()))
    # An image is something to click on, even one without alt text.
    return text + " image" if element.find(".//img") is not None else text


_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_TAG = re.compile(r"<(a|img)\b([^>]*)>", re.IGNORECASE)
_HTML_ATTRIBUTE = re.compile(
    r"([A-Za-z_:][\w:.-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?", re.DOTALL
)
_HTML_CLOSING_A = re.compile(r"</a\s*>", re.IGNORECASE)
_HTML_ANY_TAG = re.compile(r"<[^>]*>")


def _html_links(block: OutlineBlock, text: str, start: int, end: int) -> Iterator[OutlineLink]:
    """``<a href>`` and ``<img src>`` tags in ``text[start:end]`` (raw HTML of ``block``)."""
    for match in _HTML_TAG.finditer(text, start, end):
        name = match.group(1).lower()
        attributes: dict[str, tuple[str, int]] = {}
        for attribute in _HTML_ATTRIBUTE.finditer(match.group(2)):
            value = attribute.group(2) or ""
            quoted = value[:1] in ("'", '"')
            attributes[attribute.group(1).lower()] = (
                html_lib.unescape(value[1:-1] if quoted else value),
                match.start(2) + attribute.start(2) + quoted,
            )
        key = "src" if name == "img" else "href"
        if key not in attributes:
            continue
        target, target_offset = attributes[key]
        if name == "img":
            alt = attributes.get("alt")
            text_or_alt = alt[0] if alt else None
        else:
            closing = _HTML_CLOSING_A.search(block.text, match.end())
            inner = block.text[match.end() : closing.start()] if closing else "…"
            text_or_alt = "image" if "<img" in inner.lower() else _HTML_ANY_TAG.sub("", inner)
        line, column = block.position(match.start())
        target_line, target_column = block.position(target_offset)
        yield OutlineLink("html", name == "img", target, text_or_alt, line, column,
                          target_line, target_column)  # fmt: skip


_DEFINITION_LINE = re.compile(r"^[ >]*\[([^\[\]]*)\]:[ ]*(<?)(\S*)")


def _definitions(md: markdown.Markdown, source: _Source) -> Iterator[OutlineLink]:
    """The reference definitions Python-Markdown took, at the lines that define them."""
    references: dict[str, tuple[str, str]] = getattr(md, "references", {})
    if not references:
        return
    written: dict[str, list[tuple[int, int, int, str]]] = {}
    for number, text in enumerate(source.lines):
        match = _DEFINITION_LINE.match(text)
        if match:
            label = match.group(1).strip().lower()
            target_at = match.start(3) if match.group(3) else match.start(1)
            written.setdefault(label, []).append(
                (number, match.start(1) - 1, target_at, match.group(3).rstrip(">"))
            )
    for label, (target, _title) in references.items():
        places = written.get(label)
        if not places:
            continue
        number, start, target_at, _ = next(
            (place for place in places if place[3] == target), places[-1]
        )
        line = source.first_line + number
        yield OutlineLink("definition", False, target, None, line,
                          source.raw_column(number, start) + 1, line,
                          source.raw_column(number, target_at) + 1)  # fmt: skip


