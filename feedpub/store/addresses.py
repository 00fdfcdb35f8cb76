"""Email addresses as typed by people -> one normalised form, and the key that makes them unique."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from feedpub.errors import InvalidAddress


@dataclass(frozen=True)
class Address:
    email: str
    """Normalised: the local part as given, the domain lower-cased (IDN in Unicode)."""
    key: str
    """Lower-cased ``email``: two addresses with the same key are one subscriber."""
    name: str | None
    """The display name (``Ada <ada@example.com>``) or None."""


# A plain ASCII address that email-validator certainly accepts as it is (domain
# lower-cased). email-validator spends ~70 µs an address, mostly checking the
# domain's Unicode; this takes a few, which a 100,000-row import needs. Anything
# else goes to email-validator; tests check that both always agree.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(
    rf"(?P<local>{_ATEXT}+(?:\.{_ATEXT}+)*)@(?P<domain>(?:{_LABEL}\.)+[A-Za-z]{{2,63}})"
)
_CASE_INSENSITIVE_LOCAL = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def _plain_address(text: str) -> str | None:
    """``text`` normalised, if it is a plain address; None means: ask email-validator."""
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(text) > 254:
        return None
    local, domain = match["local"], match["domain"].lower()
    if (
        len(local) > 64
        or len(domain) > 253
        or "--" in domain
        or local.lower() in _CASE_INSENSITIVE_LOCAL
        or any(domain == d or domain.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES)
    ):
        return None
    return f"{local}@{domain}"


def email_key(email: str) -> str:
    return email.lower()


def clean_name(name: str | None) -> str | None:
    """One line of printable text, or None: names end up in email headers."""
    if name is None:
        return None
    if name.isprintable():  # no control characters, no separators but the ASCII space
        return " ".join(name.split()) or None
    printable = "".join(
        " " if unicodedata.category(c).startswith(("C", "Z")) else c for c in name
    )
    collapsed = " ".join(printable.split())
    return collapsed or None


_DISPLAY_FORM = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<address>[^<>]*)>", re.DOTALL)


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def parse_address(text: str) -> Address:
    """``ada@example.com`` or ``Ada Lovelace <Ada@Example.COM>`` -> :class:`Address`.

    The address is checked by email-validator (syntax only: no DNS lookups);
    the display name may be quoted or not, in any script. Raises
    :class:`InvalidAddress`.
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidAddress("empty email address")
    name: str | None = None
    bare = stripped
    display = _DISPLAY_FORM.fullmatch(stripped)
    if display is not None:
        name, bare = clean_name(_unquote(display["name"])), display["address"].strip()
    email = _plain_address(bare)
    if email is None:
        try:
            email = validate_email(bare, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise InvalidAddress(f"{stripped!r} is not a valid email address: {exc}") from None
    return Address(email=email, key=email_key(email), name=name)
