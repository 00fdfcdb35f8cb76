"""A rendered edition -> one MIME message per recipient, optionally DKIM-signed.

The email package builds the parts of a message that every recipient shares
once per edition (:func:`prepare_message`); per recipient only the personal
headers are formatted and the two bodies personalised and encoded, which keeps
a 100 KB edition well under a millisecond a message. With DKIM the shared parts
are canonicalised once too, and a signed message costs about half a
millisecond more (:class:`DkimSigner`). Headers with display
names or non-ASCII words are encoded with ``email.header.Header`` and
``email.utils.formataddr``: the newer header folder quotes the address of
``"Zoë \\"Z\\", Jr" <z@example.com>`` wrongly (CPython 3.11) and runs encoded
words together as ``?==?`` (3.12.5 to 3.13.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr, parsedate_to_datetime, quote
from pathlib import Path
from typing import TypeVar

import dkim
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)

from feedpub.config import DkimConfig, NewsletterConfig, Settings
from feedpub.errors import ConfigError, DeliveryError
from feedpub.mail.render import (
    PLACEHOLDER_PATTERN,
    MailContent,
    Recipient,
    RenderedEdition,
    personal_values,
)

__all__ = [
    "DkimKey",
    "DkimSigner",
    "MessageTemplate",
    "Recipient",
    "build_confirmation_message",
    "build_message",
    "message_id",
    "prepare_message",
]

SIGNED_HEADERS = (
    b"from", b"reply-to", b"to", b"subject", b"date", b"message-id", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type",
)
"""Signed even when absent (Reply-To), so that nobody can add them on the way."""
_SIGNED_TAG = b":".join(SIGNED_HEADERS[:7]) + b":\r\n " + b":".join(SIGNED_HEADERS[7:])
"""The ``h=`` tag's value, folded after a colon (RFC 6376 allows FWS around them)."""
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_SPACE_RUNS = re.compile(b"  +")
_WHITE_RUNS = re.compile(b"\t[\t ]*| [\t ]+")
"""The runs of white space that relaxed canonicalisation turns into one space, less the
single spaces, which it leaves as they are."""
_MIN_RSA_BITS = 1024
_Field = TypeVar("_Field", list[bytes], tuple[bytes, bytes])
"""A header field, as ``dkim.rfc822_parse`` gives it or canonicalised."""
_TEXT_MARK = b"FEEDPUB-TEXT-BODY-7B0E3C"
_HTML_MARK = b"FEEDPUB-HTML-BODY-7B0E3C"
_MAX_LINE = 78
_MAX_NAME = 200
"""Characters of a display name kept; longer ones are junk, not names."""


@dataclass(frozen=True)
class DkimKey:
    """A private key, read once, and the selector of the DNS record that publishes its
    public key (``selector._domainkey.domain``)."""

    algorithm: bytes
    """``rsa-sha256`` or ``ed25519-sha256`` (RFC 8463)."""
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @classmethod
    def read(cls, path: Path, selector: str, *, ed25519_key: bool = False) -> DkimKey:
        """The key in ``path`` (PEM); a :class:`ConfigError` naming the file, its key in
        feedpub.toml and how to make one, when it cannot be used."""
        kind, key, guide = (
            ("Ed25519", "mail.dkim_ed25519_key_file",
             "`openssl genpkey -algorithm ed25519 -out dkim-ed25519.pem`")
            if ed25519_key else
            ("RSA", "mail.dkim_key_file", "`openssl genrsa -out dkim.pem 2048`")
        )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the DKIM private key: {exc.strerror}; make one "
                              f"with {guide}", path=path, key=key) from None
        try:
            # OpenSSL's checks of an RSA key take 50 ms; signing once and verifying shows as
            # well that the key makes signatures its public key verifies, in half a ms.
            private_key = serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=True)
        except TypeError:
            raise ConfigError(f"is an encrypted {kind} private key: feedpub reads keys without a "
                              f"passphrase; make one with {guide}", path=path, key=key) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"is not a PEM {kind} private key that OpenSSL can read; make one "
                              f"with {guide}", path=path, key=key) from None
        if ed25519_key and isinstance(private_key, ed25519.Ed25519PrivateKey):
            return cls(b"ed25519-sha256", selector, private_key)
        if not ed25519_key and isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < _MIN_RSA_BITS:
                raise ConfigError(
                    f"is a {private_key.key_size}-bit RSA key: receivers ignore signatures "
                    f"by keys under {_MIN_RSA_BITS} bits (RFC 8301); make one with {guide}",
                    path=path, key=key)
            rsa_key = cls(b"rsa-sha256", selector, private_key)
            probe = hashlib.sha256(b"feedpub").digest()
            try:
                private_key.public_key().verify(rsa_key.sign(probe), probe, padding.PKCS1v15(),
                                                Prehashed(hashes.SHA256()))
            except InvalidSignature:
                raise ConfigError(
                    "is a damaged RSA key: its signatures do not verify with its own public "
                    f"key; make one with {guide}", path=path, key=key) from None
            return rsa_key
        found = type(private_key).__name__.removesuffix("PrivateKey")
        raise ConfigError(f"is not a PEM {kind} private key (the key in it is {found}); make "
                          f"one with {guide}", path=path, key=key)

    def sign(self, digest: bytes) -> bytes:
        """The signature of a SHA-256 ``digest`` of the signed header fields."""
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return self.private_key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest


