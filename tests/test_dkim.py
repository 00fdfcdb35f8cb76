"""DKIM: RSA and Ed25519 signatures that dkimpy and OpenDKIM verify, and the keys' errors.

The keys and their DNS records are made with the openssl command, not with the
code under test. OpenDKIM's ``opendkim-testmsg`` looks keys up in the DNS: it
runs in private mount and network namespaces (``unshare``), where
``/etc/resolv.conf`` points at a small DNS server of this file's on 127.0.0.1.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import mailbox
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from feedpub.config import DkimConfig, load_settings
from feedpub.digest import make_editions
from feedpub.errors import ConfigError
from feedpub.mail.message import (
    DkimSigner,
    _parse,
    _relaxed_body,
    _select,
    prepare_message,
)
from feedpub.mail.render import render_edition
from feedpub.mail.transports import open_transport
from feedpub.sender import SendOptions, send_queued
from feedpub.store import open_store
from tests.conftest import BASIC_CONFIG, Clock, SiteFactory
from tests.test_digest import MONDAY_9, T0, Site, add_readers, post, site_config
from tests.test_mail_message import ADA, BOB, SEND_DATE
from tests.test_mail_render import make_entry, site_settings

DOMAIN = "example.com"
RSA_SELECTOR = "fp-rsa"
ED25519_SELECTOR = "fp-ed"

Dns = Callable[..., bytes]


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


class Keys:
    """An RSA-2048 and an Ed25519 key in PEM files, and the TXT records that publish them."""

    def __init__(self, folder: Path) -> None:
        self.rsa = folder / "dkim.pem"
        self.ed25519 = folder / "dkim-ed25519.pem"
        openssl("genrsa", "-out", str(self.rsa), "2048")
        openssl("genpkey", "-algorithm", "ed25519", "-out", str(self.ed25519))
        rsa_public = openssl("rsa", "-in", str(self.rsa), "-pubout", "-outform", "DER")
        # An Ed25519 SubjectPublicKeyInfo ends with the 32-byte key, which RFC 8463 publishes.
        ed25519_public = openssl("pkey", "-in", str(self.ed25519), "-pubout", "-outform", "DER")
        self.records = {
            f"{RSA_SELECTOR}._domainkey.{DOMAIN}.":
                "v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public).decode(),
            f"{ED25519_SELECTOR}._domainkey.{DOMAIN}.":
                "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed25519_public[-32:]).decode(),
        }
        self.looked_up: list[bytes] = []

    def config(self, *, ed25519: bool = True) -> DkimConfig:
        return DkimConfig(RSA_SELECTOR, DOMAIN, self.rsa,
                          ED25519_SELECTOR if ed25519 else None,
                          self.ed25519 if ed25519 else None)

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        self.looked_up.append(name)
        return self.records[name.decode()].encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("dkim"))


@pytest.fixture(scope="module")
def signer(keys: Keys) -> DkimSigner:
    return DkimSigner.from_config(keys.config())


def need_nacl() -> None:
    pytest.importorskip("nacl", reason="dkimpy verifies Ed25519 with PyNaCl (pip install pynacl)")


def verifies(message: bytes, dns: Dns, index: int = 0) -> bool:
    """dkimpy's verdict on the ``index``-th signature (``dkim.verify`` checks only the first)."""
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dns))
    except dkim.DKIMException:
        return False


def signatures(message: bytes) -> list[bytes]:
    """The DKIM-Signature header fields of ``message``, folding kept."""
    head = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    fields = re.findall(rb"[^ \t][^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", head)
    return [field for field in fields if field.lower().startswith(b"dkim-signature:")]


def only(message: bytes, algorithm: bytes) -> bytes:
    """``message`` without its signatures by other algorithms."""
    for field in signatures(message):
        if b"a=" + algorithm + b";" not in field:
            message = message.replace(field, b"", 1)
    return message


def tag(field: bytes, name: bytes) -> bytes | None:
    match = re.search(rb"[;\s]" + name + rb"=([^;]*)", field)
    return None if match is None else re.sub(rb"\s+", b"", match.group(1))


