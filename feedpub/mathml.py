"""TeX math in posts: MathML in pages and feeds, PNG images in email.

Posts write math as Pandoc, kramdown (Jekyll's ``math: true``) and Hugo's KaTeX
or MathJax pages do: ``$…$`` and ``\\(…\\)`` inline, ``$$…$$`` and ``\\[…\\]``
display. :class:`MathExtension` turns each formula into MathML Core at build
time (math-core: browsers render it with no script) and keeps the TeX in an
``<annotation encoding="application/x-tex">``. A formula the converter cannot
read stays as written, and ``check`` says so (:func:`conversion_error`).

Mail clients drop MathML (Gmail strips it), so :func:`email_math` puts in each
formula's place an ``<img>`` of it, published at a content-addressed path by
:func:`math_images`: the same image for the same TeX, on every run.
"""

from __future__ import annotations

import functools
import hashlib
import html as html_lib
import math
import re
import threading
import unicodedata
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import markdown
from markdown.extensions import Extension
from markdown.inlinepatterns import InlineProcessor
from markdown.treeprocessors import Treeprocessor
from markdown.util import AtomicString
from math_core import LatexError, LatexToMathML

from feedpub import urls
from feedpub.writer import Output

if TYPE_CHECKING:
    from feedpub.entries import Entry

__all__ = [
    "MathExtension",
    "conversion_error",
    "email_math",
    "find_math",
    "formula_parts",
    "math_image_name",
    "math_images",
    "tex_to_mathml",
]

# --- finding formulas ---------------------------------------------------------------

# Applied in this order, each over what the ones before left (``check`` masks what
# they found, the Markdown extension stashes it), so ``$$x$$`` is never two ``$``.
DISPLAY_DOLLARS = re.compile(r"(?<!\\)\$\$([^$]*?\S[^$]*?)(?<!\\)\$\$")
BRACKETS = re.compile(r"(?<!\\)\\\[(.+?)\\\]", re.DOTALL)
PARENTHESES = re.compile(r"(?<!\\)\\\((.+?)\\\)", re.DOTALL)
# Pandoc's rule: the opening $ has a non-space on its right, the closing $ a
# non-space on its left and no digit after it, so "$5 and $10" is not math.
INLINE_DOLLARS = re.compile(r"(?<![\\$])\$([^\s$](?:[^$]{0,300}?[^\s\\$])?)\$(?![\d$])")
_PATTERNS = (DISPLAY_DOLLARS, BRACKETS, PARENTHESES, INLINE_DOLLARS)
_TEX_HINT = re.compile(r"\\[A-Za-z]+|[\^_=<>{}+]")
_PLACEHOLDER = re.compile("\x02[^\x03]*\x03")
"""Python-Markdown's placeholders for what an earlier inline pattern took (code spans)."""


def is_formula(pattern: re.Pattern[str], match: re.Match[str], text: str) -> bool:
    """Whether ``match`` of one of the patterns above is math rather than prose.

    ``\\[sic\\]`` is an escaped bracket unless it holds TeX or stands alone; in
    ``$5 for lunch, 3$`` the dollars are amounts.
    """
    inner = match.group(1)
    if pattern is BRACKETS:
        rest = _PLACEHOLDER.sub("", text.replace(match.group(0), ""))
        return bool(_TEX_HINT.search(inner) or not rest.strip())
    if pattern is INLINE_DOLLARS:
        return not (inner[0].isdigit() and not _TEX_HINT.search(inner))
    return True


def find_math(visible: str) -> list[tuple[int, str]]:
    """(offset, formula with its delimiters) of each formula in a block's text (code
    spans blanked out), in order: what :class:`MathExtension` converts."""
    return sorted(_math_spans(visible))


def _math_spans(visible: str) -> Iterator[tuple[int, str]]:
    masked = visible
    for pattern in _PATTERNS:
        for match in pattern.finditer(masked):
            if is_formula(pattern, match, masked):
                yield match.start(), match.group(0)
        masked = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), masked)