@dataclass(frozen=True)
class DkimSigner:
    """DKIM keys read once; :meth:`sign` prepends one ``DKIM-Signature`` header per key.

    Relaxed/relaxed canonicalisation and the selection of the signed header
    fields are dkimpy's, through its own helpers or faster equivalents that
    tests/test_dkim.py checks against them, so that a signature is what dkimpy's
    verifier recomputes; the signing itself is OpenSSL's (``cryptography``), a
    fraction of a millisecond where dkimpy's pure-Python RSA takes 10 to 15.
    The RSA signature comes first: every receiver checks it, and some check
    only the first one. A :class:`MessageTemplate` with a signer canonicalises
    the parts its messages share once, and signs each message as it builds it.
    """

    domain: str
    keys: tuple[DkimKey, ...]

    @classmethod
    def from_config(cls, config: DkimConfig) -> DkimSigner:
        keys = [DkimKey.read(config.key_file, config.selector)]
        if config.ed25519_key_file is not None and config.ed25519_selector is not None:
            keys.append(DkimKey.read(config.ed25519_key_file, config.ed25519_selector,
                                     ed25519_key=True))
        return cls(domain=config.domain, keys=tuple(keys))

    def sign(self, message: bytes) -> bytes:
        """``message`` (CRLF line endings) with its signatures on top. The same message
        always gets the same signatures: their time (``t=``) is the message's Date."""
        headers, body = _parse(message)
        fields = _RELAXED.canonicalize_headers(_select(headers, SIGNED_HEADERS))
        return self.signatures(fields, _relaxed_body(body), _date_seconds(headers)) + message

    def signatures(self, fields: list[tuple[bytes, bytes]], relaxed_body: bytes,
                   timestamp: int | None) -> bytes:
        """The ``DKIM-Signature`` fields of a message: ``fields`` are its header fields that
        are signed (:data:`SIGNED_HEADERS`, selected as dkimpy does, in relaxed canonical
        form) and ``relaxed_body`` its body in relaxed canonical form."""
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body).digest())
        rest = b"".join([b"" if timestamp is None else b" t=%d;" % timestamp,
                         b"\r\n h=", _SIGNED_TAG, b";\r\n bh=", body_hash, b";\r\n b="])
        domain = self.domain.encode("idna")
        # RFC 6376 3.7: the signed header fields, canonicalised, then the signature's own
        # field with an empty b= and no line ending; the first part is hashed once.
        signed_fields = hashlib.sha256()
        for name, value in fields:
            signed_fields.update(name + b":" + value)
        signatures = []
        for key in self.keys:
            value = b"".join([b" v=1; a=", key.algorithm, b"; c=relaxed/relaxed;\r\n d=",
                              domain, b"; s=", key.selector.encode("ascii"), b";", rest])
            ((name, canonical),) = _RELAXED.canonicalize_headers([(b"DKIM-Signature", value)])
            hasher = signed_fields.copy()
            hasher.update(name + b":" + canonical.rstrip())
            signature = base64.b64encode(key.sign(hasher.digest()))
            folded = b"\r\n ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
            signatures.append(b"DKIM-Signature:" + value + folded + b"\r\n")
        return b"".join(signatures)


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``, which splits and joins every line of the body too: here
    only the header is split when every line ends in CRLF (the body is then the same)."""
    end = message.find(b"\r\n\r\n")
    if end <= 0 or message.count(b"\n") != message.count(b"\r\n"):
        headers, body = dkim.rfc822_parse(message)
        return headers, body
    headers, _ = dkim.rfc822_parse(message[:end + 4])
    return headers, message[end + 4:]


def _select(headers: Sequence[_Field], names: tuple[bytes, ...]) -> list[_Field]:
    """dkimpy's ``select_headers`` (RFC 6376 5.4.2: for each name, the last field not yet
    taken; none when there is none), with one pass over the header rather than one a name."""
    by_name: dict[bytes, list[_Field]] = {}
    for field in headers:
        by_name.setdefault(field[0].lower(), []).append(field)
    return [by_name[name].pop() for name in names if by_name.get(name)]


def _relaxed_body(body: bytes) -> bytes:
    """dkimpy's relaxed body canonicalisation (``Relaxed.canonicalize_body``), faster."""
    return _relaxed_end(_relaxed_lines(body))