def feedpub_message(make_site: SiteFactory, keys: Keys) -> bytes:
    """A whole digest message as the sender makes it, signed with both keys."""
    settings = site_settings(make_site, transport=(
        f'transport = "maildir:outbox"\ndkim_selector = "{RSA_SELECTOR}"\n'
        f'dkim_domain = "{DOMAIN}"\ndkim_key_file = "{keys.rsa}"\n'
        f'dkim_ed25519_selector = "{ED25519_SELECTOR}"\n'
        f'dkim_ed25519_key_file = "{keys.ed25519}"'))
    rendered = render_edition([make_entry(1, title="署名 ✍️"), make_entry(2)], settings=settings,
                              newsletter=settings.newsletters[0], kind="digest",
                              edition_id="d1", date=SEND_DATE)
    template = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                               rendered=rendered, edition_key="weekly/d1")
    return template.build(ADA, date=SEND_DATE)


PLAIN = (b"From: Ada <ada@example.com>\r\nTo: bob@example.org\r\nSubject: Hello\r\n"
         b"Date: Mon, 10 Feb 2025 09:30:00 +0800\r\nMessage-ID: <1@example.com>\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")


# --- dkimpy --------------------------------------------------------------------------


def test_a_message_carries_an_rsa_then_an_ed25519_signature_and_both_verify(
    make_site: SiteFactory, keys: Keys,
) -> None:
    need_nacl()
    message = feedpub_message(make_site, keys)
    first, second = signatures(message)
    assert message.startswith(first)
    assert (tag(first, b"a"), tag(second, b"a")) == (b"rsa-sha256", b"ed25519-sha256")
    assert tag(first, b"c") == tag(second, b"c") == b"relaxed/relaxed"
    assert tag(first, b"bh") == tag(second, b"bh")  # one body, hashed once
    keys.looked_up.clear()
    assert dkim.verify(message, dnsfunc=keys.dns)
    assert verifies(message, keys.dns, index=1)
    assert keys.looked_up == [b"fp-rsa._domainkey.example.com.", b"fp-ed._domainkey.example.com."]
    # Each signature stands alone: a receiver may drop one, or know only RSA.
    assert dkim.verify(only(message, b"rsa-sha256"), dnsfunc=keys.dns)
    assert dkim.verify(only(message, b"ed25519-sha256"), dnsfunc=keys.dns)
    assert len(signatures(only(message, b"rsa-sha256"))) == 1


def test_a_changed_body_or_signed_header_breaks_both_signatures(
    make_site: SiteFactory, keys: Keys,
) -> None:
    need_nacl()
    message = feedpub_message(make_site, keys)
    head, body = message.split(b"\r\n\r\n", 1)
    link = re.search(rb"https://example\.com/\S{10}", body)
    assert link is not None
    changes = {
        "a link in the body": head + b"\r\n\r\n" + body.replace(
            link.group(0), link.group(0).replace(b"https://example.com", b"https://evil.test")),
        "the subject": message.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1),
        "a Reply-To added (signed though absent)":
            message.replace(b"\r\n\r\n", b"\r\nReply-To: x@evil.test\r\n\r\n", 1),
        "a line added at the end": message + b"P.S. send money\r\n",
    }
    for what, changed in changes.items():
        assert changed != message, what
        for index in (0, 1):
            assert not verifies(changed, keys.dns, index), (what, index)
    # What the signatures leave out may change: a relay adds trace headers, re-folds headers
    # and adds blank lines at the end (relaxed canonicalisation).
    relayed = (b"Received: from relay.example.net by mx.example.org; Mon, 10 Feb 2025\r\n"
               + message.replace(b"\r\nSubject: ", b"\r\nSubject:\r\n\t  ", 1) + b"\r\n\r\n")
    for index in (0, 1):
        assert verifies(relayed, keys.dns, index), index


@pytest.mark.parametrize("content", [None, "<p>" + "中文內容，  兩個空格。\t" * 800 + "</p>"],
                         ids=["quoted-printable", "base64"])
def test_a_template_signs_as_it_builds_what_signing_the_whole_message_gives(
    make_site: SiteFactory, signer: DkimSigner, content: str | None,
) -> None:
    settings = site_settings(make_site)
    rendered = render_edition([make_entry(1, title="署名 ✍️"), make_entry(2, content=content)],
                              settings=settings, newsletter=settings.newsletters[0],
                              kind="digest", edition_id="d1", date=SEND_DATE)
    signing = prepare_message(settings=settings, newsletter=settings.newsletters[0],
                              rendered=rendered, edition_key="weekly/d1", signer=signer)
    plain = dataclasses.replace(signing, signer=None)
    assert signing.relaxed is not None  # the shared parts are canonicalised once
    assert signing.text.encoding == ("base64" if content else "quoted-printable")
    for recipient in (ADA, BOB):
        built = signing.build(recipient, date=SEND_DATE)
        assert built == signer.sign(plain.build(recipient, date=SEND_DATE))


