"""One MIME message per recipient: structure, every header, encodings, DKIM."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import dkim
import pytest

from feedpub.config import DkimConfig, Settings
from feedpub.errors import ConfigError, DeliveryError
from feedpub.mail.message import (
    DkimSigner,
    build_confirmation_message,
    build_message,
    message_id,
    prepare_message,
)
from feedpub.mail.render import (
    Recipient,
    RenderedEdition,
    personalize,
    render_confirmation,
    render_edition,
)
from tests.conftest import SiteFactory
from tests.test_mail_render import make_entry, site_settings

SEND_DATE = datetime(2025, 2, 10, 9, 30, tzinfo=timezone(timedelta(hours=8)))
ENCODED_WORD = re.compile(r"=\?utf-8\?[bBqQ]\?[^?\s]*\?=")

ADA = Recipient(
    email="ada@example.org",
    name='Zoë "Z" Lovelace, Jr. 王小明 🎉',
    unsubscribe_url="https://example.com/unsubscribe/AAA.bbb-1",
    preferences_url="https://example.com/preferences/AAA.bbb-1",
)
BOB = Recipient(
    email="bob@example.net",
    name="Bob",
    unsubscribe_url="https://example.com/unsubscribe/CCC.ddd-2",
    preferences_url="https://example.com/preferences/CCC.ddd-2",
)


def parse(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def raw_headers(data: bytes) -> dict[str, str]:
    """Header name -> raw value as it is on the wire (folding kept)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    headers: dict[str, str] = {}
    name = ""
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            headers[name] += "\r\n" + line
        else:
            name, _, value = line.partition(": ")
            headers[name] = value
    return headers


@pytest.fixture
def settings(make_site: SiteFactory) -> Settings:
    return site_settings(
        make_site,
        language='language = "zh-TW"',
        schedule='schedule = "0 9 * * MON"\ntitle = "週報 Weekly"',
        transport='transport = "maildir:outbox"\nreply_to = "Ada <ada-replies@example.com>"',
    )


@pytest.fixture
def rendered(settings: Settings) -> RenderedEdition:
    entries = [make_entry(2, title="中文標題：測試 🎉🇨🇳 and a rather long English tail to fold"),
               make_entry(1, title="Émoji 👩‍💻 post")]
    return render_edition(entries, settings=settings, newsletter=settings.newsletters[0],
                          kind="digest", edition_id="2025-02-10", date=SEND_DATE)


def build(settings: Settings, rendered: RenderedEdition, recipient: Recipient = ADA,
          **kwargs: object) -> bytes:
    return build_message(settings=settings, newsletter=settings.newsletters[0],
                         rendered=rendered, recipient=recipient,
                         edition_key="weekly/2025-02-10", date=SEND_DATE, **kwargs)  # type: ignore[arg-type]


def test_structure_is_multipart_alternative_text_then_html(settings: Settings,
                                                            rendered: RenderedEdition):
    message = parse(build(settings, rendered))
    assert message.get_content_type() == "multipart/alternative"
    assert message["MIME-Version"] == "1.0"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    text, html = (p.get_content() for p in parts)
    assert "中文標題：測試 🎉🇨🇳" in text and "中文標題：測試 🎉🇨🇳" in html
    assert ADA.unsubscribe_url in text and ADA.unsubscribe_url in html
    assert "%%FEEDPUB" not in text + html
    assert html.rstrip().endswith("</html>")


