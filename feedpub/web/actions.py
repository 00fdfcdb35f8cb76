"""What the web pages do, callable from Python without HTTP: sign up, confirm, leave, choose.

Every function takes the open :class:`~feedpub.store.Store`, the settings and
``now``; token errors are :class:`feedpub.tokens.TokenError`, bad addresses
:class:`feedpub.store.InvalidAddress`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from feedpub import urls
from feedpub.config import Settings
from feedpub.mail.message import build_confirmation_message
from feedpub.mail.render import Recipient, render_confirmation
from feedpub.mail.transports import open_transport
from feedpub.store import (
    Mode,
    Source,
    Status,
    Store,
    Subscriber,
    Subscription,
    add_subscriber,
    change_status,
    get_subscriptions,
    parse_address,
    remove_subscription,
    set_subscription,
    subscriber_for_token,
    unsubscribe_subscriber,
)
from feedpub.tokens import N_, Purpose, Reason, TokenError, make_token, read_token


@dataclass(frozen=True)
class Choice:
    """One newsletter, and how its mail should come."""

    newsletter: str
    mode: Mode = Mode.DIGEST


@dataclass(frozen=True)
class Selection:
    """What a form asks for: newsletters with their modes, and a category filter."""

    choices: tuple[Choice, ...]
    categories: tuple[str, ...] = ()
    """Empty: every category."""

    @property
    def newsletters(self) -> tuple[str, ...]:
        return tuple(choice.newsletter for choice in self.choices)


@dataclass(frozen=True)
class Confirmation:
    """A confirmation email to send (see :func:`send_confirmation`)."""

    subscriber_id: int
    email: str
    newsletters: tuple[str, ...]
    confirm_url: str


@dataclass(frozen=True)
class Preferences:
    subscriber: Subscriber
    subscriptions: tuple[Subscription, ...]


def link(settings: Settings, purpose: Purpose, subscriber: Subscriber, *, now: datetime) -> str:
    """The signed ``confirm/``, ``unsubscribe/`` or ``preferences/`` URL of a subscriber."""
    token = make_token(settings.require_secret(), purpose, subscriber.id,
                       check=subscriber.token_key, now=now)
    return urls.subscriber_url(settings.web.url, purpose.value, token)


def _check_selection(settings: Settings, selection: Selection) -> None:
    known = {newsletter.name for newsletter in settings.newsletters}
    unknown = [name for name in selection.newsletters if name not in known]
    if unknown:
        raise ValueError(f"no newsletter named {unknown[0]!r}")
    if not selection.choices:
        raise ValueError("choose at least one newsletter")


def _apply_selection(
    conn: Connection, settings: Settings, subscriber_id: int, selection: Selection,
    *, now: datetime,
) -> None:
    chosen = {choice.newsletter: choice for choice in selection.choices}
    for newsletter in settings.newsletters:
        choice = chosen.get(newsletter.name)
        if choice is None:
            remove_subscription(conn, subscriber_id, newsletter.name)
        else:
            set_subscription(conn, subscriber_id, newsletter.name, now=now, mode=choice.mode,
                             categories=selection.categories)


def request_subscription(
    store: Store, settings: Settings, address: str, selection: Selection, *, now: datetime
) -> Confirmation | None:
    """Record a sign-up from the web form; the confirmation email to send, or None.

    A new address becomes a pending subscriber with ``selection``. A pending,
    unsubscribed or bounced one keeps its status and takes ``selection``, which
    applies once the link in the email is followed. An active subscriber is
    left exactly as it is and gets no email (None): the form cannot be used to
    change someone's subscriptions, and their mail already carries a
    preferences link. Display names typed in the form are ignored for the
    same reason. Raises InvalidAddress, and ValueError for an empty or unknown
    ``selection``.
    """
    _check_selection(settings, selection)
    parsed = dataclasses.replace(parse_address(address), name=None)
    with store.write() as conn:
        result = add_subscriber(conn, parsed, now=now, status=Status.PENDING,
                                source=Source.WEB, detail="subscribe form")
        subscriber = result.subscriber
        if subscriber.status == Status.ACTIVE:
            return None
        _apply_selection(conn, settings, subscriber.id, selection, now=now)
    return Confirmation(
        subscriber_id=subscriber.id,
        email=subscriber.email,
        newsletters=selection.newsletters,
        confirm_url=link(settings, Purpose.CONFIRM, subscriber, now=now),
    )


def send_confirmation(settings: Settings, confirmation: Confirmation, *, now: datetime) -> None:
    """Mail the double opt-in message through ``mail.transport``. Raises DeliveryError."""
    newsletters = [settings.newsletter(name) for name in confirmation.newsletters]
    rendered = render_confirmation(settings, newsletters, date=now)
    message = build_confirmation_message(
        settings=settings,
        rendered=rendered,
        recipient=Recipient(email=confirmation.email, confirm_url=confirmation.confirm_url),
        date=now,
    )
    with open_transport(settings.mail.transport) as transport:
        transport.send(settings.mail.return_path, confirmation.email, message)


def subscriber_for(
    store: Store, settings: Settings, purpose: Purpose, token: str, *, now: datetime
) -> Subscriber:
    """The subscriber a link names, changing nothing. Raises TokenError."""
    max_age = timedelta(days=settings.web.confirm_days) if purpose == Purpose.CONFIRM else None
    claim = read_token(settings.require_secret(), purpose, token, max_age=max_age, now=now)
    with store.read() as conn:
        return subscriber_for_token(conn, claim)


def confirm(store: Store, settings: Settings, token: str, *, now: datetime) -> Subscriber:
    """Follow a confirmation link: the subscriber becomes active.

    Confirming proves the person asked, so an unsubscribed or bounced address
    that signed up again becomes active too, unless it left after the link
    was made (an old link never undoes a later unsubscribe). Raises
    TokenError for a tampered, expired or foreign link.
    """
    claim = read_token(settings.require_secret(), Purpose.CONFIRM, token,
                       max_age=timedelta(days=settings.web.confirm_days), now=now)
    with store.write() as conn:
        subscriber = subscriber_for_token(conn, claim)
        if subscriber.status == Status.ACTIVE:
            return subscriber
        if subscriber.status != Status.PENDING and subscriber.status_changed_at > claim.issued_at:
            raise TokenError(Reason(N_(
                "this link was sent before you unsubscribed; subscribe again for a new one"
            )))
        return change_status(conn, subscriber.id, Status.ACTIVE, now=now, source=Source.WEB,
                             detail="confirmation link", resubscribe=True)


def unsubscribe(
    store: Store, settings: Settings, token: str, *, now: datetime, one_click: bool = False
) -> Subscriber:
    """Follow an unsubscribe link (its button, or an RFC 8058 one-click POST).

    Unsubscribe links never expire. Raises TokenError.
    """
    claim = read_token(settings.require_secret(), Purpose.UNSUBSCRIBE, token, max_age=None,
                       now=now)
    with store.write() as conn:
        subscriber = subscriber_for_token(conn, claim)
        return unsubscribe_subscriber(
            conn, subscriber.id, now=now, source=Source.WEB,
            detail="one-click (RFC 8058)" if one_click else "unsubscribe page",
        )


def read_preferences(store: Store, settings: Settings, token: str, *, now: datetime) -> Preferences:
    """The subscriber a preferences link names, with their subscriptions. Raises TokenError."""
    claim = read_token(settings.require_secret(), Purpose.PREFERENCES, token, max_age=None,
                       now=now)
    with store.read() as conn:
        subscriber = subscriber_for_token(conn, claim)
        return Preferences(subscriber, tuple(get_subscriptions(conn, subscriber.id)))


def save_preferences(
    store: Store, settings: Settings, token: str, selection: Selection, *, now: datetime
) -> Preferences:
    """Replace a subscriber's newsletters, modes and categories.

    The link came by email, so it proves the person reads that mailbox: a
    subscriber who had left and saves preferences is active again. Raises
    TokenError, and ValueError for an empty or unknown ``selection``.
    """
    _check_selection(settings, selection)
    claim = read_token(settings.require_secret(), Purpose.PREFERENCES, token, max_age=None,
                       now=now)
    with store.write() as conn:
        subscriber = subscriber_for_token(conn, claim)
        _apply_selection(conn, settings, subscriber.id, selection, now=now)
        if subscriber.status != Status.ACTIVE:
            subscriber = change_status(conn, subscriber.id, Status.ACTIVE, now=now,
                                       source=Source.WEB, detail="preferences page",
                                       resubscribe=True)
        return Preferences(subscriber, tuple(get_subscriptions(conn, subscriber.id)))


def known_categories(names: Iterable[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """The names among ``allowed`` (a form may post anything)."""
    permitted = set(allowed)
    return tuple(sorted({name for name in names if name in permitted}))
