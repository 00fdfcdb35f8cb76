"""Each recipient's message, built from the edition's stored strings."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from feedpub import urls
from feedpub.config import Settings
from feedpub.mail.message import DkimSigner, MessageTemplate, message_id, prepare_message
from feedpub.mail.render import Recipient
from feedpub.sender.options import Clock
from feedpub.store import queue
from feedpub.store.editions import Edition, get_edition
from feedpub.store.engine import Store
from feedpub.tokens import Purpose, make_token


class Composer:
    """Builds each recipient's message from the edition's stored strings.

    What the messages of an edition share is encoded once and kept (a few
    dozen editions at most); per recipient only the personal parts are made.
    With DKIM the template signs each message as it builds it (the shared parts are
    canonicalised once per edition).
    """

    def __init__(self, settings: Settings, store: Store, clock: Clock,
                 signer: DkimSigner | None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.signer = signer
        self._editions: OrderedDict[int, Prepared | None] = OrderedDict()

    def prepared(self, edition_id: int) -> Prepared | None:
        if edition_id in self._editions:
            self._editions.move_to_end(edition_id)
            return self._editions[edition_id]
        with self.store.read() as conn:
            edition = get_edition(conn, edition_id)
        prepared = None
        if edition is not None and any(
            n.name == edition.newsletter for n in self.settings.newsletters
        ):
            key = edition_key(edition)
            template = prepare_message(
                settings=self.settings,
                newsletter=self.settings.newsletter(edition.newsletter),
                rendered=edition,
                edition_key=key,
                signer=self.signer,  # else it reads the key file again
            )
            prepared = Prepared(edition, key, template)
        self._editions[edition_id] = prepared
        while len(self._editions) > 64:
            self._editions.popitem(last=False)
        return prepared

    def skip_reason(self, claim: queue.Claim) -> str | None:
        if not claim.subscriber_active:
            return "the subscriber is no longer active"
        if self.prepared(claim.edition_id) is None:
            return "the edition or its newsletter is gone (not in feedpub.toml)"
        return None

    def message(self, claim: queue.Claim) -> tuple[bytes, str]:
        prepared = self.prepared(claim.edition_id)
        assert prepared is not None
        settings = self.settings
        secret = settings.require_secret()
        now = self.clock()

        def link(purpose: Purpose) -> str:
            token = make_token(secret, purpose, claim.subscriber_id, check=claim.token_key,
                               now=now)
            return urls.subscriber_url(settings.web.url, purpose.value, token)

        recipient = Recipient(
            email=claim.email,
            name=claim.name or "",
            unsubscribe_url=link(Purpose.UNSUBSCRIBE),
            preferences_url=link(Purpose.PREFERENCES),
        )
        data = prepared.template.build(recipient, date=now)
        return data, message_id(prepared.key, claim.email, prepared.template.message_id_domain)


@dataclass(frozen=True)
class Prepared:
    edition: Edition
    key: str
    template: MessageTemplate


def edition_key(edition: Edition) -> str:
    """Names the edition in its messages' ``Message-ID`` and ``X-Feedpub-Edition``: the same
    on every worker, so a message sent twice has the same Message-ID both times."""
    return f"{edition.newsletter}/{edition.period_key}"