def test_every_header(settings: Settings, rendered: RenderedEdition):
    message = parse(build(settings, rendered))
    assert message["From"] == "Test Site <news@example.com>"
    assert message["Reply-To"] == "Ada <ada-replies@example.com>"
    to = message["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == (ADA.name, ADA.email)
    assert message["Subject"] == rendered.subject
    assert message["Subject"].startswith("Test Site: 中文標題：測試 🎉🇨🇳")
    assert message["Subject"].endswith("(另有 1 篇)")
    date = parsedate_to_datetime(message["Date"])
    assert date == SEND_DATE and date.utcoffset() == timedelta(hours=8)
    assert message["Date"].endswith("+0800")
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.com>", message["Message-ID"])
    assert message["List-Id"] == "週報 Weekly <weekly.example.com>"
    assert message["List-Unsubscribe"] == (
        "<https://example.com/unsubscribe/AAA.bbb-1>, "
        "<mailto:news@example.com?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk"
    assert message["X-Feedpub-Edition"] == "weekly/2025-02-10"
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence", "Reply-To"):
        assert len(message.get_all(name) or []) == 1, name


def test_no_reply_to_unless_configured(make_site: SiteFactory):
    settings = site_settings(make_site)
    rendered = render_edition([make_entry(1)], settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="post-1", date=SEND_DATE)
    message = parse(build(settings, rendered, BOB))
    assert "Reply-To" not in message
    assert message["To"] == "Bob <bob@example.net>"
    assert message["List-Id"] == '"Test Site: weekly" <weekly.example.com>'


def test_wire_format_is_ascii_crlf_and_short_lines(settings: Settings,
                                                    rendered: RenderedEdition):
    data = build(settings, rendered)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert data.isascii()
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


def test_encoded_subject_is_well_formed_on_the_wire(settings: Settings,
                                                    rendered: RenderedEdition):
    raw = raw_headers(build(settings, rendered))["Subject"]
    assert "?==?" not in raw
    words = raw.split()
    assert words, raw
    for word in words:
        assert ENCODED_WORD.fullmatch(word), f"not an encoded word: {word!r} in {raw!r}"
        assert len(word) <= 75
    decoded = parse(build(settings, rendered))["Subject"]
    assert decoded == rendered.subject


@pytest.mark.parametrize("subject", [
    "週刊：中文標題 🎉🇨🇳👩‍💻" * 6,
    "Plain ASCII subject that is long enough to need folding across several lines of header",
    "Looks =?utf-8?q?encoded?= but is not",
    "a" * 120,
])
def test_subjects_round_trip_exactly(make_site: SiteFactory, subject: str):
    settings = site_settings(
        make_site, schedule='schedule = "0 9 * * MON"\nsubject = "{{ first.title }}"')
    rendered = render_edition([make_entry(1, title=subject)], settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="x", date=SEND_DATE)
    data = build(settings, rendered)
    assert parse(data)["Subject"] == subject
    raw = raw_headers(data)["Subject"]
    assert "?==?" not in raw
    assert all(len(line) <= 78 for line in ("Subject: " + raw).split("\r\n"))


@pytest.mark.parametrize(("name", "email"), [
    ('Zoë "Z" Lovelace, Jr. 王小明 🎉', "ada@example.org"),
    ("Smith, John (Jr.)", "john@example.com"),
    ("=?utf-8?q?not_encoded?=", "x@example.com"),
    ("王" * 60, "wang@example.com"),
    ("", "plain@example.com"),
    ("Name\r\nBcc: evil@example.com", "victim@example.com"),
    ("Ünïcödé", "user@bücher.example"),
])
def test_display_names_round_trip_and_cannot_inject(settings: Settings,
                                                    rendered: RenderedEdition,
                                                    name: str, email: str):
    recipient = Recipient(email=email, name=name, unsubscribe_url=ADA.unsubscribe_url,
                          preferences_url=ADA.preferences_url)
    data = build(settings, rendered, recipient)
    message = parse(data)
    (address,) = message["To"].addresses
    assert address.addr_spec == email.replace("bücher", "xn--bcher-kva")
    raw_name = raw_headers(data)["To"].rpartition("<")[0].strip()
    if raw_name.startswith("=?"):
        # Python's address parser puts a space between adjacent encoded words of a
        # display name; RFC 2047 (6.2) says to ignore that whitespace, as decode_header does.
        assert all(ENCODED_WORD.fullmatch(word) for word in raw_name.split())
        assert str(make_header(decode_header(raw_name))) == " ".join(name.split())
    else:
        assert address.display_name == " ".join(name.split())
    assert "Bcc" not in message
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_two_recipients_differ_only_in_personal_parts(settings: Settings,
                                                      rendered: RenderedEdition):
    first, second = parse(build(settings, rendered, ADA)), parse(build(settings, rendered, BOB))
    personal = {"To", "Message-ID", "List-Unsubscribe"}
    assert set(first.keys()) == set(second.keys())
    for name, value in first.items():
        if name not in personal:
            assert value == second[name], name
    for name in personal:
        assert first[name] != second[name], name

    def neutral(message: EmailMessage, recipient: Recipient) -> list[str]:
        bodies = [part.get_content() for part in message.iter_parts()]
        out = []
        for body in bodies:
            for value in (recipient.unsubscribe_url, recipient.preferences_url,
                          recipient.email):
                assert value in body
                body = body.replace(value, "<personal>")
            out.append(body)
        return out

    assert neutral(first, ADA) == neutral(second, BOB)


def test_message_id_is_stable_per_edition_and_recipient(settings: Settings,
                                                        rendered: RenderedEdition):
    again = parse(build(settings, rendered))["Message-ID"]
    assert parse(build(settings, rendered))["Message-ID"] == again
    assert again == message_id("weekly/2025-02-10", "ADA@example.org ", "example.com")
    other_edition = build_message(settings=settings, newsletter=settings.newsletters[0],
                                  rendered=rendered, recipient=ADA,
                                  edition_key="weekly/2025-02-17", date=SEND_DATE)
    assert parse(other_edition)["Message-ID"] != again


def test_prepared_template_builds_the_same_bytes(settings: Settings, rendered: RenderedEdition):
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=rendered, edition_key="weekly/2025-02-10")
    assert template.build(ADA, date=SEND_DATE) == build(settings, rendered)
    assert template.build(BOB, date=SEND_DATE) == build(settings, rendered, BOB)


def test_naive_date_is_refused(settings: Settings, rendered: RenderedEdition):
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=rendered, edition_key="k")
    with pytest.raises(ValueError, match="timezone-aware"):
        template.build(ADA, date=datetime(2025, 2, 10, 9, 0))


