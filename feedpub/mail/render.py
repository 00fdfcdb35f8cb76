"""Entries -> one rendered edition (HTML with inlined CSS, plain text, web page), once.

Rendering runs jinja2, then premailer, then html2text once per edition. What
differs between recipients (their address and links) is left in the result as
placeholders that :func:`personalize` fills in with one regex pass.
"""

from __future__ import annotations

import html
import logging
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

import html2text
import jinja2
import lxml.html
from babel.lists import format_list
from lxml import etree
from markupsafe import Markup
from premailer import Premailer

from feedpub import mathml, templating, urls
from feedpub.config import NewsletterConfig, Settings
from feedpub.entries import Entry
from feedpub.errors import ConfigError
from feedpub.i18n import Language, site_language, text_direction

Kind = Literal["digest", "post"]

PLACEHOLDERS: Mapping[str, str] = types.MappingProxyType({
    "email": "%%FEEDPUB_EMAIL%%",
    "unsubscribe_url": "%%FEEDPUB_UNSUBSCRIBE_URL%%",
    "preferences_url": "%%FEEDPUB_PREFERENCES_URL%%",
    "confirm_url": "%%FEEDPUB_CONFIRM_URL%%",
})
"""Template variable -> the token left in the rendered strings until :func:`personalize`.

Only ``%``, capitals and ``_``: nothing that jinja2, lxml, premailer or
html2text escapes, and nothing Markdown produces by accident."""
PLACEHOLDER_PATTERN = re.compile(r"%%FEEDPUB_[A-Z_]+%%")
SIGNATURE_SEPARATOR = "-- "
PERSONAL_VALUE_ALLOWANCE = 256
"""Bytes reserved for each placeholder when checking the HTML size limit."""


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""
    unsubscribe_url: str = ""
    preferences_url: str = ""
    confirm_url: str = ""


@dataclass(frozen=True)
class RenderedEdition:
    """One edition, rendered once; per-recipient values are still placeholders."""

    kind: Literal["digest", "post", "confirm"]
    newsletter: str
    """The newsletter's name; for a confirmation, the names joined with ``,``."""
    edition_id: str
    subject: str
    """One line, not yet RFC 2047 encoded."""
    html: str
    """Inlined CSS, with placeholders."""
    text: str
    """Plain text, with placeholders."""
    web_html: str
    """The "view in browser" page: everything, no placeholders, never cut to fit."""
    web_path: str | None
    """Where ``web_html`` belongs under ``public/`` (``editions/<newsletter>/<id>.html``)."""
    web_url: str | None
    entry_ids: tuple[str, ...]
    summarized_ids: tuple[str, ...]
    """Entries cut to their summary so that the HTML stays under ``mail.max_html_bytes``."""
    html_bytes: int
    """The HTML's size once personalised (placeholders counted at their allowance)."""
    over_limit: bool
    """Still larger than ``mail.max_html_bytes`` with every entry cut to its summary."""
    language: str


@dataclass(frozen=True)
class EntryView:
    """An entry as the templates show it."""

    entry: Entry
    body_html: Markup
    full: bool
    lang: str
    dir: str
    date_text: str


class MailContent(Protocol):
    """What a message is made of: a :class:`RenderedEdition`, or an edition read back
    from the store."""

    @property
    def subject(self) -> str: ...

    @property
    def html(self) -> str: ...

    @property
    def text(self) -> str: ...


def personalize(rendered: MailContent, recipient: Recipient) -> tuple[str, str]:
    """The edition's (html, text) for one recipient: every placeholder replaced."""
    return personalize_parts(rendered.html, rendered.text, recipient)


def personal_values(recipient: Recipient) -> tuple[dict[str, str], dict[str, str]]:
    """Placeholder -> value, as (plain text, HTML-escaped)."""
    raw = {
        PLACEHOLDERS["email"]: recipient.email,
        PLACEHOLDERS["unsubscribe_url"]: recipient.unsubscribe_url,
        PLACEHOLDERS["preferences_url"]: recipient.preferences_url,
        PLACEHOLDERS["confirm_url"]: recipient.confirm_url,
    }
    return raw, {token: html.escape(value, quote=True) for token, value in raw.items()}


def personalize_parts(html_part: str, text_part: str, recipient: Recipient) -> tuple[str, str]:
    raw, escaped = personal_values(recipient)
    return (
        PLACEHOLDER_PATTERN.sub(lambda m: escaped.get(m.group(0), m.group(0)), html_part),
        PLACEHOLDER_PATTERN.sub(lambda m: raw.get(m.group(0), m.group(0)), text_part),
    )