def test_digest_send_signs_every_message_with_both_keys(
    make_site: SiteFactory, database_url: str, keys: Keys,
) -> None:
    need_nacl()
    make_site(config=site_config().replace("[mail]\n", (
        f'[mail]\ndkim_selector = "{RSA_SELECTOR}"\ndkim_domain = "{DOMAIN}"\n'
        f'dkim_key_file = "{keys.rsa}"\ndkim_ed25519_selector = "{ED25519_SELECTOR}"\n'
        f'dkim_ed25519_key_file = "{keys.ed25519}"\n')))
    store = open_store(database_url)
    try:
        site = Site(make_site, database_url, store)
        make_editions(site.settings, store, T0)
        add_readers(store, [f"r{i}@example.org" for i in range(12)])
        site.write("2026-01-02-x.md", post("Signed: 署名 ✍️", "2026-01-02 10:00:00 +0000"))
        make_editions(site.settings, store, MONDAY_9)
        with open_transport(site.settings.mail.transport) as transport:
            report = send_queued(site.settings, store, transport, clock=Clock(MONDAY_9),
                                 options=SendOptions(concurrency=3))
    finally:
        store.close()
    assert (report.sent, report.ok) == (12, True)
    outbox = mailbox.Maildir(make_site.root / "outbox", create=False)
    # Maildir keeps the local line endings; SMTP would carry CRLF.
    messages = [outbox.get_bytes(key).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                for key in outbox.iterkeys()]
    assert len(messages) == 12
    for message in messages:
        assert [tag(field, b"a") for field in signatures(message)] == [
            b"rsa-sha256", b"ed25519-sha256"]
        for index in (0, 1):
            assert verifies(message, keys.dns, index), index


def test_the_same_message_gets_the_same_signatures_dated_by_its_date(
    signer: DkimSigner, keys: Keys,
) -> None:
    message = PLAIN + b"Hello.\r\n"
    signed = signer.sign(message)
    assert signed == signer.sign(message)
    assert signed.endswith(message)
    date = parsedate_to_datetime("Mon, 10 Feb 2025 09:30:00 +0800")
    for field in signatures(signed):
        assert tag(field, b"t") == str(int(date.timestamp())).encode()
        assert tag(field, b"d") == b"example.com"
    undated = message.replace(b"Date: Mon, 10 Feb 2025 09:30:00 +0800\r\n", b"")
    signed_undated = signer.sign(undated)
    assert all(tag(field, b"t") is None for field in signatures(signed_undated))
    assert dkim.verify(signed_undated, dnsfunc=keys.dns)


@pytest.mark.parametrize("body", [
    b"",
    b"\r\n\r\n\r\n",
    b"one line without an ending",
    b"tabs\tand  runs   of \t spaces\r\n",
    b"trailing white space \t\r\nhere  \r\n\r\n",
    b"bare\nline\nfeeds\n",
    b"=E2=9C=8D quoted-printable soft break=\r\n and  double spaces\r\n",
], ids=["empty", "blank-lines", "no-crlf", "tabs", "trailing-space", "bare-lf", "qp"])
def test_awkward_bodies_verify(signer: DkimSigner, keys: Keys, body: bytes) -> None:
    need_nacl()
    signed = signer.sign(PLAIN + body)
    for index in (0, 1):
        assert verifies(signed, keys.dns, index), index
    if body.strip():
        tampered = signed.replace(body.strip()[:4], body.strip()[:4].upper() + b"x", 1)
        assert not verifies(tampered, keys.dns, 0)


_PIECES = st.sampled_from([b"a", b"b", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"=", b"\xe2"])


@given(st.lists(_PIECES, max_size=40).map(b"".join))
def test_the_fast_relaxed_body_is_dkimpys(body: bytes) -> None:
    assert _relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(st.lists(_PIECES, max_size=30).map(b"".join),
       st.sampled_from([b"\r\n", b"\n"]), st.sampled_from([b"\r\n", b"\n"]))
