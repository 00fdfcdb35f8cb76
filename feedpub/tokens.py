"""Signed, purpose-scoped tokens for the links in subscriber email.

Each purpose signs with its own salt, so an unsubscribe token is no
confirmation token. A token names one subscriber and carries that
subscriber's ``check`` (the store's token key): when the key changes, as it
does when a subscriber is forgotten, the old links stop working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from feedpub.errors import TokenError as TokenError  # re-exported: callers catch it here


def N_(message: str) -> str:
    """Marks ``message`` for the catalogs in ``feedpub/locale``; it is translated when shown."""
    return message


class Reason(str):
    """An English sentence that keeps its catalog msgid and values, so a page can translate it."""

    msgid: str
    values: Mapping[str, str]

    def __new__(cls, msgid: str, **values: str) -> Reason:
        reason = super().__new__(cls, msgid % values if values else msgid)
        reason.msgid = msgid
        reason.values = values
        return reason


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    RETURN_PATH = "return-path"
    """The VERP token of one delivery's envelope sender (:func:`make_return_token`)."""


MAX_ID = 2**31 - 1
"""The largest id a store's integer key holds (PostgreSQL's ``integer``): a token naming a
larger one names nobody, and must not reach the database as a number it cannot hold."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a token may be stamped: the clocks of the machine that signed
it (a sender) and of the one that reads it (``serve``) may disagree by this much."""


@dataclass(frozen=True)
class TokenClaim:
    subscriber_id: int
    check: str
    issued_at: datetime


class _SignerAt(TimestampSigner):
    """A TimestampSigner that stamps the time it is given instead of reading the clock."""

    def __init__(self, *args: Any, issued_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issued_at = issued_at

    def get_timestamp(self) -> int:
        return self.issued_at


def _serializer(secret: str, purpose: Purpose, issued_at: int = 0) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret,
        salt=f"feedpub.{purpose.value}",
        signer=_SignerAt,
        signer_kwargs={"issued_at": issued_at},
    )


def make_token(
    secret: str, purpose: Purpose, subscriber_id: int, *, check: str, now: datetime
) -> str:
    """A URL-safe token for ``purpose`` naming ``subscriber_id``, stamped with ``now``."""
    if not secret:
        raise TokenError("cannot sign a link without a secret")
    return _serializer(secret, purpose, int(now.timestamp())).dumps([subscriber_id, check])


def read_token(
    secret: str,
    purpose: Purpose,
    token: str,
    *,
    max_age: timedelta | None,
    now: datetime,
) -> TokenClaim:
    """Verify ``token`` for ``purpose``; older than ``max_age`` at ``now`` is expired.

    Raises TokenError for a token that is tampered with, made for another
    purpose or with another secret, expired, stamped in the future (beyond
    :data:`CLOCK_SKEW`), or naming an id no subscriber can have.
    """
    try:
        payload, issued_at = _serializer(secret, purpose).loads(token, return_timestamp=True)
    except BadSignature:
        raise TokenError(Reason(
            N_("this link is not valid (it was changed, or is for something else)")
        )) from None
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or type(payload[0]) is not int  # not a bool either
        or not 1 <= payload[0] <= MAX_ID
        or not isinstance(payload[1], str)
    ):
        raise TokenError(Reason(N_("this link is not valid (unexpected content)")))
    issued_at = issued_at.astimezone(UTC)
    if issued_at - now > CLOCK_SKEW:  # signed with our secret, but not by a clock we trust
        raise TokenError(Reason(
            N_("this link is not valid (it was changed, or is for something else)")
        ))
    if max_age is not None and now - issued_at > max_age:
        raise TokenError(Reason(
            N_("this link expired on %(date)s; ask for a new one"),
            date=f"{(issued_at + max_age):%Y-%m-%d}",
        ))
    return TokenClaim(subscriber_id=payload[0], check=payload[1], issued_at=issued_at)


# --- return paths (VERP) ---------------------------------------------------------

RETURN_TOKEN_MAC_CHARS = 16
"""Base32 characters of the HMAC in a return-path token: 80 bits."""
_RETURN_TOKEN = re.compile(rf"([0-9a-z]{{1,13}})-([a-z2-7]{{{RETURN_TOKEN_MAC_CHARS}}})")


def _return_mac(secret: str, delivery: str) -> str:
    key = f"feedpub.{Purpose.RETURN_PATH.value}:{secret}".encode()
    digest = hmac.new(key, delivery.encode("ascii"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:RETURN_TOKEN_MAC_CHARS]


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


def make_return_token(secret: str, delivery_id: int) -> str:
    """``<delivery id in base 36>-<16 base32 characters of HMAC>``, lower case.

    Short enough for an address's local part (``bounces+`` and a token stay far
    under 64 characters) and case-insensitive, since mail servers may fold the
    case of a local part. It has no date: a bounce may come back weeks later.
    """
    if not secret:
        raise TokenError("cannot sign a return path without a secret")
    if delivery_id < 0:
        raise ValueError(f"no return token for delivery {delivery_id}")
    delivery = _base36(delivery_id)
    return f"{delivery}-{_return_mac(secret, delivery)}"


def read_return_token(secret: str, token: str) -> int:
    """The delivery id a return-path token names; TokenError when it is not one of ours."""
    match = _RETURN_TOKEN.fullmatch(token.strip().lower())
    if match is None or not secret:
        raise TokenError("not a feedpub return-path token")
    delivery, mac = match.groups()
    if not hmac.compare_digest(mac, _return_mac(secret, delivery)):
        raise TokenError("the return-path token's signature does not match")
    return int(delivery, 36)