_WORD_JOINER = "\u2060"
"""Invisible, and kept by jinja2, lxml, premailer and html2text: put after the ``%%`` of
placeholder-like text in a post, it keeps that text out of :data:`PLACEHOLDER_PATTERN`."""


def inert_text(text: str) -> str:
    """``text`` with anything that looks like a placeholder made plain text: only
    feedpub's own templates may carry placeholders, never a post."""
    if "%%" not in text:
        return text
    return PLACEHOLDER_PATTERN.sub(lambda m: "%%" + _WORD_JOINER + m[0][2:], text)


def _inert(entry: Entry) -> Entry:
    """The entry with every text a template may show made :func:`inert_text` (its id and
    URLs are left: they are keys, and a placeholder in a URL is percent-encoded)."""
    return replace(
        entry,
        title=inert_text(entry.title),
        slug=inert_text(entry.slug),
        content_html=inert_text(entry.content_html),
        summary_html=inert_text(entry.summary_html),
        summary_text=inert_text(entry.summary_text),
        categories=tuple(inert_text(name) for name in entry.categories),
        tags=tuple(inert_text(name) for name in entry.tags),
        author=replace(entry.author, name=inert_text(entry.author.name)),
    )


def render_edition(
    entries: Sequence[Entry],
    *,
    settings: Settings,
    newsletter: NewsletterConfig,
    kind: Kind,
    edition_id: str,
    date: datetime,
) -> RenderedEdition:
    """Render a digest (several entries) or a post email (one entry) once.

    Entries keep the given order; a repeated id is shown once. When the HTML
    would be larger than ``settings.mail.max_html_bytes`` (Gmail clips at about
    102 KB), entries are cut to their summary, oldest first, until it fits; the
    web page keeps them whole.
    """
    entries = [_inert(entry) for entry in _unique(entries)]
    if not entries:
        raise ValueError("an edition needs at least one entry")
    if kind == "post" and len(entries) != 1:
        raise ValueError(f"a post email shows one entry, not {len(entries)}")
    edition = _EditionRenderer(entries, settings, newsletter, kind, edition_id, date)
    summarized, email_html, size = edition.fitted_email()
    limit = settings.mail.max_html_bytes
    return RenderedEdition(
        kind=kind,
        newsletter=newsletter.name,
        edition_id=edition_id,
        subject=edition.context["subject"],
        html=email_html,
        text=_tidy_text(edition.text(summarized)),
        web_html=edition.web_page(),
        web_path=edition.web_path,
        web_url=edition.web_url,
        entry_ids=tuple(e.id for e in entries),
        summarized_ids=tuple(e.id for e in entries if e.id in summarized),
        html_bytes=size,
        over_limit=size > limit,
        language=edition.language.tag,
    )


