"""The next edition of a newsletter as files an author can open: .html, .txt, .eml,
and as a test message to the author's own address.

Reads the store to find what is pending, never writes to it; when nothing is
pending (before the first digest, or nothing new), shows the most recent posts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from feedpub import urls
from feedpub.catalog import Catalog, load_catalog
from feedpub.config import NewsletterConfig, Settings
from feedpub.entries import Entry
from feedpub.errors import ContentError
from feedpub.mail.message import build_message
from feedpub.mail.render import Recipient, RenderedEdition, personalize, render_edition
from feedpub.mail.transports import SendResult, open_transport
from feedpub.store.addresses import parse_address

RECENT_LIMIT = 10
SAMPLE_EMAIL = "subscriber@example.com"
SAMPLE_NAME = "Sample Subscriber"
PREVIEW_TOKEN = "preview-token"
"""Stands for a signed token: links in a preview lead nowhere."""
TEST_SUBJECT_PREFIX = "[Test] "
"""Marks the subject of a test send, as Mailchimp, listmonk and Buttondown do."""


@dataclass(frozen=True)
class Preview:
    newsletter: str
    rendered: RenderedEdition
    pending: bool
    """False: nothing was pending, so these are the most recent posts."""
    html_path: Path
    text_path: Path
    eml_path: Path
    web_path: Path
    content_errors: tuple[ContentError, ...]

    @property
    def entry_count(self) -> int:
        return len(self.rendered.entry_ids)


def sample_recipient(settings: Settings) -> Recipient:
    return Recipient(
        email=SAMPLE_EMAIL,
        name=SAMPLE_NAME,
        unsubscribe_url=urls.subscriber_url(settings.web.url, "unsubscribe", PREVIEW_TOKEN),
        preferences_url=urls.subscriber_url(settings.web.url, "preferences", PREVIEW_TOKEN),
    )


def preview_entries(
    catalog: Catalog, newsletter: NewsletterConfig
) -> tuple[list[Entry], bool]:
    """(entries, pending): what the next digest holds, else the ``RECENT_LIMIT`` most
    recent posts of the newsletter's categories."""
    from feedpub.digest import in_categories

    pending = _pending_entries(catalog, newsletter)
    if pending:
        return pending, True
    recent = [
        ref for ref in catalog.published if in_categories(ref.categories, newsletter.categories)
    ]
    return catalog.load(recent[:RECENT_LIMIT]), False


def preview_edition(
    settings: Settings,
    *,
    newsletter: str | None,
    out_dir: Path | None,
    now: datetime,
) -> Preview:
    """Render the newsletter's next edition and write it to ``out_dir``
    (default ``.feedpub-cache/preview/``) as ``<name>.html``, ``.txt``, ``.eml``
    and ``<name>.web.html`` (the "view in browser" page)."""
    config = settings.newsletter(newsletter)
    catalog = load_catalog(settings, now)
    entries, pending = preview_entries(catalog, config)
    if not entries:
        raise ContentError(
            f"nothing to preview: no published post in {settings.posts_dir}"
            + (f" in the categories {', '.join(config.categories)}" if config.categories else ""),
            path=settings.posts_dir,
        )
    rendered = render_edition(
        entries, settings=settings, newsletter=config, kind="digest",
        edition_id="preview", date=now,
    )
    message = build_message(
        settings=settings, newsletter=config, rendered=rendered,
        recipient=sample_recipient(settings), edition_key=f"preview/{config.name}", date=now,
    )
    html, text = personalize(rendered, sample_recipient(settings))
    folder = out_dir if out_dir is not None else settings.cache_dir / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"{config.name}{suffix}"
             for suffix in (".html", ".txt", ".eml", ".web.html")}
    paths[".html"].write_text(html, encoding="utf-8")
    paths[".txt"].write_text(text, encoding="utf-8")
    paths[".eml"].write_bytes(message)
    paths[".web.html"].write_text(rendered.web_html, encoding="utf-8")
    return Preview(
        newsletter=config.name,
        rendered=rendered,
        pending=pending,
        html_path=paths[".html"],
        text_path=paths[".txt"],
        eml_path=paths[".eml"],
        web_path=paths[".web.html"],
        content_errors=tuple(catalog.errors),
    )


def send_test(settings: Settings, preview: Preview, address: str, *, now: datetime
              ) -> SendResult:
    """Send ``preview``'s edition to ``address`` through the configured transport: the
    message a subscriber gets, with :data:`TEST_SUBJECT_PREFIX` before the subject.

    Nothing is recorded (no delivery, no edition, no baseline): the author can send
    as many tests as they like, and the real edition still goes out. Its
    unsubscribe and preferences links carry :data:`PREVIEW_TOKEN` and lead to
    feedpub's page for a link that is not valid. Raises InvalidAddress and
    DeliveryError.
    """
    recipient_address = parse_address(address,
                                       allow_local=settings.mail.allow_local_addresses)
    config = settings.newsletter(preview.newsletter)
    recipient = dataclasses.replace(
        sample_recipient(settings), email=recipient_address.email,
        name=recipient_address.name or "",
    )
    test = dataclasses.replace(preview.rendered,
                               subject=TEST_SUBJECT_PREFIX + preview.rendered.subject)
    message = build_message(
        settings=settings, newsletter=config, rendered=test, recipient=recipient,
        edition_key=f"test/{config.name}", date=now,
    )
    with open_transport(settings.mail.transport) as transport:
        return transport.send(settings.mail.return_path, recipient_address.email, message)


def _pending_entries(catalog: Catalog, newsletter: NewsletterConfig) -> list[Entry]:
    """The next digest's entries, read without creating or migrating a database."""
    from feedpub import digest, store

    url = catalog.settings.database.url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []
    with store.open_store(url, migrate=False) as opened:
        if not store.is_current(opened.engine):
            return []
        return digest.pending_entries(catalog, opened, newsletter)