def formula_parts(formula: str) -> tuple[str, bool]:
    """(TeX, display) of a formula written with its delimiters, as it is converted."""
    if formula.startswith("$$"):
        return formula[2:-2].strip(), True
    if formula.startswith("$"):
        return formula[1:-1].strip(), False
    return formula[2:-2].strip(), formula.startswith("\\[")


# --- TeX -> MathML --------------------------------------------------------------------

_per_thread = threading.local()


def _converter(*, annotation: bool) -> LatexToMathML:
    # One converter per thread: math-core guards each with a lock, and raises rather
    # than waits when two threads share one.
    name = "annotated" if annotation else "bare"
    converter: LatexToMathML | None = getattr(_per_thread, name, None)
    if converter is None:
        converter = LatexToMathML(annotation=annotation, fancy_error=False,
                                  xml_namespace=not annotation)  # fmt: skip
        setattr(_per_thread, name, converter)
    return converter


@functools.lru_cache(maxsize=4096)
def _convert(tex: str, display: bool) -> tuple[str | None, str | None]:
    try:
        mathml = _converter(annotation=True).convert_with_local_state(tex, displaystyle=display)
    except LatexError as exc:
        return None, " ".join(str(exc).split())
    return _NAMED_ENTITY.sub(_entity_character, mathml), None


def tex_to_mathml(tex: str, *, display: bool) -> str | None:
    """MathML Core for ``tex`` with the TeX in its annotation; None when the converter
    cannot read it (an unknown command, an unclosed brace…)."""
    return _convert(tex, display)[0]


def conversion_error(tex: str, *, display: bool) -> str | None:
    """Why ``tex`` cannot be converted, in the converter's words; None when it can."""
    return _convert(tex, display)[1]


_NAMED_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}


def _entity_character(match: re.Match[str]) -> str:
    # math-core writes a few HTML entities (&ApplyFunction;) that XML lacks.
    if match.group(1) in _XML_ENTITIES:
        return match.group(0)
    return html_lib.escape(html_lib.unescape(match.group(0)), quote=False)


# --- the Markdown extension -----------------------------------------------------------

_OPEN_TAG = re.compile(r"<[A-Za-z/!?][^<>]*\Z")


class _MathProcessor(InlineProcessor):
    """One of the patterns: its formulas become MathML elements, their text atomic so
    no later pattern (emphasis, escapes) reads ``_`` or ``*`` in them."""

    def __init__(self, pattern: re.Pattern[str], md: markdown.Markdown) -> None:
        super().__init__(pattern.pattern, md)
        self.compiled_re = pattern
        self.display = pattern in (DISPLAY_DOLLARS, BRACKETS)

    def handleMatch(  # type: ignore[override]
        self, m: re.Match[str], data: str
    ) -> tuple[ElementTree.Element | None, int | None, int | None]:
        if (
            "\x02" in m.group(0)  # a code span inside: code wins
            or _OPEN_TAG.search(data, 0, m.start())  # inside an HTML tag's attributes
            or not is_formula(self.compiled_re, m, data)
        ):
            return None, None, None
        mathml = tex_to_mathml(m.group(1).strip(), display=self.display)
        if mathml is None:
            return None, None, None  # left as written; `check` reports it
        return _element(mathml), m.start(0), m.end(0)


def _element(mathml: str) -> ElementTree.Element:
    root = ElementTree.fromstring(mathml)
    for node in root.iter():
        if node.text:
            node.text = AtomicString(node.text)
        if node.tail and node is not root:
            node.tail = AtomicString(node.tail)
    return root


class _DisplayBlocks(Treeprocessor):
    """A paragraph that is only display math becomes the ``<math display="block">``
    itself, as a block of its own."""

    def run(self, root: ElementTree.Element) -> None:
        for parent in root.iter():
            for index, child in enumerate(list(parent)):
                if _only_display_math(child):
                    formula = child[0]
                    formula.tail = child.tail
                    parent.remove(child)
                    parent.insert(index, formula)


def _only_display_math(element: ElementTree.Element) -> bool:
    return (
        element.tag == "p"
        and len(element) == 1
        and element[0].tag == "math"
        and element[0].get("display") == "block"
        and not (element.text or "").strip()
        and not (element[0].tail or "").strip()
    )