class _EditionRenderer:
    """One edition's templates, context and entry bodies, prepared once for its email
    (HTML, cut to fit if need be), its plain text and its web page."""

    def __init__(self, entries: list[Entry], settings: Settings, newsletter: NewsletterConfig,
                 kind: Kind, edition_id: str, date: datetime) -> None:
        self.entries = entries
        self.settings = settings
        self.kind = kind
        self.language = _language(settings)
        self.env = template_environment(settings, self.language)
        self.full_content = kind == "post" or newsletter.full_content
        self.bodies = {
            e.id: (_email_ready(e.content_html, settings.site.url),
                   _email_ready(e.summary_html, settings.site.url))
            for e in entries
        }
        self.web_path = urls.edition_path(newsletter.name, edition_id)
        self.web_url = settings.site.url + self.web_path
        self.context: dict[str, Any] = {
            "site": settings.site,
            "newsletter": newsletter,
            "list_name": newsletter.title,
            "kind": kind,
            "edition_id": edition_id,
            "date_text": self.language.date(date),
            "lang": self.language.tag,
            "dir": self.language.direction,
            "postal_lines": _postal_lines(settings.mail.postal_address),
            "subscribe_url": urls.url_for(settings.web.url, "subscribe"),
            "subject": render_subject(
                entries, settings=settings, newsletter=newsletter, language=self.language
            ),
        }

    def items(self, summarized: frozenset[str]) -> list[EntryView]:
        views = []
        for entry in self.entries:
            full = self.full_content and entry.id not in summarized
            content, summary = self.bodies[entry.id]
            lang = entry.lang or self.language.tag
            views.append(EntryView(
                entry=entry,
                body_html=content if full else summary,
                full=full,
                lang=lang,
                dir=text_direction(lang),
                date_text=self.language.date(entry.published, "medium"),
            ))  # fmt: skip
        return views

    def _email_context(self, views: list[EntryView]) -> dict[str, Any]:
        return {
            **self.context,
            "items": views,
            "web": False,
            "view_in_browser_url": self.web_url,
            "recipient_email": PLACEHOLDERS["email"],
            **{name: token for name, token in PLACEHOLDERS.items() if name != "email"},
        }

    def email(self, summarized: frozenset[str]) -> tuple[str, str]:
        """(the template's HTML, the same with its CSS inlined)."""
        views = self.items(summarized)
        context = {**self._email_context(views), "preheader": _preheader(views, self.kind)}
        source = templating.render_template(self.env, f"{self.kind}.html", context)
        return source, inline_css(source)

    def fitted_email(self) -> tuple[frozenset[str], str, int]:
        """(entries cut to their summary, the email's HTML, its personalised size): the
        oldest entries are cut first, until the HTML fits ``mail.max_html_bytes``."""
        summarized: frozenset[str] = frozenset()
        source, email_html = self.email(summarized)
        size = personalised_size(email_html)
        limit = self.settings.mail.max_html_bytes
        candidates = [e for e in sorted(self.entries, key=lambda e: e.published)
                      if self.full_content]
        while size > limit and candidates:
            inflation = len(email_html) / max(len(source), 1)
            excess = size - limit
            saved = 0.0
            chosen = set(summarized)
            while candidates and saved < excess:
                entry = candidates.pop(0)
                content, summary = self.bodies[entry.id]
                gain = (len(content.encode()) - len(summary.encode())) * inflation
                if gain > 0:
                    chosen.add(entry.id)
                    saved += gain
            if chosen == summarized:
                break
            summarized = frozenset(chosen)
            source, email_html = self.email(summarized)
            size = personalised_size(email_html)
        return summarized, email_html, size

    def text(self, summarized: frozenset[str]) -> str:
        context = self._email_context(self.items(summarized))
        return templating.render_template(self.env, f"{self.kind}.txt", context)

    def web_page(self) -> str:
        """The "view in browser" page: every entry whole, no placeholders."""
        views = self.items(frozenset())
        return templating.render_template(self.env, f"{self.kind}.html", {
            **self.context,
            "items": views,
            "web": True,
            "preheader": _preheader(views, self.kind),
            "view_in_browser_url": None,
            "recipient_email": "",
            **{name: "" for name in PLACEHOLDERS if name != "email"},
        })


def render_confirmation(
    settings: Settings,
    newsletters: Sequence[NewsletterConfig],
    *,
    date: datetime,
) -> RenderedEdition:
    """The double opt-in email; ``Recipient.confirm_url`` and ``email`` fill it in."""
    if not newsletters:
        raise ValueError("a confirmation names at least one newsletter")
    language = _language(settings)
    env = template_environment(settings, language)
    list_name = _join_names([n.title for n in newsletters], language)
    subject = " ".join(
        (language.gettext("Confirm your subscription to %(site)s")
         % {"site": settings.site.title}).split()
    )
    context: dict[str, Any] = {
        "site": settings.site,
        "list_name": list_name,
        "kind": "confirm",
        "lang": language.tag,
        "dir": language.direction,
        "subject": subject,
        "postal_lines": _postal_lines(settings.mail.postal_address),
        "confirm_days": settings.web.confirm_days,
        "web": False,
        "view_in_browser_url": None,
        "recipient_email": PLACEHOLDERS["email"],
        **{name: token for name, token in PLACEHOLDERS.items() if name != "email"},
    }
    source = templating.render_template(env, "confirm.html", context)
    email_html = inline_css(source)
    text = _tidy_text(templating.render_template(env, "confirm.txt", context))
    size = personalised_size(email_html)
    return RenderedEdition(
        kind="confirm",
        newsletter=",".join(n.name for n in newsletters),
        edition_id=f"confirm-{date.isoformat()}",
        subject=subject,
        html=email_html,
        text=text,
        web_html="",
        web_path=None,
        web_url=None,
        entry_ids=(),
        summarized_ids=(),
        html_bytes=size,
        over_limit=size > settings.mail.max_html_bytes,
        language=language.tag,
    )


