"""A rendered edition -> one MIME message per recipient, optionally DKIM-signed.

The email package builds the parts of a message that every recipient shares
once per edition (:func:`prepare_message`); per recipient only the personal
headers are formatted and the two bodies personalised and encoded, which keeps
a 100 KB edition well under a millisecond a message. Headers with display
names or non-ASCII words are encoded with ``email.header.Header`` and
``email.utils.formataddr``: the newer header folder quotes the address of
``"Zoë \\"Z\\", Jr" <z@example.com>`` wrongly (CPython 3.11) and runs encoded
words together as ``?==?`` (3.12.5 to 3.13.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr, quote

import dkim

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
_TEXT_MARK = b"FEEDPUB-TEXT-BODY-7B0E3C"
_HTML_MARK = b"FEEDPUB-HTML-BODY-7B0E3C"
_MAX_LINE = 78
_MAX_NAME = 200
"""Characters of a display name kept; longer ones are junk, not names."""


@dataclass(frozen=True)
class DkimSigner:
    """A DKIM key read once; :meth:`sign` prepends a ``DKIM-Signature`` header."""

    selector: str
    domain: str
    private_key: bytes

    @classmethod
    def from_config(cls, config: DkimConfig) -> DkimSigner:
        try:
            key = config.key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the DKIM private key: {exc.strerror}",
                              path=config.key_file, key="mail.dkim_key_file") from None
        try:
            dkim.crypto.parse_pem_private_key(key)
        except (dkim.KeyFormatError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"is not a PEM RSA private key ({exc}); make one with "
                "`openssl genrsa -out dkim.pem 2048`",
                path=config.key_file, key="mail.dkim_key_file",
            ) from None
        return cls(selector=config.selector, domain=config.domain, private_key=key)

    def sign(self, message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("idna"),
            self.private_key,
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return signature + message


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
        message = b"".join([
            "".join(f"{name}: {value}\r\n" for name, value in personal).encode("ascii"),
            self.head,
            self.text.encode(raw),
            self.between,
            self.html.encode(escaped),
            self.tail,
        ])
        return self.signer.sign(message) if self.signer else message


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

    @classmethod
    def prepare(cls, text: str) -> EncodedBody:
        text = _crlf(text)
        encoding = _best_encoding(text)
        if encoding == "base64":
            return cls(encoding, (text,))
        pieces: list[bytes | str] = []
        position = 0
        for match in PLACEHOLDER_PATTERN.finditer(text):
            pieces += [_soft_broken(text[position:match.start()]), match.group(0)]
            position = match.end()
        pieces.append(_quoted_printable(text[position:]))
        return cls(encoding, tuple(pieces))

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