class MathExtension(Extension):
    """``$…$``, ``$$…$$``, ``\\(…\\)`` and ``\\[…\\]`` -> MathML; ``\\$`` is a dollar."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.registerExtension(self)
        if "$" not in md.ESCAPED_CHARS:
            md.ESCAPED_CHARS.append("$")
        # After code spans (190), before backslash escapes (180) and everything else.
        for priority, (name, pattern) in enumerate(reversed([
            ("math-display-dollars", DISPLAY_DOLLARS),
            ("math-brackets", BRACKETS),
            ("math-parentheses", PARENTHESES),
            ("math-inline-dollars", INLINE_DOLLARS),
        ])):  # fmt: skip
            md.inlinePatterns.register(_MathProcessor(pattern, md), name, 185 + priority)
        # After inline processing (20).
        md.treeprocessors.register(_DisplayBlocks(md), "math-display-blocks", 19)


# --- images for email -----------------------------------------------------------------

_IMAGE_STYLE = "stix-two-17px-2x-white-v1"
"""Part of each image's name: change it when the pictures change, so that a client
never pairs a new size with an old file."""
_FONT_SIZE = 17.0
"""CSS px: the email's text is 16px sans-serif, whose x-height STIX Two matches at 17px."""
_ZOOM = 2
"""Pixels per CSS px: sharp on phones and 2x screens."""
_MARGIN = 1.0
_MAX_TEX = 4000
"""Longer formulas are not drawn (they are tables, not math); email shows their TeX."""


@dataclass(frozen=True)
class MathImage:
    name: str
    """sha256 (hex) of the style, the display flag and the TeX."""
    png: bytes
    width: int
    height: int
    """Both in CSS px; the PNG has :data:`_ZOOM` times as many pixels."""
    depth: int
    """CSS px of the image below the text's baseline."""


def math_image_name(tex: str, *, display: bool) -> str:
    """The content address of a formula's image (its file is ``math/<name>.png``)."""
    key = f"{_IMAGE_STYLE}\n{'display' if display else 'inline'}\n{tex}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1024)
def _image(tex: str, display: bool) -> MathImage | None:
    """The formula drawn as a PNG, or None when it cannot be (its TeX does not convert,
    or a character is missing from the math font, which would draw as a box)."""
    if len(tex) > _MAX_TEX or conversion_error(tex, display=display) is not None:
        return None
    import resvg_py

    with warnings.catch_warnings():
        # ziamath 0.13 finds its font with importlib.resources.path, deprecated in 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ziamath.zmath import Math, loadedfonts

    mathml = _converter(annotation=False).convert_with_local_state(tex, displaystyle=display)
    mathml = _NAMED_ENTITY.sub(_entity_character, mathml)
    tree = ElementTree.fromstring(mathml)
    _plain_text_runs(tree)
    font = loadedfonts["default"]
    if any(_missing(font, char) for text in tree.itertext() for char in text):
        return None
    try:
        drawing = Math(tree, size=_FONT_SIZE, margin=_MARGIN)
        svg = drawing.svgxml()
    except Exception:  # noqa: BLE001 - ziamath fails in many ways on MathML it lacks
        return None
    box = drawing.node.bbox
    width = max(1, math.ceil(box.xmax - box.xmin + 2 * _MARGIN))
    ascent = max(1, math.ceil(box.ymax + _MARGIN))
    depth = max(0, math.ceil(-box.ymin + _MARGIN))
    # Whole CSS px, so that the 2x pixels land on the grid and the baseline is exact.
    svg.set("width", str(width))
    svg.set("height", str(ascent + depth))
    svg.set("viewBox", f"{box.xmin - _MARGIN:.3f} {-ascent} {width} {ascent + depth}")
    png = resvg_py.svg_to_bytes(
        svg_string=ElementTree.tostring(svg, encoding="unicode"),
        zoom=_ZOOM, background="#ffffff", skip_system_fonts=True,
    )
    return MathImage(math_image_name(tex, display=display), bytes(png), width,
                     ascent + depth, depth)  # fmt: skip


