"""Email: render an edition once (:mod:`.render`), then one message per recipient
(:mod:`.message`), handed to a transport (:mod:`.transports`).

>>> rendered = render_edition(entries, settings=s, newsletter=n, kind="digest",
...                           edition_id="2026-w05", date=now)        # doctest: +SKIP
>>> template = prepare_message(settings=s, newsletter=n, rendered=rendered,
...                            edition_key="weekly/2026-w05")         # doctest: +SKIP
>>> data = template.build(Recipient("ada@example.com", "Ada", unsub, prefs),
...                       date=now)                                   # doctest: +SKIP
"""

from __future__ import annotations

from feedpub.mail.message import (
    DkimSigner,
    MessageTemplate,
    build_confirmation_message,
    build_message,
    message_id,
    prepare_message,
    sign_message,
)
from feedpub.mail.render import (
    MailContent,
    Recipient,
    RenderedEdition,
    personalize,
    render_confirmation,
    render_edition,
    render_subject,
)

__all__ = [
    "DkimSigner",
    "MailContent",
    "MessageTemplate",
    "Recipient",
    "RenderedEdition",
    "build_confirmation_message",
    "build_message",
    "message_id",
    "personalize",
    "prepare_message",
    "render_confirmation",
    "render_edition",
    "render_subject",
    "sign_message",
]