def test_the_fast_split_is_dkimpys(body: bytes, header_end: bytes, blank: bytes) -> None:
    message = (b"From: a@example.com" + header_end + b"Subject: x" + header_end
               + b" folded" + header_end + blank + body)
    assert _parse(message) == dkim.rfc822_parse(message)


_NAMES = st.sampled_from([b"from", b"to", b"subject", b"date", b"received"])


@given(st.lists(st.tuples(_NAMES, st.booleans(), st.integers(0, 9))),
       st.lists(_NAMES, max_size=8).map(tuple))
def test_the_header_selection_is_dkimpys(
    fields: list[tuple[bytes, bool, int]], names: tuple[bytes, ...],
) -> None:
    headers = [[name.title() if title else name, b" %d\r\n" % value]
               for name, title, value in fields]
    assert _select(headers, names) == dkim.select_headers(headers, names)


# --- OpenDKIM ------------------------------------------------------------------------


def test_opendkim_verifies_each_signature_and_refuses_a_changed_one(
    make_site: SiteFactory, keys: Keys, tmp_path: Path,
) -> None:
    if shutil.which("opendkim-testmsg") is None:
        pytest.skip("opendkim-testmsg is missing (Debian: apt-get install opendkim-tools)")
    if shutil.which("unshare") is None or shutil.which("ip") is None or subprocess.run(
        ["unshare", "--mount", "--net", "true"], capture_output=True,
    ).returncode != 0:
        pytest.skip("opendkim-testmsg needs a private DNS server: `unshare --mount --net` "
                    "(root, util-linux) and `ip` (iproute2)")
    message = feedpub_message(make_site, keys)
    rsa, ed25519 = only(message, b"rsa-sha256"), only(message, b"ed25519-sha256")
    cases = {
        "both": message,
        "rsa": rsa,
        "ed25519": ed25519,
        "rsa, changed": rsa.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1),
        "ed25519, changed": ed25519.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1),
        "rsa, body changed": rsa + b"P.S.\r\n",
    }
    results = opendkim_testmsg(tmp_path, keys.records, list(cases.values()))
    verdicts = dict(zip(cases, results, strict=True))
    for name in ("both", "rsa", "ed25519"):
        assert verdicts[name] == [0, ""], name
    for name in ("rsa, changed", "ed25519, changed", "rsa, body changed"):
        code, error = verdicts[name]
        assert code != 0 and "Bad signature" in error, (name, verdicts[name])


def opendkim_testmsg(folder: Path, records: dict[str, str],
                     messages: list[bytes]) -> list[list[int | str]]:
    """``opendkim-testmsg``'s exit status and error output for each message."""
    (folder / "resolv.conf").write_text("nameserver 127.0.0.1\n", encoding="ascii")
    (folder / "records.json").write_text(json.dumps(records), encoding="ascii")
    paths = []
    for number, message in enumerate(messages):
        paths.append(folder / f"{number}.eml")
        paths[-1].write_bytes(message)
    run = (f"from tests.test_dkim import _in_namespaces; "
           f"_in_namespaces({str(folder)!r}, {[str(path) for path in paths]!r})")
    done = subprocess.run(["unshare", "--mount", "--net", sys.executable, "-c", run],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results: list[list[int | str]] = json.loads(done.stdout)
    return results


def _in_namespaces(folder_name: str, messages: list[str]) -> None:
    """Run by :func:`opendkim_testmsg` in new namespaces: the DNS server and the checks."""
    import dns.message
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    folder = Path(folder_name)
    records = json.loads((folder / "records.json").read_text(encoding="ascii"))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", str(folder / "resolv.conf"), "/etc/resolv.conf"],
                   check=True)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))

    def answer() -> None:
        while True:
            data, client = server.recvfrom(4096)
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            text = records.get(question.name.to_text())
            if text is None or question.rdtype != dns.rdatatype.TXT:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:  # strings of at most 255 characters
                strings = " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))
                response.answer.append(
                    dns.rrset.from_text(question.name, 60, "IN", "TXT", strings))
            server.sendto(response.to_wire(), client)

    threading.Thread(target=answer, daemon=True).start()
    results = []
    for path in messages:
        with Path(path).open("rb") as stdin:
            done = subprocess.run(["opendkim-testmsg"], stdin=stdin, capture_output=True,
                                  text=True, timeout=60)
        results.append([done.returncode, done.stderr.strip().removeprefix("opendkim-testmsg: ")
                        .removeprefix("dkim_eom(): ")])
    print(json.dumps(results))