def _relaxed_lines(text: bytes) -> bytes:
    """The line-by-line part of relaxed body canonicalisation: white space at the end of a
    line removed, runs of it made one space. dkimpy runs two regular expressions over every
    space for it, milliseconds a message; when no line ends in white space (quoted-printable
    and base64 never write one) only runs of two or more spaces, and tabs, change. Text cut
    at line ends may be canonicalised piece by piece. tests/test_dkim.py checks it against
    dkimpy's."""
    canonical: bytes
    tabs = b"\t" in text
    if b" \r\n" in text or (tabs and b"\t\r\n" in text):
        canonical = compress_whitespace(strip_trailing_whitespace(text))
    elif tabs:
        canonical = _WHITE_RUNS.sub(b" ", text)
    else:
        canonical = _SPACE_RUNS.sub(b" ", text) if b"  " in text else text
    return canonical


def _relaxed_end(lines: bytes) -> bytes:
    """The end of relaxed body canonicalisation, over the whole body: no empty lines at the
    end, and a line ending after the last line."""
    canonical: bytes = correct_empty_body(strip_trailing_lines(lines))
    return canonical


def _date_seconds(headers: list[list[bytes]]) -> int | None:
    """The time of the Date header, the signatures' ``t=``; None without a readable one
    (``t=`` is optional)."""
    for name, value in headers:
        if name.lower() == b"date":
            try:
                return int(parsedate_to_datetime(value.decode("ascii").strip()).timestamp())
            except (ValueError, TypeError, UnicodeDecodeError):
                return None
    return None


@dataclass(frozen=True)
class MessageTemplate:
    """Everything the messages of one edition share, encoded once."""

    html: EncodedBody
    text: EncodedBody
    edition_key: str
    message_id_domain: str
    unsubscribe_mailto: str | None
    """None for a message that is not sent to a list (a confirmation)."""
    head: bytes
    """The shared headers and MIME preamble up to the text body."""
    between: bytes
    tail: bytes
    signer: DkimSigner | None
    relaxed: RelaxedParts | None = None
    """What DKIM signs of the shared parts, made once when ``signer`` is set."""

    def build(self, recipient: Recipient, *, date: datetime) -> bytes:
        """The message for one recipient, CRLF line endings, signed when DKIM is set."""
        personal = [
            ("To", _address_header("To", recipient.name, recipient.email)),
            ("Date", _date_header(date)),
            ("Message-ID",
             message_id(self.edition_key, recipient.email, self.message_id_domain)),
        ]
        if self.unsubscribe_mailto is not None:
            url = _header_url(recipient.unsubscribe_url, "unsubscribe_url")
            personal.append(
                ("List-Unsubscribe", f"<{url}>,\r\n <{self.unsubscribe_mailto}>")
            )
        raw, escaped = personal_values(recipient)
        fields = "".join(f"{name}: {value}\r\n" for name, value in personal).encode("ascii")
        if self.signer is None or self.relaxed is None:
            message = b"".join([fields, self.head, self.text.encode(raw), self.between,
                                self.html.encode(escaped), self.tail])
            return self.signer.sign(message) if self.signer else message
        # Signed: the shared parts are canonicalised already, the personal ones here.
        text, relaxed_text = self.text.encode_relaxed(raw)
        html, relaxed_html = self.html.encode_relaxed(escaped)
        shared = self.relaxed
        body = _relaxed_end(b"".join([shared.body_start, relaxed_text, shared.between,
                                      relaxed_html, shared.tail]))
        personal_fields = _RELAXED.canonicalize_headers(dkim.rfc822_parse(fields + b"\r\n")[0])
        signed = _select(personal_fields + shared.fields, SIGNED_HEADERS)
        signatures = self.signer.signatures(signed, body, int(date.timestamp()))
        return b"".join([signatures, fields, self.head, text, self.between, html, self.tail])