@pytest.mark.parametrize("recipient", [
    Recipient(email="no-at-sign", unsubscribe_url=ADA.unsubscribe_url),
    Recipient(email="üser@example.com", unsubscribe_url=ADA.unsubscribe_url),
    Recipient(email="a@example.com", unsubscribe_url="javascript:alert(1)"),
    Recipient(email="a@example.com", unsubscribe_url="https://example.com/u/x>\r\nBcc: y"),
])
def test_bad_recipient_is_a_permanent_delivery_error(settings: Settings,
                                                     rendered: RenderedEdition,
                                                     recipient: Recipient):
    with pytest.raises(DeliveryError) as caught:
        build(settings, rendered, recipient)
    assert caught.value.permanent


def test_confirmation_message_is_not_a_list_message(settings: Settings):
    rendered = render_confirmation(settings, settings.newsletters, date=SEND_DATE)
    recipient = Recipient(email="new@example.com",
                          confirm_url="https://example.com/confirm/tok-9")
    message = parse(build_confirmation_message(settings=settings, rendered=rendered,
                                               recipient=recipient, date=SEND_DATE))
    for name in ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence"):
        assert name not in message
    assert message["Subject"] == "確認訂閱 Test Site"
    assert message["To"] == "new@example.com"
    text, html = (part.get_content() for part in message.iter_parts())
    assert "https://example.com/confirm/tok-9" in text
    assert 'href="https://example.com/confirm/tok-9"' in html


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh RSA key and the DNS TXT record that publishes it."""
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    public = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dkim_settings(make_site: SiteFactory, key: Path) -> Settings:
    return site_settings(
        make_site,
        transport=f'transport = "maildir:outbox"\ndkim_selector = "fp2025"\n'
                  f'dkim_domain = "example.com"\ndkim_key_file = "{key}"',
    )


def test_dkim_signature_verifies_and_covers_one_click_headers(
    make_site: SiteFactory, dkim_key: tuple[Path, bytes],
):
    key, record = dkim_key
    settings = dkim_settings(make_site, key)
    rendered = render_edition([make_entry(1, title="署名 ✍️")], settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="p1", date=SEND_DATE)
    data = build(settings, rendered)
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        looked_up.append(name)
        return record

    assert data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(data, dnsfunc=dns)
    assert looked_up == [b"fp2025._domainkey.example.com."]
    signature = parse(data)["DKIM-Signature"]
    signed = re.search(r"\bh=([^;]+)", signature.replace(" ", "")).group(1).lower().split(":")
    for name in ("from", "to", "subject", "date", "message-id", "list-id",
                 "list-unsubscribe", "list-unsubscribe-post"):
        assert name in signed
    tampered = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                            b"List-Unsubscribe-Post: List-Unsubscribe=One-Clack")
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_one_signer_signs_many_messages_and_unsigned_ones_stay_unsigned(
    make_site: SiteFactory, dkim_key: tuple[Path, bytes],
):
    key, record = dkim_key
    settings = dkim_settings(make_site, key)
    assert settings.mail.dkim is not None
    signer = DkimSigner.from_config(settings.mail.dkim)
    rendered = render_edition([make_entry(1)], settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="p1", date=SEND_DATE)
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=rendered, edition_key="k", signer=signer)
    for recipient in (ADA, BOB):
        assert dkim.verify(template.build(recipient, date=SEND_DATE),
                           dnsfunc=lambda name, timeout=5: record)
    unsigned = prepare_message(settings=site_settings(make_site),
                               newsletter=settings.newsletters[0], rendered=rendered,
                               edition_key="k").build(BOB, date=SEND_DATE)
    assert not unsigned.startswith(b"DKIM-Signature")
    assert dkim.verify(signer.sign(unsigned), dnsfunc=lambda name, timeout=5: record)


def test_missing_or_broken_dkim_key_is_a_config_error(tmp_path: Path):
    missing = DkimConfig(selector="s", domain="example.com", key_file=tmp_path / "nope.pem")
    with pytest.raises(ConfigError) as caught:
        DkimSigner.from_config(missing)
    assert caught.value.key == "mail.dkim_key_file" and caught.value.path == missing.key_file
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="PEM RSA private key"):
        DkimSigner.from_config(DkimConfig(selector="s", domain="example.com", key_file=broken))


def test_html_encoding_follows_the_content(make_site: SiteFactory):
    settings = site_settings(make_site)
    english = render_edition([make_entry(1)], settings=settings,
                             newsletter=settings.newsletters[0], kind="post",
                             edition_id="e", date=SEND_DATE)
    chinese = render_edition([make_entry(1, content="<p>" + "中文內容。" * 2000 + "</p>")],
                             settings=settings, newsletter=settings.newsletters[0],
                             kind="post", edition_id="c", date=SEND_DATE)
    english_html = list(parse(build(settings, english)).iter_parts())[1]
    chinese_html = list(parse(build(settings, chinese)).iter_parts())[1]
    assert english_html["Content-Transfer-Encoding"] == "quoted-printable"
    assert chinese_html["Content-Transfer-Encoding"] == "base64"
    assert "中文內容。" * 2000 in chinese_html.get_content()


def test_date_header_keeps_the_offset_given(settings: Settings, rendered: RenderedEdition):
    data = build_message(settings=settings, newsletter=settings.newsletters[0],
                         rendered=rendered, recipient=ADA, edition_key="k",
                         date=datetime(2025, 2, 10, 1, 30, tzinfo=UTC))
    assert parse(data)["Date"] == "Mon, 10 Feb 2025 01:30:00 +0000"


@pytest.mark.parametrize("content", [
    "<p>Plain English, mostly ASCII, so quoted-printable.</p>",
    "<p>" + "中文內容，長得足以選用 base64。" * 200 + "</p>",
])
def test_decoded_bodies_equal_personalize_exactly(make_site: SiteFactory, content: str):
    settings = site_settings(make_site)
    rendered = render_edition([make_entry(1, content=content)], settings=settings,
                              newsletter=settings.newsletters[0], kind="post",
                              edition_id="e", date=SEND_DATE)
    long_token = "tok=" + "x" * 150 + "&a=1&b=é"
    recipient = Recipient(
        email="long.address+newsletter@example.com",
        name="Long",
        unsubscribe_url="https://example.com/unsubscribe/" + long_token.replace("é", "%C3%A9"),
        preferences_url="https://example.com/preferences/" + "y" * 200,
    )
    data = build(settings, rendered, recipient)
    assert all(len(line) <= 78 for line in data.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))
    expected_html, expected_text = personalize(rendered, recipient)
    text, html = (part.get_content().replace("\r\n", "\n")
                  for part in parse(data).iter_parts())
    assert html == expected_html.rstrip("\n") + "\n"
    assert text == expected_text