_HTML_IN_TEXT = {"b", "strong", "i", "em", "span"}


def _plain_text_runs(tree: ElementTree.Element) -> None:
    """``\\textbf{…}`` is ``<mtext><b>…</b></mtext>``, HTML that ziamath cannot draw:
    keep its text."""
    for node in tree.iter():
        if node.tag.rpartition("}")[2] != "mtext" or not len(node):
            continue
        node.text = "".join(node.itertext())
        for child in list(node):
            node.remove(child)


def _missing(font: Any, char: str) -> bool:
    if unicodedata.category(char) in ("Cf", "Mn", "Cc", "Zs"):
        return False  # invisible operators, variation selectors, spacing
    return bool(font.glyphindex(char) == 0)


_MATH_ELEMENT = re.compile(r"<math\b([^>]*)>(.*?)</math>", re.DOTALL)
_TEX_ANNOTATION = re.compile(r'<annotation encoding="application/x-tex">(.*?)</annotation>',
                             re.DOTALL)  # fmt: skip
_DISPLAY_ATTRIBUTE = re.compile(r"""\sdisplay\s*=\s*["']?block\b""")


def _formulas(html: str) -> Iterator[tuple[re.Match[str], str, bool]]:
    """(match, TeX, display) of each ``<math>`` in sanitized HTML that carries its TeX."""
    for match in _MATH_ELEMENT.finditer(html):
        annotation = _TEX_ANNOTATION.search(match.group(2))
        if annotation is not None:
            tex = html_lib.unescape(annotation.group(1))
            yield match, tex, bool(_DISPLAY_ATTRIBUTE.search(match.group(1)))


def email_math(html: str, site_url: str) -> str:
    """``html`` with each ``<math>`` replaced by the ``<img>`` of its formula.

    Images are at ``site_url`` + ``math/<name>.png`` (:func:`math_images` makes
    them), 2x for sharp screens, sized in CSS px, the TeX as alt text, and shifted
    down by their depth so the formula's baseline sits on the line's. A formula
    that cannot be drawn shows its TeX between its delimiters, as written. MathML
    without TeX (written by hand) is left alone.
    """
    if "<math" not in html:
        return html

    def replace(match: re.Match[str], tex: str, display: bool) -> str:
        image = _image(tex, display)
        if image is None:
            written = f"$${tex}$$" if display else f"${tex}$"
            return html_lib.escape(written, quote=False)
        src = urls.url_for(site_url, "math_image", name=image.name)
        img = (
            f'<img src="{html_lib.escape(src)}" alt="{html_lib.escape(tex)}" '
            f'width="{image.width}" height="{image.height}" class="math" '
            f'style="vertical-align:-{image.depth}px;border:0;margin:0">'
        )
        if display:
            return ('<span class="math-display" style="display:block;margin:16px 0;'
                    f'text-align:center">{img}</span>')  # fmt: skip
        return img

    pieces: list[str] = []
    done = 0
    for match, tex, display in _formulas(html):
        pieces += [html[done : match.start()], replace(match, tex, display)]
        done = match.end()
    pieces.append(html[done:])
    return "".join(pieces)


def math_images(
    entries: Iterable[Entry], *, exists: Callable[[str], bool] | None = None
) -> list[Output]:
    """The PNG of every formula in ``entries`` (each once), for ``public/``.

    The bytes depend only on the formula (and this module's drawing settings), so
    a file already there never needs writing again: ``exists(relpath)`` true skips
    drawing it. Formulas that cannot be drawn have no image (email shows their TeX).
    """
    outputs: dict[str, Output] = {}
    for entry in entries:
        for html in (entry.content_html, entry.summary_html):
            for _, tex, display in _formulas(html):
                relpath = urls.path_for("math_image", name=math_image_name(tex, display=display))
                if relpath in outputs or (exists is not None and exists(relpath)):
                    continue
                image = _image(tex, display)
                if image is not None:
                    outputs[relpath] = Output(relpath, image.png)
    return list(outputs.values())

