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


# Domains that only mean something on one machine or one network: ``user@localhost``
# is what people use to try feedpub against a local mail server. email-validator
# refuses them (no period, or a special-use name); a site may accept them.
_LOCAL_TOP_LABELS = frozenset({"localhost", "localdomain", "local", "test", "internal", "lan",
                               "home"})
_LOCAL_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
ALLOW_LOCAL_HINT = (
    "set [mail] allow_local_addresses = true in feedpub.toml to accept such addresses"
)


def is_local_domain(domain: str) -> bool:
    """``localhost``, a bare host name (``mailhost``) or a name under ``.local``,
    ``.test``, ``.internal``...: an address that only a local mail server delivers."""
    if not _LOCAL_DOMAIN.fullmatch(domain):
        return False
    return "." not in domain or domain.rpartition(".")[2].lower() in _LOCAL_TOP_LABELS


def _local_address(bare: str) -> str | None:
    """``bare`` normalised, if it is a valid local part at a local domain."""
    local, at, domain = bare.rpartition("@")
    if not at or not is_local_domain(domain):
        return None
    try:
        # The local part is checked as email-validator checks any other.
        checked = validate_email(f"{local}@example.com", check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part}@{domain.lower()}"


def parse_address(text: str, *, allow_local: bool = False, allow_smtputf8: bool = False
                  ) -> Address:
    """``ada@example.com`` or ``Ada Lovelace <Ada@Example.COM>`` -> :class:`Address`.

    The address is checked by email-validator (syntax only: no DNS lookups);
    the display name may be quoted or not, in any script. ``allow_local``
    also accepts addresses at a local domain (``root@localhost``, see
    :func:`is_local_domain`), which are refused otherwise. An address with
    non-ASCII letters before the @ (``jörg@example.com``) needs SMTPUTF8, which
    feedpub's messages do not use: it is refused unless ``allow_smtputf8``
    (to look up an address stored before this rule). Raises
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
            local = _local_address(bare)
            if local is not None and allow_local:
                email = local
            elif local is not None:
                raise InvalidAddress(
                    f"{stripped!r} is a local address (its domain is not on the internet); "
                    f"{ALLOW_LOCAL_HINT}"
                ) from None
            else:
                raise InvalidAddress(
                    f"{stripped!r} is not a valid email address: {exc}"
                ) from None
    if not allow_smtputf8 and not email.rpartition("@")[0].isascii():
        # Refused at the door rather than accepted and never delivered: mail to such an
        # address needs SMTPUTF8 all the way, which feedpub's messages do not use.
        raise InvalidAddress(
            f"{stripped!r} has non-ASCII letters before the @, which feedpub cannot send "
            "mail to (it needs SMTPUTF8); use an address with ASCII letters before the @"
        )
    return Address(email=email, key=email_key(email), name=name)
