"""Markdown -> HTML that feed readers and mail clients keep; summaries; plain text.

Pure functions. The one piece of state is a Markdown instance cached per thread
(so per worker process too), reset before every document.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit
from xml.etree.ElementTree import Element as XmlElement  # Python-Markdown's tree

import markdown
import nh3
import pygments  # type: ignore[import-untyped, unused-ignore]
from lxml import etree
from lxml import html as lxml_html
from markdown.extensions import Extension
from markdown.extensions.footnotes import FootnoteExtension
from markdown.extensions.toc import slugify_unicode
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped, unused-ignore]
from pygments.lexers import TextLexer, get_lexer_by_name  # type: ignore[import-untyped, unused-ignore]
from pygments.styles import get_style_by_name  # type: ignore[import-untyped, unused-ignore]
from pygments.token import Whitespace  # type: ignore[import-untyped, unused-ignore]
from pygments.util import ClassNotFound  # type: ignore[import-untyped, unused-ignore]
from uniseg.graphemecluster import (
    GraphemeClusterBreak,
    grapheme_cluster_boundaries,
    grapheme_cluster_break,
)

from feedpub.content import remove_xml_forbidden
from feedpub.outline import Outline, OutlineRecorder

__all__ = [
    "html_to_text",
    "render_markdown",
    "render_with_outline",
    "sanitize_html",
    "split_excerpt",
    "summarize_html",
]

# --- Markdown ---------------------------------------------------------------


def _highlight_fence(
    source: str, language: str, class_name: str, options: Any, md: Any, **kwargs: Any
) -> str:
    """SuperFences formatter: Pygments with inline styles, lexer and formatter reused.

    pymdownx.highlight builds a new formatter (and looks the lexer up) for every
    block, which costs more than the rest of a post's conversion.
    """
    return str(pygments.highlight(source, _lexer(language), _code_formatter()))


@functools.lru_cache(maxsize=256)
def _lexer(language: str) -> Any:
    try:
        return get_lexer_by_name(language or "text")
    except ClassNotFound:
        return TextLexer()


@functools.lru_cache(maxsize=1)
def _code_formatter() -> Any:
    return HtmlFormatter(noclasses=True, wrapcode=True, cssclass="highlight",
                         style=_code_style())


def _code_style() -> Any:
    """Pygments' default colours, but white space is not coloured.

    The default style greys white space tokens, so a line break and the next line's
    indentation became ``{\n<span style="color:#BBB">    </span>``: newsboat (2.21)
    drops such a line break and runs the lines of code together. Uncoloured white
    space stays in the text around it (``{\n    ``), which every reader keeps.
    """
    default = get_style_by_name("default")
    return type("CodeStyle", (default,), {"styles": {**default.styles, Whitespace: ""}})


class _DropUnreferencedFootnotes(Treeprocessor):
    """Leaves out footnotes that no text refers to, and numbers the others 1, 2, 3.

    Python-Markdown lists every definition and numbers references by definition, so
    an unused ``[^b]:`` between ``[^a]`` and ``[^c]`` makes the numbers skip (1, 3)
    and adds a back-link to a reference that does not exist. GitHub and Pandoc leave
    such a footnote out; ``check`` warns about it (``unused-footnote``).
    """

    def __init__(self, md: markdown.Markdown, footnotes: FootnoteExtension) -> None:
        super().__init__(md)
        self.footnotes = footnotes

    def run(self, root: XmlElement) -> None:
        defined = list(self.footnotes.footnotes)
        used = [label for label in defined if label in self.footnotes.footnote_order]
        if len(used) == len(defined):
            return
        numbers = {self.footnotes.makeFootnoteId(label): n for n, label in enumerate(used, 1)}
        for parent in list(root.iter()):
            for child in list(parent):
                if child.tag == "div" and child.get("class") == "footnote":
                    self._renumber_list(parent, child, numbers)
        superscript = self.footnotes.getConfig("SUPERSCRIPT_TEXT")
        for link in root.iter("a"):
            if link.get("class") == "footnote-ref":
                number = numbers.get(link.get("href", "").removeprefix("#"))
                if number is not None:
                    link.text = superscript.format(number)

    def _renumber_list(self, parent: XmlElement, div: XmlElement,
                       numbers: dict[str, int]) -> None:
        items = div.find("ol")
        if items is None:
            return
        title = self.footnotes.getConfig("BACKLINK_TITLE")
        for item in list(items):
            number = numbers.get(item.get("id", ""))
            if number is None:
                items.remove(item)
                continue
            for link in item.iter("a"):
                if link.get("class") == "footnote-backref":
                    link.set("title", title.format(number))
        if not len(items):
            tail = div.tail
            index = list(parent).index(div)
            parent.remove(div)
            if tail and tail.strip():  # keep text that followed the footnotes
                if index:
                    parent[index - 1].tail = (parent[index - 1].tail or "") + tail
                else:
                    parent.text = (parent.text or "") + tail


_LIST_MARKER = re.compile(r" *(\d{1,9}\.|[-*+])( {1,4})(?=\S)(?! *([-*_])( *\3)* *$)")
_FENCE = re.compile(r" *(`{3,}|~{3,})")


@dataclass
class _OpenItem:
    source_column: int
    """Where the item's text starts as written: CommonMark's content column."""
    markdown_column: int
    """Where Python-Markdown wants its blocks: four spaces in from the marker."""


class _ListIndentation(Preprocessor):
    """CommonMark-style list items -> the indentation Python-Markdown expects.

    CommonMark continues a list item with blocks indented to its text (three spaces
    under ``1. ``, two under ``- ``); Python-Markdown needs four, so a fenced block or
    paragraph indented to the text closed the list, and the list restarted at 2.
    Lines indented to the text but short of four get the missing spaces (a fenced
    block moves as a whole); what is already indented four is left as written.
    """

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        items: list[_OpenItem] = []
        fence: tuple[str, int] | None = None  # (marker, spaces added) inside a fenced block
        previous_blank = True
        for line in lines:
            indent = len(line) - len(line.lstrip(" "))
            if fence is not None:
                fence_marker, added = fence
                out.append(" " * added + line)
                stripped = line.strip()
                if stripped.startswith(fence_marker) and not stripped.strip(fence_marker[0]):
                    fence = None
                previous_blank = False
                continue
            if not line.strip():
                out.append(line)
                previous_blank = True
                continue
            if not previous_blank and _LIST_MARKER.match(line) is None:
                out.append(line)  # a paragraph's lazy continuation line
                previous_blank = False
                continue
            while items and indent < items[-1].source_column:
                items.pop()
            marker = _LIST_MARKER.match(line)
            opening = _FENCE.match(line)
            if items:
                item = items[-1]
                shift = (item.markdown_column - item.source_column
                         if indent < item.markdown_column else 0)
            else:
                shift = 0
            if marker is not None and (items or indent <= 3):
                new_indent = indent + shift
                width = len(marker.group(1)) + len(marker.group(2))
                items.append(_OpenItem(indent + width, new_indent + 4))
                line = " " * new_indent + line[indent:]
            elif shift > 0:
                line = " " * shift + line
            if opening is not None:
                fence = (opening.group(1), shift)
            out.append(line)
            previous_blank = False
        return out


class _WhatWritersExpect(Extension):
    """Lists indented as CommonMark indents them, footnotes numbered as used."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        # Before SuperFences (25) stashes fenced code, after tabs are expanded (30).
        md.preprocessors.register(_ListIndentation(md), "feedpub-list-indentation", 27)
        footnotes = next(e for e in md.registeredExtensions
                         if isinstance(e, FootnoteExtension))
        # After inline processing (20) found the references; before the footnotes
        # extension adds back-links for repeated references (15).
        md.treeprocessors.register(
            _DropUnreferencedFootnotes(md, footnotes), "feedpub-unused-footnotes", 17
        )


_MARKDOWN_EXTENSIONS = [
    "tables",
    "footnotes",
    "sane_lists",
    "toc",
    "pymdownx.superfences",
    "pymdownx.highlight",
    "feedpub.mathml:MathExtension",  # TeX -> MathML; after code, before emphasis
]
_MARKDOWN_CONFIG: dict[str, dict[str, Any]] = {
    "toc": {"slugify": slugify_unicode},
    "pymdownx.superfences": {
        "custom_fences": [{"name": "*", "class": "highlight", "format": _highlight_fence}]
    },
    # Indented code blocks still go through pymdownx.highlight.
    "pymdownx.highlight": {"use_pygments": True, "noclasses": True, "guess_lang": False},
}
_per_thread = threading.local()


def _markdown() -> markdown.Markdown:
    # Building the instance (extensions, Pygments) costs more than converting a post.
    md: markdown.Markdown | None = getattr(_per_thread, "markdown", None)
    if md is None:
        md = markdown.Markdown(
            extensions=[*_MARKDOWN_EXTENSIONS, _WhatWritersExpect(), OutlineRecorder()],
            extension_configs=_MARKDOWN_CONFIG,
            output_format="html",
        )
        # Python-Markdown looks up every inline pattern in a registry that checks its sort
        # order on each lookup, once per pattern per piece of text (a tenth of a
        # conversion); the patterns are fixed once the extensions are loaded.
        for processor in md.treeprocessors:
            if isinstance(processor, markdown.treeprocessors.InlineProcessor):
                setattr(processor, "inlinePatterns", list(processor.inlinePatterns))  # noqa: B010
        _per_thread.markdown = md
    return md


def _recorder(md: markdown.Markdown) -> OutlineRecorder:
    return next(e for e in md.registeredExtensions if isinstance(e, OutlineRecorder))


LinkResolver = Callable[[str], str | None]
"""A relative link as written -> the absolute URL it stands for, or None to resolve it
against the page (see :func:`feedpub.assets.resolve_link`)."""


def render_markdown(
    body: str, *, base_url: str, id_prefix: str, resolve_link: LinkResolver | None = None
) -> str:
    """Markdown -> sanitized HTML whose URLs are absolute against ``base_url``.

    ``id_prefix`` is put before every id (headings, footnotes) and before the
    fragment of every link that points at one of them, so posts can share a page.
    ``resolve_link`` is asked first for each relative link (files a post links to).
    Safe to call from worker processes: each builds its own Markdown instance.
    """
    return _convert(body, base_url=base_url, id_prefix=id_prefix, first_line=None,
                    resolve_link=resolve_link)[0]


def render_with_outline(
    body: str, *, base_url: str, id_prefix: str, first_line: int,
    resolve_link: LinkResolver | None = None,
) -> tuple[str, Outline]:
    """:func:`render_markdown` and the :class:`Outline` of the same conversion.

    ``first_line`` is the body's first line in the source file (after the front
    matter): the outline's lines are the file's.
    """
    html, outline = _convert(body, base_url=base_url, id_prefix=id_prefix, first_line=first_line,
                             resolve_link=resolve_link)
    assert outline is not None
    return html, outline


def _convert(
    body: str, *, base_url: str, id_prefix: str, first_line: int | None,
    resolve_link: LinkResolver | None,
) -> tuple[str, Outline | None]:
    md = _markdown()
    recorder = _recorder(md)
    md.reset()
    recorder.active = first_line is not None
    outline = None
    try:
        rendered = md.convert(remove_xml_forbidden(body))
        if first_line is not None:
            outline = recorder.outline(md, body, first_line)
    finally:
        recorder.active = False
        md.reset()
    html = sanitize_html(rendered, base_url=base_url, id_prefix=id_prefix,
                         resolve_link=resolve_link)
    return html, outline


# --- sanitizing ---------------------------------------------------------------

_TAGS = {
    "a", "abbr", "audio", "b", "bdi", "bdo", "blockquote", "br", "caption", "cite",
    "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em",
    "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
    "kbd", "li", "mark", "ol", "p", "picture", "pre", "q", "rp", "rt", "ruby", "s",
    "samp", "small", "source", "span", "strong", "sub", "summary", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul", "var", "video", "wbr",
}  # fmt: skip
# MathML Core (feedpub/mathml.py writes it), and menclose for \boxed and \cancel.
# No href, src or actiontype: no link or script can ride in on a formula.
_MATHML_TAGS = {
    "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace",
    "mfrac", "msqrt", "mroot", "msub", "msup", "msubsup", "munder", "mover", "munderover",
    "mmultiscripts", "mprescripts", "none", "mtable", "mtr", "mtd", "mpadded", "mphantom",
    "mstyle", "merror", "menclose",
}  # fmt: skip
_MATHML_GLOBAL_ATTRIBUTES = {"displaystyle", "scriptlevel", "mathvariant", "mathcolor",
                             "mathbackground", "mathsize"}  # fmt: skip
_MATHML_ATTRIBUTES = {
    "math": {"display", "alttext"},
    "annotation": {"encoding"},
    "mo": {"form", "fence", "separator", "lspace", "rspace", "stretchy", "symmetric",
           "maxsize", "minsize", "largeop", "movablelimits", "accent"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mfrac": {"linethickness"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mspace": {"width", "height", "depth"},
    "mtd": {"columnspan", "rowspan"},
    "menclose": {"notation"},
}  # fmt: skip
_TAGS |= _MATHML_TAGS
# Dropped with their content: code, or markup whose text is not prose (annotation-xml
# holds another rendering of a formula, possibly HTML).
_DROPPED_WITH_CONTENT = {"script", "style", "template", "iframe", "noscript", "svg",
                         "annotation-xml"}  # fmt: skip
_GLOBAL_ATTRIBUTES = {"id", "title", "lang", "dir", "class", "style"}
_ATTRIBUTES = {
    "*": _GLOBAL_ATTRIBUTES,
    "a": {"href", "hreflang"},
    "img": {"src", "srcset", "sizes", "alt", "width", "height", "loading"},
    "source": {"src", "srcset", "sizes", "type", "media"},
    "video": {"src", "poster", "controls", "width", "height", "loop", "muted", "playsinline",
              "preload"},
    "audio": {"src", "controls", "loop", "muted", "preload"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"},
    "time": {"datetime"},
    "ol": {"start", "reversed", "type"},
    "li": {"value"},
    "td": {"colspan", "rowspan", "align", "headers"},
    "th": {"colspan", "rowspan", "align", "headers", "scope", "abbr"},
    "col": {"span"},
    "colgroup": {"span"},
    "details": {"open"},
    **{tag: _MATHML_GLOBAL_ATTRIBUTES | _MATHML_ATTRIBUTES.get(tag, set())
       for tag in _MATHML_TAGS},
}  # fmt: skip
# The properties feed readers keep (feedparser's list, less layout and aural ones):
# enough for Pygments' inline colours, not enough to cover or escape the reader's page.
_STYLE_PROPERTIES = {
    "color", "background-color", "font-weight", "font-style", "font-variant",
    "font-family", "font-size", "text-decoration", "text-align", "text-indent",
    "vertical-align", "white-space", "letter-spacing", "line-height", "direction",
    "unicode-bidi", "border-collapse", "border-color", "border-top-color",
    "border-right-color", "border-bottom-color", "border-left-color",
}  # fmt: skip
# No data: anywhere: readers and Gmail block data: images, and data:image/svg+xml
# can carry script when opened on its own.
_LINK_SCHEMES = {"http", "https", "mailto", "tel", "ftp", "sftp", "irc", "ircs", "xmpp",
                 "news", "magnet", "geo", "sms", "webcal", "gemini"}  # fmt: skip
_MEDIA_SCHEMES = {"http", "https"}
_URL_ATTRIBUTES = {"href": _LINK_SCHEMES, "cite": _LINK_SCHEMES, "src": _MEDIA_SCHEMES,
                   "poster": _MEDIA_SCHEMES}  # fmt: skip

# An absolute http(s) URL that urljoin returns as it is (no ";" parameters, no query
# or fragment to normalise) and that is already a URI: most links in a post.
_PLAIN_WEB_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[A-Za-z0-9\-._~/!$&'()*+,=:@]*)?"
)
_ID_ATTRIBUTE = re.compile(r"""\sid\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
# Pygments writes the block's colour as the `background` shorthand, which could also
# carry url(); keep it when it is only a colour.
_BACKGROUND_COLOUR = re.compile(
    r"(?<![\w-])background\s*:\s*(#[0-9a-f]{3,8}|[a-z]+|(?:rgb|hsl)a?\([\d\s.,%/]*\))\s*(?=;|$)",
    re.IGNORECASE,
)


def sanitize_html(
    html: str, *, base_url: str, id_prefix: str = "", resolve_link: LinkResolver | None = None
) -> str:
    """Keep what feed readers keep; make every URL absolute against ``base_url``.

    Relative ``href``, ``src``, ``srcset`` (each candidate), ``poster`` and
    ``cite`` are resolved against ``base_url`` and percent-encoded into valid
    URIs; a URL whose scheme is not allowed (``javascript:``, ``data:``…) is
    removed. ``#fragment`` links become ``base_url#fragment``; with
    ``id_prefix``, ids get the prefix and so do fragments naming those ids.
    ``resolve_link`` is asked first for every relative URL.
    """
    if not urlsplit(base_url).scheme:
        raise ValueError(f"base_url must be an absolute URL, not {base_url!r}")
    page = base_url.partition("#")[0]
    page = _to_uri(page) or page
    ids = {html_lib.unescape(next(g for g in m.groups() if g is not None))
           for m in _ID_ATTRIBUTE.finditer(html)}  # fmt: skip

    def fragment_link(fragment: str) -> str:
        if not fragment:
            return page
        target = fragment if fragment in ids else unquote(fragment)
        if id_prefix and target in ids and not target.startswith(id_prefix):
            fragment = id_prefix + target
        return f"{page}#{quote(fragment, safe=_FRAGMENT_SAFE)}"

    def resolve(url: str, schemes: set[str]) -> str | None:
        url = _strip_url(url)
        if not url:
            return None
        if url.startswith("#"):
            return fragment_link(url[1:])
        if _PLAIN_WEB_URL.fullmatch(url):
            return url  # what urljoin and _to_uri would give back unchanged
        resolved = resolve_link(url) if resolve_link is not None else None
        try:
            absolute = _to_uri(resolved or urljoin(page, url))
        except ValueError:  # an unparsable host such as "http://[x"
            return None
        if absolute is None or urlsplit(absolute).scheme.lower() not in schemes:
            return None
        return absolute

    def filter_attribute(tag: str, attribute: str, value: str) -> str | None:
        schemes = _URL_ATTRIBUTES.get(attribute)
        if schemes is not None:
            return resolve(value, schemes)
        if attribute == "srcset":
            candidates = []
            for url, descriptor in _srcset_candidates(value):
                absolute = resolve(url, _MEDIA_SCHEMES)
                if absolute:
                    candidates.append(f"{absolute} {descriptor}".rstrip())
            return ", ".join(candidates) or None
        if attribute == "style" and "ackground" in value:
            return _BACKGROUND_COLOUR.sub(r"background-color: \1", value)
        return value

    cleaner = nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        attributes=_ATTRIBUTES,
        attribute_filter=filter_attribute,
        link_rel=None,
        url_schemes=_LINK_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
        id_prefix=id_prefix or None,
    )
    return _xml_friendly(cleaner.clean(html))


def _xml_friendly(html: str) -> str:
    # html5ever writes U+00A0 as &nbsp;, an entity XML does not define.
    return remove_xml_forbidden(html).replace("&nbsp;", "\u00a0")


_URL_STRIP = "".join(chr(c) for c in range(0x21))


def _strip_url(url: str) -> str:
    # What a browser ignores in a URL attribute: edge whitespace and controls,
    # and tabs or newlines anywhere ("java\nscript:" is javascript:).
    return url.strip(_URL_STRIP).replace("\t", "").replace("\n", "").replace("\r", "")


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_FRAGMENT_SAFE = _PATH_SAFE + "?"
_ALREADY_URI = re.compile(r"[A-Za-z0-9\-._~:/?#@!$&'()*+,;=]*")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _to_uri(url: str) -> str | None:
    """``url`` as a valid URI: non-ASCII, spaces and other stray characters escaped.

    Reserved characters and existing escapes are kept, so applying it twice
    changes nothing. None when the URL cannot be one (a broken host).
    """
    url = _LONE_PERCENT.sub("%25", url)
    if _ALREADY_URI.fullmatch(url.replace("%", "")):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, host_port = netloc.rpartition("@")
        host, colon, port = host_port.partition(":")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        netloc = quote(userinfo, safe=_PATH_SAFE) + at + host + colon + quote(port)
    return urlunsplit((
        parts.scheme,
        netloc,
        quote(parts.path, safe=_PATH_SAFE),
        quote(parts.query, safe=_FRAGMENT_SAFE),
        quote(parts.fragment, safe=_FRAGMENT_SAFE),
    ))  # fmt: skip


_HTML_SPACE = " \t\n\r\f"


def _srcset_candidates(srcset: str) -> Iterator[tuple[str, str]]:
    """``(url, descriptor)`` pairs, split as the HTML standard splits a srcset."""
    pos, end = 0, len(srcset)
    while True:
        while pos < end and (srcset[pos] in _HTML_SPACE or srcset[pos] == ","):
            pos += 1
        if pos >= end:
            return
        start = pos
        while pos < end and srcset[pos] not in _HTML_SPACE:
            pos += 1
        url = srcset[start:pos]
        if url.endswith(","):
            yield url.rstrip(","), ""
            continue
        comma = srcset.find(",", pos)
        comma = end if comma == -1 else comma
        yield url, " ".join(srcset[pos:comma].split())
        pos = comma + 1


# --- excerpts and summaries -----------------------------------------------------

_LINK_DEFINITION = re.compile(r"^ {0,3}\[(?!\^)[^\]\n]+\]:[ \t]*\S.*$", re.MULTILINE)


def split_excerpt(body: str, separator: str) -> str | None:
    """The Markdown before ``separator``; None when it is absent or nothing precedes it.

    Reference-style link definitions from the rest of the body are appended (as
    Jekyll does), so ``[text][ref]`` links in the excerpt still resolve.
    """
    if not separator:
        return None
    before, found, after = body.partition(separator)
    if not found or not before.strip():
        return None
    definitions = _LINK_DEFINITION.findall(after)
    excerpt = before.rstrip()
    return excerpt + "\n\n" + "\n".join(definitions) if definitions else excerpt


# Block elements whose text reads as the post's opening. Headings are left out: in a
# one-line summary "Introduction Today we…" reads as a run-on; code, tables and
# footnotes are not prose.
_PROSE_BLOCKS = {"p", "ul", "ol", "dl", "blockquote"}
_WRAPPERS = {"div", "details", "figure"}
_NOT_PROSE_CLASSES = {"footnote", "highlight"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "div", "dl",
    "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot",
    "th", "thead", "tr", "ul",
}  # fmt: skip
_SUMMARY_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags=_DROPPED_WITH_CONTENT,
    attributes={**_ATTRIBUTES, "*": _GLOBAL_ATTRIBUTES - {"id"}},
    link_rel=None,
    url_schemes=_LINK_SCHEMES,
    filter_style_properties=_STYLE_PROPERTIES,
)
_ELLIPSIS = "…"


def summarize_html(html: str, *, length: int) -> str:
    """The opening paragraphs of ``html`` whose text fits in ``length`` graphemes.

    When the first paragraph alone is longer, its text (without markup) is cut
    at ``length`` grapheme clusters, at a word boundary when the words are
    spaced, and "…" is appended. Empty when the post has no prose.
    """
    root = _parse_fragment(html)
    if root is None:
        return ""
    for ref in root.xpath(".//sup[a[contains(concat(' ', @class, ' '), ' footnote-ref ')]]"):
        _remove_keeping_tail(ref)
    chosen: list[str] = []
    used = 0
    for block in _prose_blocks(root):
        text = _collapse(_element_text(block))
        if not text:
            continue
        # Blocks read as one text with a space between them.
        room = length - used - (1 if chosen else 0)
        ends = _grapheme_ends(text, room + 1)
        if len(ends) <= room:
            chosen.append(lxml_html.tostring(block, encoding="unicode", with_tail=False))
            used = length - room + len(ends)
            continue
        if not chosen and length > 0:
            cut = _cut_text(text, ends[:length])
            chosen.append(f"<p>{html_lib.escape(cut, quote=False)}{_ELLIPSIS}</p>")
        break
    return _xml_friendly(_SUMMARY_CLEANER.clean("".join(chosen)))


def html_to_text(html: str) -> str:
    """Plain text of ``html``: no markup, entities decoded, whitespace collapsed."""
    root = _parse_fragment(html)
    return "" if root is None else _collapse(_element_text(root))


def _parse_fragment(html: str) -> lxml_html.HtmlElement | None:
    html = remove_xml_forbidden(html)
    if not html.strip():
        return None
    return lxml_html.fragment_fromstring(html, create_parent="div")


def _prose_blocks(root: lxml_html.HtmlElement) -> Iterator[lxml_html.HtmlElement]:
    """Top-level prose blocks in order; loose inline content becomes a paragraph."""
    loose: list[lxml_html.HtmlElement] = []
    if root.text and root.text.strip():
        loose.append(_paragraph(root.text))
    for child in list(root):
        if not isinstance(child.tag, str):
            continue
        if child.tag in _BLOCK_TAGS:
            if loose:
                yield _merge(loose)
                loose = []
            classes = set((child.get("class") or "").split())
            if child.tag in _PROSE_BLOCKS:
                yield child
            elif child.tag in _WRAPPERS and not classes & _NOT_PROSE_CLASSES:
                yield from _prose_blocks(child)
        else:
            loose.append(child)
        if child.tail and child.tail.strip():
            loose.append(_paragraph(child.tail))
    if loose:
        yield _merge(loose)


def _paragraph(text: str) -> lxml_html.HtmlElement:
    p: lxml_html.HtmlElement = lxml_html.Element("p")
    p.text = text
    return p


def _merge(nodes: list[lxml_html.HtmlElement]) -> lxml_html.HtmlElement:
    p: lxml_html.HtmlElement = lxml_html.Element("p")
    for node in nodes:
        if node.tag == "p" and len(node) == 0 and node.get("class") is None:
            if len(p):
                p[-1].tail = (p[-1].tail or "") + (node.text or "")
            else:
                p.text = (p.text or "") + (node.text or "")
        else:
            node.tail = None
            p.append(node)
    return p


def _remove_keeping_tail(element: lxml_html.HtmlElement) -> None:
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def _element_text(element: lxml_html.HtmlElement) -> str:
    """Text with a space wherever a block or a line break separates words."""
    parts: list[str] = []
    walker = etree.iterwalk(element, events=("start", "end"))
    for event, node in walker:
        if not isinstance(node.tag, str):
            if event == "end" and node.tail:
                parts.append(node.tail)
            continue
        gap = node.tag in _BLOCK_TAGS or node.tag == "br"
        if event == "start" and node.tag == "math":
            # A formula reads as its TeX (the annotation), not as its glyphs run together.
            tex = node.xpath("string(.//annotation[@encoding='application/x-tex'])")
            parts.append(str(tex) if tex else "".join(node.itertext()))
            walker.skip_subtree()  # type: ignore[attr-defined, unused-ignore]
        elif event == "start":
            if gap:
                parts.append(" ")
            if node.text:
                parts.append(node.text)
        else:
            if gap:
                parts.append(" ")
            if node is not element and node.tail:
                parts.append(node.tail)
    return "".join(parts)


_HTML_WHITESPACE = re.compile(r"[ \t\n\r\f]+")


def _collapse(text: str) -> str:
    return _HTML_WHITESPACE.sub(" ", text).strip(_HTML_SPACE)


def _cut_text(text: str, ends: list[int]) -> str:
    """The clusters of ``text`` ending at ``ends``, cut back to a space when one is near.

    A spaced language loses at most a word; CJK, with no space near, is cut by
    character. Never inside a cluster: only whole clusters are dropped.
    """
    starts = [0, *ends[:-1]]

    def cluster(k: int) -> str:
        return text[starts[k] : ends[k]]

    keep = len(ends)
    if ends[-1] < len(text) and text[ends[-1]] != " ":
        lookback = min(30, keep // 2)
        keep = next((k for k in range(keep - 1, keep - 1 - lookback, -1) if cluster(k) == " "),
                    keep)  # fmt: skip
    while keep > 0 and cluster(keep - 1) in _TRAILING_PUNCTUATION:
        keep -= 1
    return text[: ends[keep - 1]] if keep else text[: ends[-1]]


_TRAILING_PUNCTUATION = {" ", ",", ";", ":"}


# --- grapheme clusters ----------------------------------------------------------

# Between two characters of these kinds every UAX #29 rule says "break": the left
# one is no prefix (CR, Prepend, L, V, T, RI, ZWJ) and the right one no suffix
# (Extend, SpacingMark, ZWJ, V, T, RI; ExtPict joins only after ZWJ, a consonant
# only after a linker, LF only after CR).
_LONE_KINDS = {
    GraphemeClusterBreak.OTHER,
    GraphemeClusterBreak.CONTROL,
    GraphemeClusterBreak.LF,
    GraphemeClusterBreak.LV,
    GraphemeClusterBreak.LVT,
}
_UNISEG_WINDOW = 64


@functools.lru_cache(maxsize=65536)
def _stands_alone(char: str) -> bool:
    return grapheme_cluster_break(char) in _LONE_KINDS


def _grapheme_ends(text: str, limit: int) -> list[int]:
    """End offsets of the first ``limit`` grapheme clusters of ``text``.

    uniseg is exact but slow (tens of µs a character), so it only runs over the
    stretches where something joins; elsewhere each character is a cluster.
    """
    ends: list[int] = []
    pos, size = 0, len(text)
    while pos < size and len(ends) < limit:
        after = pos + 1
        if after == size or (_stands_alone(text[pos]) and _stands_alone(text[after])):
            ends.append(after)
            pos = after
            continue
        stop = after
        while stop < size and not (_stands_alone(text[stop - 1]) and _stands_alone(text[stop])):
            stop += 1
        pos = _add_uniseg_ends(text, pos, stop, ends, limit)
    return ends[:limit]


def _add_uniseg_ends(text: str, start: int, stop: int, ends: list[int], limit: int) -> int:
    """Add the cluster ends between ``start`` and ``stop`` (both cluster boundaries).

    A long stretch goes through in windows; a window's last end is not trusted
    (the next character may still join it) unless it is ``stop``.
    """
    while start < stop and len(ends) < limit:
        end = min(stop, start + _UNISEG_WINDOW)
        found = [start + i for i in _boundaries(text[start:end]) if i > 0]
        if end < stop:
            found.pop()
            if not found:
                # One cluster longer than a window: only "Zalgo" text makes those.
                # Cut it: uniseg takes time quadratic in a cluster's length.
                found = [end]
        ends.extend(found)
        start = found[-1]
    return start


@functools.lru_cache(maxsize=4096)
def _boundaries(window: str) -> tuple[int, ...]:
    # The same emoji sequences and their neighbours come back post after post.
    return tuple(grapheme_cluster_boundaries(window))