def render_subject(
    entries: Sequence[Entry],
    *,
    settings: Settings,
    newsletter: NewsletterConfig,
    language: Language | None = None,
) -> str:
    """The subject line: ``newsletter.subject`` rendered, else "Site: First title (+N more)"."""
    language = language or _language(settings)
    first, count = entries[0], len(entries)
    if newsletter.subject is None:
        subject = f"{settings.site.title}: {first.title}"
        if count > 1:
            more = language.ngettext("(+%(num)d more)", "(+%(num)d more)", count - 1)
            subject += " " + more % {"num": count - 1}
    else:
        index = settings.newsletters.index(newsletter) if newsletter in settings.newsletters else 0
        env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
        try:
            subject = env.from_string(newsletter.subject).render(
                site=settings.site, newsletter=newsletter, entries=entries, first=first,
                count=count,
            )
        except jinja2.TemplateError as exc:
            raise ConfigError(
                f"the subject template fails: {exc.message or exc}",
                path=settings.config_path,
                key=f"newsletter[{index}].subject",
            ) from None
    return " ".join(subject.split())


def personalised_size(email_html: str) -> int:
    """Bytes of the HTML once personalised, each placeholder counted at its allowance."""
    placeholders = PLACEHOLDER_PATTERN.findall(email_html)
    return (len(email_html.encode("utf-8"))
            + sum(PERSONAL_VALUE_ALLOWANCE - len(token) for token in placeholders))


def inline_css(document: str) -> str:
    """premailer, configured once for email: no network, ``!important`` and ``@media`` kept."""
    premailer = Premailer(
        document,
        allow_network=False,
        strip_important=False,
        keep_style_tags=True,
        disable_validation=True,
        disable_basic_attributes=["height"],
        cssutils_logging_level=logging.CRITICAL,
    )
    result: str = premailer.transform(pretty_print=False)
    if not result.lstrip().upper().startswith("<!DOCTYPE"):
        result = "<!DOCTYPE html>\n" + result
    return result


def html_to_text(fragment: str) -> str:
    """Readable plain text for an HTML fragment; links listed after it, images by alt."""
    converter = html2text.HTML2Text(bodywidth=0)
    converter.unicode_snob = True
    converter.images_to_alt = True
    converter.inline_links = False
    converter.wrap_links = False
    converter.protect_links = True
    converter.ul_item_mark = "-"
    converter.pad_tables = True
    text: str = converter.handle(fragment)
    return text.strip()


def template_environment(settings: Settings, language: Language) -> jinja2.Environment:
    """The email templates: the site's ``templates/email/`` first, then the built-in ones."""
    env = templating.template_environment(
        settings, language, "email",
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
    )
    env.filters["html2text"] = html_to_text
    env.globals["format_date"] = language.date
    return env


def _language(settings: Settings) -> Language:
    return site_language(settings.site.language, settings.site.tz,
                         config_path=settings.config_path)


def _unique(entries: Iterable[Entry]) -> list[Entry]:
    seen: set[str] = set()
    unique = []
    for entry in entries:
        if entry.id not in seen:
            seen.add(entry.id)
            unique.append(entry)
    return unique


def _email_ready(fragment: str, site_url: str) -> Markup:
    """Wide tables scroll inside a box; every image has alt text; formulas are images
    (mail clients drop MathML)."""
    if not fragment.strip():
        return Markup("")
    fragment = mathml.email_math(fragment, site_url)
    container = lxml.html.fragment_fromstring(fragment, create_parent="div")
    for table in list(container.iter("table")):
        parent = table.getparent()
        if parent is None or "table-scroll" in (parent.get("class") or "").split():
            continue
        wrapper = etree.Element("div", {"class": "table-scroll"})
        wrapper.tail, table.tail = table.tail, None
        parent.replace(table, wrapper)
        wrapper.append(table)
    for image in container.iter("img"):
        if image.get("alt") is None:
            image.set("alt", "")
    serialized = lxml.html.tostring(container, encoding="unicode")
    return Markup(serialized[len("<div>"):-len("</div>")])


def _postal_lines(address: str) -> list[str]:
    return [line.strip() for line in address.splitlines() if line.strip()]


def _preheader(views: Sequence[EntryView], kind: str) -> str:
    if kind == "post" or len(views) == 1:
        return views[0].entry.summary_text[:150]
    return " · ".join(view.entry.title for view in views)[:150]


def _join_names(names: Sequence[str], language: Language) -> str:
    return format_list(list(names), locale=language.locale)


def _tidy_text(text: str) -> str:
    """No trailing spaces, at most one blank line in a row, one final newline."""
    lines = [
        line if line == SIGNATURE_SEPARATOR else line.rstrip()
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy).strip("\n") + "\n"