@dataclass(frozen=True)
class RelaxedParts:
    """The shared parts of a template as DKIM signs them (relaxed canonicalisation): the
    header fields that all recipients' messages share, and the shared parts of the body.
    Every part of the body ends a line, so that the parts may be canonicalised apart."""

    fields: list[tuple[bytes, bytes]]
    """In relaxed canonical form."""
    body_start: bytes
    between: bytes
    tail: bytes

    @classmethod
    def of(cls, head: bytes, between: bytes, tail: bytes,
           bodies: tuple[EncodedBody, ...]) -> RelaxedParts | None:
        """None when a part does not end a line: then each message is signed whole."""
        fields, blank, body_start = head.partition(b"\r\n\r\n")
        if not (blank and body_start.endswith(b"\r\n") and between.endswith(b"\r\n")
                and all(body.relaxed for body in bodies)):
            return None
        return cls(_RELAXED.canonicalize_headers(dkim.rfc822_parse(fields + b"\r\n\r\n")[0]),
                   _relaxed_lines(body_start),
                   _relaxed_lines(between), _relaxed_lines(tail))


def prepare_message(
    *,
    settings: Settings,
    newsletter: NewsletterConfig | None,
    rendered: MailContent,
    edition_key: str,
    signer: DkimSigner | None = None,
) -> MessageTemplate:
    """Encode what all recipients of an edition share; call once per edition.

    ``newsletter`` None makes a one-to-one message (a confirmation): no
    List-* headers, no ``Precedence: bulk``. When ``settings.mail.dkim`` is
    set and no ``signer`` is given, the key is read here.
    """
    if signer is None and settings.mail.dkim is not None:
        signer = DkimSigner.from_config(settings.mail.dkim)
    from_name, from_email = parseaddr(settings.mail.from_address)
    from_domain = _ascii_domain(from_email.rpartition("@")[2])
    shared = [
        ("From", _address_header("From", from_name, from_email)),
        ("Subject", _unstructured("Subject", rendered.subject)),
    ]
    if settings.mail.reply_to:
        reply_name, reply_email = parseaddr(settings.mail.reply_to)
        shared.append(("Reply-To", _address_header("Reply-To", reply_name, reply_email)))
    mailto = None
    if newsletter is not None:
        list_host = f"{newsletter.name}.{_ascii_domain(settings.site.host)}"
        shared += [
            ("List-Id", f"{_phrase('List-Id', newsletter.title)} <{list_host}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ]
        mailto = f"mailto:{_ascii_address(from_email)}?subject=unsubscribe"
    shared.append(("X-Feedpub-Edition", _unstructured("X-Feedpub-Edition", edition_key)))

    html, text = EncodedBody.prepare(rendered.html), EncodedBody.prepare(rendered.text)
    message = EmailMessage(policy=policy.SMTP)
    for name, value in shared:
        message.set_raw(name, value)
    message.set_content(_TEXT_MARK.decode())
    message.add_alternative(_HTML_MARK.decode(), subtype="html")
    message.set_boundary("=_feedpub_" + hashlib.sha256(edition_key.encode()).hexdigest()[:24])
    for part, body in zip(message.iter_parts(), (text, html), strict=True):
        part.replace_header("Content-Transfer-Encoding", body.encoding)
    skeleton = message.as_bytes()
    head, found_text, rest = skeleton.partition(_TEXT_MARK + b"\r\n")
    between, found_html, tail = rest.partition(_HTML_MARK + b"\r\n")
    if not (found_text and found_html):
        raise RuntimeError("the email package changed how it writes a body")
    return MessageTemplate(
        html=html,
        text=text,
        edition_key=edition_key,
        message_id_domain=from_domain,
        unsubscribe_mailto=mailto,
        head=head,
        between=between,
        tail=tail,
        signer=signer,
        relaxed=RelaxedParts.of(head, between, tail, (text, html)) if signer else None,
    )


def build_message(
    *,
    settings: Settings,
    newsletter: NewsletterConfig,
    rendered: MailContent,
    recipient: Recipient,
    edition_key: str,
    date: datetime,
    signer: DkimSigner | None = None,
) -> bytes:
    """One recipient's message of an edition. To send many, use :func:`prepare_message`."""
    template = prepare_message(settings=settings, newsletter=newsletter, rendered=rendered,
                               edition_key=edition_key, signer=signer)
    return template.build(recipient, date=date)


def build_confirmation_message(
    *,
    settings: Settings,
    rendered: RenderedEdition,
    recipient: Recipient,
    date: datetime,
    signer: DkimSigner | None = None,
) -> bytes:
    """The double opt-in message from :func:`feedpub.mail.render.render_confirmation`."""
    template = prepare_message(settings=settings, newsletter=None, rendered=rendered,
                               edition_key=f"{rendered.edition_id}:{recipient.confirm_url}",
                               signer=signer)
    return template.build(recipient, date=date)


def message_id(edition_key: str, email: str, domain: str) -> str:
    """``<hash@domain>``: the same edition and address always give the same id."""
    digest = hashlib.sha256(f"{edition_key}\0{email.strip().lower()}".encode()).hexdigest()
    return f"<{digest[:32]}@{domain}>"


def _address_header(header: str, name: str, email: str) -> str:
    address = _ascii_address(email)
    name = " ".join(name.split())[:_MAX_NAME]
    if not name:
        return address
    if name.isascii() and "=?" not in name:
        formatted = formataddr((name, address))
        if len(header) + 2 + len(formatted) <= _MAX_LINE:
            return formatted
        return formatted.removesuffix(f" <{address}>") + f"\r\n <{address}>"
    encoded = _encoded_words(header, name)
    last_line = encoded.rpartition("\n")[2]
    separator = " " if len(last_line) + len(address) + 3 <= _MAX_LINE else "\r\n "
    return f"{encoded}{separator}<{address}>"


def _phrase(header: str, text: str) -> str:
    text = " ".join(text.split())
    if text.isascii() and "=?" not in text:
        return f'"{quote(text)}"'
    return _encoded_words(header, text)


def _encoded_words(header: str, text: str) -> str:
    """RFC 2047: one ``=?utf-8?b?…?=`` word when it fits on the first line, else
    ``Header`` splits it into several, at character boundaries."""
    word = f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?="
    if len(word) <= 75 and len(header) + 2 + len(word) <= _MAX_LINE:
        return word
    return Header(text, "utf-8", maxlinelen=75, header_name=header).encode(linesep="\r\n")


def _unstructured(header: str, text: str) -> str:
    """One folded header value: ASCII words as they are, else RFC 2047 encoded words."""
    text = " ".join(text.split())
    plain = text.isascii() and "=?" not in text and all(len(w) < 70 for w in text.split())
    charset = "us-ascii" if plain else "utf-8"
    return Header(text, charset, maxlinelen=75, header_name=header).encode(linesep="\r\n")


def _ascii_address(email: str) -> str:
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain or any(c in email for c in "\r\n<> "):
        raise DeliveryError(f"{email!r} is not an email address", permanent=True)
    if not local.isascii():
        raise DeliveryError(
            f"{email!r} has a non-ASCII local part, which needs SMTPUTF8 (not supported)",
            permanent=True,
        )
    return f"{local}@{_ascii_domain(domain)}"


def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise DeliveryError(f"{domain!r} is not a valid domain name", permanent=True) from None


def _header_url(url: str, field: str) -> str:
    if not url.startswith(("https://", "http://")) or not url.isascii() or any(
        c in url for c in " \t\r\n<>"
    ):
        raise DeliveryError(
            f"Recipient.{field} must be an absolute http(s) URL in ASCII, not {url!r}",
            permanent=True,
        )
    return url


def _date_header(date: datetime) -> str:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("the Date of a message must be timezone-aware")
    return format_datetime(date)


def _crlf(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return text.replace("\n", "\r\n")


def _best_encoding(text: str) -> str:
    """Quoted-printable for mostly-ASCII text, base64 when that is shorter (CJK)."""
    size = len(text.encode("utf-8"))
    ascii_size = len(text.encode("ascii", "ignore"))
    quoted_printable_size = ascii_size + 3 * (size - ascii_size)
    return "quoted-printable" if quoted_printable_size <= size * 4 / 3 else "base64"


@dataclass(frozen=True)
class EncodedBody:
    """A body with placeholders, encoded as far as it can be before the recipient is known.

    Quoted-printable is encoded once, piece by piece between the placeholders:
    each piece ends with a soft line break (``=`` CRLF), which decoders remove,
    so a personal value can be encoded alone and spliced in. Base64 cannot be
    spliced; it is encoded whole per recipient (in C, and only for CJK-heavy
    bodies, where it is the shorter encoding).
    """

    encoding: str
    pieces: tuple[bytes | str, ...]
    """Quoted-printable: encoded bytes, and placeholder tokens (str) between them.
    Base64: the whole text (one str)."""
    relaxed: tuple[bytes | str, ...] = ()
    """``pieces`` as DKIM signs them (relaxed canonicalisation); () when a piece does not
    end a line, so that the pieces cannot be canonicalised apart."""

    @classmethod
    def prepare(cls, text: str) -> EncodedBody:
        text = _crlf(text)
        encoding = _best_encoding(text)
        if encoding == "base64":  # encoded whole per recipient, ending a line
            return cls(encoding, (text,), (text,))
        pieces: list[bytes | str] = []
        position = 0
        for match in PLACEHOLDER_PATTERN.finditer(text):
            pieces += [_soft_broken(text[position:match.start()]), match.group(0)]
            position = match.end()
        pieces.append(_quoted_printable(text[position:]))
        relaxed: tuple[bytes | str, ...] = ()
        if all(p.endswith(b"\r\n") for p in pieces if isinstance(p, bytes) and p):
            relaxed = tuple(_relaxed_lines(p) if isinstance(p, bytes) else p for p in pieces)
        return cls(encoding, tuple(pieces), relaxed)

    def encode_relaxed(self, values: dict[str, str]) -> tuple[bytes, bytes]:
        """:meth:`encode`, and the encoded body in relaxed canonical form (DKIM), but for
        its end (:func:`_relaxed_end`); a personal value is canonicalised alone."""
        if self.encoding == "base64":
            encoded = self.encode(values)
            return encoded, _relaxed_lines(encoded)
        encoded_pieces, relaxed_pieces = [], []
        for piece, relaxed in zip(self.pieces, self.relaxed, strict=True):
            if isinstance(piece, bytes):
                assert isinstance(relaxed, bytes)
                encoded_pieces.append(piece)
                relaxed_pieces.append(relaxed)
            else:  # ends a line, as every piece
                value = _soft_broken(values.get(piece, piece))
                encoded_pieces.append(value)
                relaxed_pieces.append(_relaxed_lines(value))
        return b"".join(encoded_pieces), b"".join(relaxed_pieces)

    def encode(self, values: dict[str, str]) -> bytes:
        if self.encoding == "base64":
            (text,) = self.pieces
            assert isinstance(text, str)
            personal = PLACEHOLDER_PATTERN.sub(lambda m: values.get(m.group(0), m.group(0)), text)
            return base64.encodebytes(personal.encode("utf-8")).replace(b"\n", b"\r\n")
        return b"".join(
            piece if isinstance(piece, bytes) else _soft_broken(values.get(piece, piece))
            for piece in self.pieces
        )


def _soft_broken(text: str) -> bytes:
    """Quoted-printable for text in the middle of a line, ending in a soft line break."""
    if not text:
        return b""
    return _quoted_printable(text) + b"=\r\n"


def _quoted_printable(text: str) -> bytes:
    """CRLF throughout: binascii breaks long lines with the ending of the first line it
    sees, which is LF when the text has no line ending at all."""
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