# --- keys and their settings ----------------------------------------------------------


def test_bad_keys_are_config_errors_that_say_how_to_make_one(
    keys: Keys, tmp_path: Path,
) -> None:
    encrypted = tmp_path / "encrypted.pem"
    openssl("genrsa", "-aes256", "-passout", "pass:secret", "-out", str(encrypted), "2048")
    small = tmp_path / "small.pem"
    openssl("genrsa", "-out", str(small), "512")
    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes(damaged_rsa_key(keys.rsa))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    rsa_make = "openssl genrsa -out dkim.pem 2048"
    ed25519_make = "openssl genpkey -algorithm ed25519 -out dkim-ed25519.pem"
    cases = [
        (tmp_path / "missing.pem", keys.ed25519, "mail.dkim_key_file", "cannot read", rsa_make),
        (garbage, keys.ed25519, "mail.dkim_key_file", "not a PEM RSA private key", rsa_make),
        (encrypted, keys.ed25519, "mail.dkim_key_file", "encrypted", rsa_make),
        (small, keys.ed25519, "mail.dkim_key_file", "512-bit", rsa_make),
        (damaged, keys.ed25519, "mail.dkim_key_file", "damaged RSA key", rsa_make),
        (keys.ed25519, keys.ed25519, "mail.dkim_key_file", "the key in it is Ed25519", rsa_make),
        (keys.rsa, keys.rsa, "mail.dkim_ed25519_key_file", "the key in it is RSA", ed25519_make),
        (keys.rsa, garbage, "mail.dkim_ed25519_key_file", "not a PEM Ed25519", ed25519_make),
    ]
    for rsa_file, ed25519_file, key, problem, make in cases:
        with pytest.raises(ConfigError) as caught:
            DkimSigner.from_config(DkimConfig(RSA_SELECTOR, DOMAIN, rsa_file,
                                              ED25519_SELECTOR, ed25519_file))
        error = caught.value
        assert error.key == key, problem
        assert error.path == (rsa_file if key == "mail.dkim_key_file" else ed25519_file)
        assert problem in error.message and make in error.message, error.message


def damaged_rsa_key(path: Path) -> bytes:
    """The key in ``path`` with wrong private exponents, which OpenSSL's checks would refuse
    (PEM that ``openssl rsa -check`` calls invalid)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    n = key.private_numbers()
    wrong = rsa.RSAPrivateNumbers(n.p, n.q, n.d + 2, n.dmp1 + 2, n.dmq1 + 2, n.iqmp,
                                  n.public_numbers)
    broken = wrong.private_key(unsafe_skip_rsa_key_validation=True)
    return broken.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())


def test_the_ed25519_keys_are_optional_paired_and_relative_to_the_site(
    make_site: SiteFactory,
) -> None:
    rsa = 'dkim_selector = "s1"\ndkim_domain = "example.com"\ndkim_key_file = "keys/rsa.pem"\n'

    def settings(lines: str) -> DkimConfig | None:
        root = make_site(config=BASIC_CONFIG.replace("[mail]\n", "[mail]\n" + lines))
        return load_settings(root, env={}).mail.dkim

    plain = settings(rsa)
    assert plain is not None and plain.ed25519_key_file is None
    both = settings(rsa + 'dkim_ed25519_selector = "s2"\n'
                          'dkim_ed25519_key_file = "keys/ed25519.pem"\n')
    assert both is not None
    assert both.key_file == make_site.root / "keys" / "rsa.pem"
    assert (both.ed25519_selector, both.ed25519_key_file) == (
        "s2", make_site.root / "keys" / "ed25519.pem")
    for lines, key, problem in [
        (rsa + 'dkim_ed25519_selector = "s2"\n', "mail.dkim_ed25519_key_file", "is required"),
        (rsa + 'dkim_ed25519_key_file = "e.pem"\n', "mail.dkim_ed25519_selector", "is required"),
        (rsa + 'dkim_ed25519_selector = "s1"\ndkim_ed25519_key_file = "e.pem"\n',
         "mail.dkim_ed25519_selector", "must differ from dkim_selector"),
        ('dkim_ed25519_selector = "s2"\ndkim_ed25519_key_file = "e.pem"\n',
         "mail.dkim_selector", "is required"),
    ]:
        with pytest.raises(ConfigError) as caught:
            settings(lines)
        assert (caught.value.key, problem in caught.value.message) == (key, True), lines
