from __future__ import annotations

import contextlib
import mailbox
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from feedpub.config import MaildirConfig, parse_smtp_url, parse_transport
from feedpub.errors import ConfigError, DeliveryError
from feedpub.mail.transports import (
    MaildirTransport,
    SendResult,
    SmtpTransport,
    open_transport,
)
from tests.conftest import SmtpRecorder, SmtpServer, free_port

BOUNCES = "Bounces Ünïcode <bounces@example.com>"


def make_message(recipient: str = "reader@example.org", subject: str = "Hello") -> bytes:
    """A message as message.py produces it: CRLF, 8-bit UTF-8 body, a line starting with a dot."""
    lines = [
        "From: =?utf-8?b?5pel5pys6Kqe?= <news@example.com>",
        f"To: {recipient}",
        f"Subject: {subject}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "第一段：中文没有空格。🇨🇳 flags are two code points.",
        ".a line that starts with a dot (SMTP must stuff it)",
        "..and one with two",
        ".",
        "Last line",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


@dataclass
class CountingRecorder(SmtpRecorder):
    """Also counts EHLOs (one per connection here) and QUITs."""

    ehlos: int = 0
    quits: int = 0
    mail_replies: list[str] = field(default_factory=list)
    """Replies to the next MAIL FROM commands, one each, before "250 OK" again."""

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        with self.lock:
            reply = self.mail_replies.pop(0) if self.mail_replies else None
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does when there is no hook
        with self.lock:
            self.ehlos += 1
        return responses

    async def handle_QUIT(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.lock:
            self.quits += 1
        return "221 Bye"


class LocalServer:
    """An aiosmtpd server on a fixed port that can be stopped and started again
    (conftest's fixture stops its controller itself on teardown)."""

    def __init__(self, **smtp_options: Any) -> None:
        self.recorder = CountingRecorder()
        self.port = free_port()
        self.options = smtp_options
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def start(self) -> None:
        self.controller = Controller(
            self.recorder, hostname="127.0.0.1", port=self.port, **self.options
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.start()
    try:
        yield local
    finally:
        local.stop()


def smtp(url: str, **options: Any) -> SmtpTransport:
    config = parse_transport(url + "".join(f"&{k}={v}" for k, v in options.items()))
    transport = open_transport(config)
    assert isinstance(transport, SmtpTransport)
    return transport


# --- SMTP: what arrives ------------------------------------------------------------


def test_a_message_arrives_byte_for_byte(smtp_server: SmtpServer) -> None:
    message = make_message("Zoë <zoe@example.org>", "=?utf-8?b?5pel5pys6Kqe?=")
    with smtp(smtp_server.url) as transport:
        result = transport.send(BOUNCES, "zoe@example.org", message)
    assert result == SendResult(250, "Message accepted")
    [received] = smtp_server.recorder.messages
    assert received.mail_from == "bounces@example.com"
    assert received.rcpt_tos == ["zoe@example.org"]
    assert received.data == message
    assert received.message["Subject"] == "日本語"
    assert "..and one with two" in received.message.get_content()


def test_bare_line_feeds_go_out_as_crlf(smtp_server: SmtpServer) -> None:
    message = b"Subject: lf\n\nline one\n.\nline two\r\n"
    with smtp(smtp_server.url) as transport:
        transport.send("bounces@example.com", "a@example.org", message)
    [received] = smtp_server.recorder.messages
    assert received.data == b"Subject: lf\r\n\r\nline one\r\n.\r\nline two\r\n"


@pytest.mark.parametrize(
    ("sent", "arrives"),
    [
        (b".Subject: dot first\r\n\r\nbody", b".Subject: dot first\r\n\r\nbody\r\n"),
        (b"Subject: x\r\n\r\n.\r\n..\r\n.\r\n", b"Subject: x\r\n\r\n.\r\n..\r\n.\r\n"),
        (b"Subject: x\n\n.\n", b"Subject: x\r\n\r\n.\r\n"),
    ],
)
def test_dots_and_line_ends_survive_data(
    smtp_server: SmtpServer, sent: bytes, arrives: bytes
) -> None:
    with smtp(smtp_server.url) as transport:
        transport.send("bounces@example.com", "a@example.org", sent)
        transport.send("bounces@example.com", "b@example.org", b"Subject: next\r\n\r\nok\r\n")
    assert [m.data for m in smtp_server.recorder.messages] == [
        arrives, b"Subject: next\r\n\r\nok\r\n"
    ]


def test_display_name_recipient_is_reduced_to_its_address(smtp_server: SmtpServer) -> None:
    with smtp(smtp_server.url) as transport:
        transport.send("<bounces@example.com>", '"Doe, Jane" <jane@example.org>', make_message())
    [received] = smtp_server.recorder.messages
    assert received.rcpt_tos == ["jane@example.org"]


def test_many_messages_share_one_connection(server: LocalServer) -> None:
    with smtp(server.url, pool=1) as transport:
        for number in range(40):
            transport.send(BOUNCES, f"r{number}@example.org", make_message(subject=str(number)))
    assert len(server.recorder.messages) == 40
    assert server.recorder.ehlos == 1
    assert server.recorder.quits == 1
    assert [m.message["Subject"] for m in server.recorder.messages] == [
        str(n) for n in range(40)
    ]


def test_send_after_close_is_a_programming_error(server: LocalServer) -> None:
    transport = smtp(server.url)
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        transport.send(BOUNCES, "a@example.org", make_message())


# --- SMTP: refusals ---------------------------------------------------------------


def test_unknown_user_is_permanent_and_keeps_the_reply(server: LocalServer) -> None:
    server.recorder.reply_for["ghost@example.org"] = "550 5.1.1 No such user"
    with smtp(server.url, pool=1) as transport:
        with pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "Ghost@example.org".lower(), make_message())
        # The connection survives the refusal (RSET) and carries the next message.
        transport.send(BOUNCES, "alive@example.org", make_message())
    assert refused.value.permanent is True
    assert refused.value.code == 550
    assert "5.1.1 No such user" in str(refused.value)
    assert "ghost@example.org" in str(refused.value)
    assert "RCPT TO" in str(refused.value)
    assert server.recorder.count_by_recipient() == {"alive@example.org": 1}
    assert server.recorder.ehlos == 1


@pytest.mark.parametrize("reply", ["451 4.3.0 Try later", "452 4.2.2 Mailbox full"])
def test_4xx_at_rcpt_is_temporary(smtp_server: SmtpServer, reply: str) -> None:
    smtp_server.recorder.reply_for["busy@example.org"] = reply
    with smtp(smtp_server.url) as transport, pytest.raises(DeliveryError) as refused:
        transport.send(BOUNCES, "busy@example.org", make_message())
    assert refused.value.permanent is False
    assert refused.value.code == int(reply[:3])
    assert reply[4:] in str(refused.value)
    assert smtp_server.recorder.messages == []


def test_421_drops_the_connection_and_the_next_message_opens_another(
    server: LocalServer,
) -> None:
    server.recorder.reply_for["late@example.org"] = "421 4.7.0 Closing, come back later"
    with smtp(server.url, pool=1) as transport:
        with pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "late@example.org", make_message())
        transport.send(BOUNCES, "next@example.org", make_message())
    assert (refused.value.permanent, refused.value.code) == (False, 421)
    assert server.recorder.count_by_recipient() == {"next@example.org": 1}
    assert server.recorder.ehlos == 2


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [("554 5.6.0 Message content rejected", True), ("452 4.3.1 Insufficient storage", False)],
)
def test_reply_to_data_decides(smtp_server: SmtpServer, reply: str, permanent: bool) -> None:
    smtp_server.recorder.data_reply = reply
    with smtp(smtp_server.url) as transport, pytest.raises(DeliveryError) as refused:
        transport.send(BOUNCES, "a@example.org", make_message())
    assert refused.value.permanent is permanent
    assert refused.value.code == int(reply[:3])
    assert reply[4:] in str(refused.value)
    assert "DATA" in str(refused.value)


@pytest.mark.parametrize(
    "recipient", ["a@example.org\r\nRCPT TO:<evil@example.net>", "a@example.org\nBcc: x@y.z"]
)
def test_a_line_break_in_an_address_never_reaches_the_server(
    server: LocalServer, recipient: str
) -> None:
    with smtp(server.url) as transport, pytest.raises(DeliveryError) as refused:
        transport.send(BOUNCES, recipient, make_message())
    assert refused.value.permanent is True
    assert server.recorder.messages == []
    assert server.recorder.ehlos == 0


def test_internationalised_addresses(tmp_path: Path) -> None:
    plain = LocalServer(enable_SMTPUTF8=False)
    utf8 = LocalServer(enable_SMTPUTF8=True)
    plain.start()
    utf8.start()
    try:
        with smtp(plain.url) as transport:
            transport.send(BOUNCES, "user@例子.中国", make_message())
            with pytest.raises(DeliveryError) as refused:
                transport.send(BOUNCES, "用户@example.org", make_message())
        with smtp(utf8.url) as transport:
            transport.send(BOUNCES, "用户@example.org", make_message())
    finally:
        plain.stop()
        utf8.stop()
    assert plain.recorder.count_by_recipient() == {"user@xn--fsqu00a.xn--fiqs8s": 1}
    assert refused.value.permanent is True
    assert "SMTPUTF8" in str(refused.value)
    assert utf8.recorder.count_by_recipient() == {"用户@example.org": 1}


# --- SMTP: the server goes away ---------------------------------------------------


def test_server_down_is_temporary(server: LocalServer) -> None:
    server.stop()
    with smtp(server.url) as transport, pytest.raises(DeliveryError) as refused:
        transport.send(BOUNCES, "a@example.org", make_message())
    assert refused.value.permanent is False
    assert refused.value.code is None
    assert "Connection refused" in str(refused.value)
    assert f"127.0.0.1:{server.port}" in str(refused.value)


def test_reconnects_after_the_server_restarts(server: LocalServer) -> None:
    with smtp(server.url, pool=1) as transport:
        transport.send(BOUNCES, "before@example.org", make_message())
        server.stop()
        with pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "during@example.org", make_message())
        server.start()
        transport.send(BOUNCES, "after@example.org", make_message())
    assert refused.value.permanent is False
    assert server.recorder.count_by_recipient() == {
        "before@example.org": 1,
        "after@example.org": 1,
    }
    assert server.recorder.ehlos == 2


def test_restart_while_idle_costs_no_message(server: LocalServer) -> None:
    with smtp(server.url, pool=1) as transport:
        transport.send(BOUNCES, "first@example.org", make_message())
        server.stop()
        server.start()
        # The pooled connection is dead; the send notices at MAIL FROM and retries once.
        transport.send(BOUNCES, "second@example.org", make_message())
    assert server.recorder.count_by_recipient() == {
        "first@example.org": 1,
        "second@example.org": 1,
    }


def test_a_421_to_mail_from_on_an_idle_connection_is_retried_once(server: LocalServer) -> None:
    with smtp(server.url, pool=1) as transport:
        transport.send(BOUNCES, "first@example.org", make_message())
        server.recorder.mail_replies.append("421 4.4.2 Idle timeout, closing")
        transport.send(BOUNCES, "second@example.org", make_message())
        server.recorder.mail_replies.extend(["421 4.3.2 Busy"] * 2)
        with pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "third@example.org", make_message())
    assert server.recorder.count_by_recipient() == {
        "first@example.org": 1,
        "second@example.org": 1,
    }
    assert (refused.value.permanent, refused.value.code) == (False, 421)
    assert "4.3.2 Busy" in str(refused.value)
    assert server.recorder.ehlos == 3  # first; after the idle 421; the retry of "third"


def test_a_server_that_never_greets_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        transport = smtp(f"smtp://127.0.0.1:{port}?tls=none", timeout=0.2)
        with transport, pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "a@example.org", make_message())
    assert refused.value.permanent is False
    assert "no answer within 0.2 s" in str(refused.value)


# --- SMTP: threads -----------------------------------------------------------------


def test_threads_share_a_small_pool(server: LocalServer) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(transport: SmtpTransport, number: int) -> None:
        start.wait()
        try:
            for index in range(25):
                address = f"t{number}-{index}@example.org"
                transport.send(BOUNCES, address, make_message(address))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    with smtp(server.url, pool=3) as transport:
        threads = [threading.Thread(target=worker, args=(transport, n)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    counts = server.recorder.count_by_recipient()
    assert len(counts) == 200
    assert set(counts.values()) == {1}
    for received in server.recorder.messages:
        assert received.message["To"] == received.rcpt_tos[0]
    assert 1 <= server.recorder.ehlos <= 3
    assert server.recorder.quits == server.recorder.ehlos


# --- SMTP: authentication and TLS -------------------------------------------------


def test_user_and_password_are_percent_decoded() -> None:
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        seen.append((data.login, data.password))
        return AuthResult(success=data.password == "p:ss/wörd#1".encode(), handled=False)

    local = LocalServer(authenticator=authenticator, auth_require_tls=False)
    local.start()
    try:
        good = f"smtp://ad%40min:p%3Ass%2Fw%C3%B6rd%231@127.0.0.1:{local.port}?tls=none"
        with smtp(good, timeout=5) as transport:
            transport.send(BOUNCES, "a@example.org", make_message())
        bad = f"smtp://ad%40min:wrong@127.0.0.1:{local.port}?tls=none"
        with smtp(bad, timeout=5) as transport, pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "b@example.org", make_message())
    finally:
        local.stop()
    assert seen[0] == (b"ad@min", "p:ss/wörd#1".encode())
    assert set(seen[1:]) == {(b"ad@min", b"wrong")}  # smtplib tries PLAIN, then LOGIN
    assert local.recorder.count_by_recipient() == {"a@example.org": 1}
    # A wrong password fails every message: it must not bounce subscribers.
    assert (refused.value.permanent, refused.value.code) == (False, 535)
    assert "wrong" not in str(refused.value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_starttls(certificate: tuple[Path, Path]) -> None:
    local = LocalServer(tls_context=server_tls(certificate), require_starttls=True)
    local.start()
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    url = f"smtp://127.0.0.1:{local.port}?tls=starttls"
    try:
        with SmtpTransport(parse_smtp_url(url), ssl_context=trusting) as transport:
            transport.send(BOUNCES, "secret@example.org", make_message())
        # The default context does not trust a self-signed certificate.
        with smtp(url + "&timeout=5") as transport, pytest.raises(DeliveryError) as refused:
            transport.send(BOUNCES, "b@example.org", make_message())
        # Without STARTTLS, this server refuses mail: "none" must not fall back silently.
        with smtp(local.url) as transport, pytest.raises(DeliveryError) as plain:
            transport.send(BOUNCES, "c@example.org", make_message())
    finally:
        local.stop()
    assert local.recorder.count_by_recipient() == {"secret@example.org": 1}
    assert refused.value.permanent is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert plain.value.code == 530


def test_starttls_not_offered_is_explained(server: LocalServer) -> None:
    url = f"smtp://127.0.0.1:{server.port}"  # tls=starttls is the default
    with smtp(url + "?timeout=5") as transport, pytest.raises(DeliveryError) as refused:
        transport.send(BOUNCES, "a@example.org", make_message())
    assert refused.value.permanent is False
    assert "STARTTLS" in str(refused.value)
    assert "tls=none" in str(refused.value)


def test_smtps(certificate: tuple[Path, Path]) -> None:
    local = LocalServer(ssl_context=server_tls(certificate))
    local.start()
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    try:
        config = parse_smtp_url(f"smtps://127.0.0.1:{local.port}")
        with SmtpTransport(config, ssl_context=trusting) as transport:
            transport.send(BOUNCES, "tls@example.org", make_message())
    finally:
        local.stop()
    assert local.recorder.count_by_recipient() == {"tls@example.org": 1}


# --- what the transport shows of itself -------------------------------------------


def test_the_password_stays_out_of_repr() -> None:
    config = parse_smtp_url("smtp://me:hunter2@mail.example.com")
    transport = open_transport(config)
    assert isinstance(transport, SmtpTransport)
    assert repr(transport) == "SmtpTransport('smtp://me@mail.example.com:587?tls=starttls')"
    assert "hunter2" not in repr(config)


# --- Maildir -----------------------------------------------------------------------


def read_maildir(path: Path) -> list[EmailMessage]:
    """What a mail client sees: every message in the Maildir, parsed."""

    box = mailbox.Maildir(path, create=False)
    messages = []
    for key in box.iterkeys():
        with box.get_file(key) as file:
            parsed = message_from_bytes(file.read(), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def test_maildir_delivers_files_that_mailbox_reads(tmp_path: Path) -> None:
    outbox = tmp_path / "site" / "outbox"
    transport = open_transport(MaildirConfig(outbox))
    assert isinstance(transport, MaildirTransport)
    with transport:
        first = transport.send(BOUNCES, "zoe@example.org", make_message("Zoë <zoe@example.org>"))
        transport.send("bounces@example.com", "user@例子.中国", make_message(subject="two"))
        with pytest.raises(DeliveryError) as refused:
            transport.send("bounces@example.com", "用户@例子.中国", make_message())
    assert refused.value.permanent is True and "SMTPUTF8" in str(refused.value)
    assert first.code == 250
    files = sorted((outbox / "new").iterdir())
    assert len(files) == 2
    assert str(files[0]) in first.reply or str(files[1]) in first.reply
    assert list((outbox / "tmp").iterdir()) == []
    messages = {m["Delivered-To"]: m for m in read_maildir(outbox)}
    # The trace lines are ASCII: an IDN domain in its IDNA form, as on the wire.
    assert set(messages) == {"zoe@example.org", "user@xn--fsqu00a.xn--fiqs8s"}
    assert all(b"".join(path.read_bytes().splitlines()[:2]).isascii() for path in files)
    zoe = messages["zoe@example.org"]
    assert zoe["Return-Path"] == "<bounces@example.com>"
    assert zoe["To"] == "Zoë <zoe@example.org>"
    assert zoe.get_content().startswith("第一段：中文没有空格。🇨🇳")
    assert messages["user@xn--fsqu00a.xn--fiqs8s"]["Subject"] == "two"
    raw = files[0].read_bytes()
    assert b"\r\n" not in raw
    assert raw.endswith(b"\n..and one with two\n.\nLast line\n")


def test_maildir_into_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("not a folder")
    with pytest.raises(ConfigError) as bad:
        open_transport(MaildirConfig(tmp_path / "outbox"))
    assert bad.value.key == "mail.transport"
    assert "outbox" in str(bad.value)


def test_maildir_write_failure_is_temporary(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox")
    (tmp_path / "outbox" / "new").rmdir()
    with pytest.raises(DeliveryError) as failed:
        transport.send(BOUNCES, "a@example.org", make_message())
    assert failed.value.permanent is False
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []


def test_maildir_from_threads(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox", fsync=False)
    start = threading.Barrier(6)

    def worker(number: int) -> None:
        start.wait()
        for index in range(50):
            transport.send(BOUNCES, f"t{number}-{index}@example.org", make_message())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(m["Delivered-To"] for m in read_maildir(tmp_path / "outbox")) == sorted(
        f"t{n}-{i}@example.org" for n in range(6) for i in range(50)
    )


WRITER = """
import sys, time
from pathlib import Path
from feedpub.mail.transports import MaildirTransport
outbox, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
transport = MaildirTransport(outbox)
while not go.exists():
    time.sleep(0.001)
for index in range(150):
    body = f"Subject: {name} {index}\\r\\n\\r\\n{name} says {index}\\r\\n".encode()
    transport.send("bounces@example.com", f"{name}-{index}@example.org", body)
"""


def test_two_processes_write_to_one_maildir(tmp_path: Path) -> None:
    outbox, go = tmp_path / "outbox", tmp_path / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(outbox), name, str(go)])
        for name in ("alpha", "beta")
    ]
    go.touch()
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    box = read_maildir(outbox)
    received = sorted(m["Delivered-To"] for m in box)
    assert received == sorted(f"{n}-{i}@example.org" for n in ("alpha", "beta") for i in range(150))
    for message in box:
        name, index = message["Subject"].split()
        assert message.get_content() == f"{name} says {index}\n"


# --- SMTP: faults from a scripted server ---------------------------------------------


STAGES = ("greeting", "EHLO", "MAIL", "RCPT", "DATA", "payload", "QUIT")
"""Where a :class:`ScriptedServer` can misbehave: the greeting, a command, or the end of the
message (``payload``: the reply after the final dot)."""


class ScriptedServer:
    """A raw-socket SMTP server on 127.0.0.1 that plays by the rules except at one stage,
    where it drops the connection, stalls (never answers), or replies ``reply``.

    ``fault_times`` bounds how many times the fault happens (None: every time); after that
    the server behaves. ``delivered`` lists the recipients of messages it accepted (250
    after the final dot); a drop or stall at ``payload`` receives the message without an
    answer, as a real server that crashed after queueing it would.
    """

    def __init__(self, stage: str, action: str, *, reply: str = "",
                 fault_times: int | None = None, smtputf8: bool = False) -> None:
        assert stage in STAGES and action in ("drop", "stall", "reply")
        self.stage, self.action, self.reply = stage, action, reply
        self.fault_times = fault_times
        self.smtputf8 = smtputf8
        self.delivered: list[str] = []
        self.received: list[str] = []
        """Recipients whose message reached the server, answered or not."""
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?tls=none"

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _fault(self, stage: str) -> str | None:
        """None: answer as usual; "drop", "stall" or the reply to give."""
        if stage != self.stage:
            return None
        with self.lock:
            if self.fault_times is not None:
                if self.fault_times <= 0:
                    return None
                self.fault_times -= 1
        return self.reply if self.action == "reply" else self.action

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        file = sock.makefile("rb")

        def answer(stage: str, normal: str) -> bool:
            fault = self._fault(stage)
            if fault == "drop":
                sock.shutdown(socket.SHUT_RDWR)
                return False
            if fault == "stall":
                self.stopping.wait(30)
                return False
            sock.sendall(((fault or normal) + "\r\n").encode())
            return not (fault or normal).startswith("421")

        try:
            if not answer("greeting", "220 scripted ESMTP"):
                return
            recipient = ""
            while True:
                line = file.readline()
                if not line:
                    return
                verb = line[:4].decode("ascii", "replace").upper()
                if verb in ("EHLO", "HELO"):
                    extensions = ["250-scripted", "250-8BITMIME"]
                    if self.smtputf8:
                        extensions.append("250-SMTPUTF8")
                    normal = "\r\n".join([*extensions, "250 PIPELINING"])
                    if not answer("EHLO", normal):
                        return
                elif verb == "MAIL":
                    if not answer("MAIL", "250 OK"):
                        return
                elif verb == "RCPT":
                    recipient = line.decode("utf-8").split(":", 1)[1].strip().strip("<>")
                    if not answer("RCPT", "250 OK"):
                        return
                elif verb == "DATA":
                    if not answer("DATA", "354 go ahead"):
                        return
                    while file.readline() not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.received.append(recipient)
                    fault = self._fault("payload")
                    if fault in ("drop", "stall"):
                        if fault == "stall":
                            self.stopping.wait(30)
                        sock.shutdown(socket.SHUT_RDWR)
                        return
                    reply = fault or "250 queued"
                    if reply.startswith("250"):
                        with self.lock:
                            self.delivered.append(recipient)
                    sock.sendall((reply + "\r\n").encode())
                    if reply.startswith("421"):
                        return
                elif verb == "RSET":
                    sock.sendall(b"250 OK\r\n")
                elif verb == "QUIT":
                    answer("QUIT", "221 bye")
                    return
                else:
                    sock.sendall(b"502 no\r\n")
        except OSError:
            return
        finally:
            file.close()
            sock.close()


@pytest.mark.parametrize("stage", ["greeting", "EHLO", "MAIL", "RCPT", "DATA"])
def test_a_drop_before_the_message_is_sent_never_says_it_may_have_been_accepted(
        stage: str) -> None:
    with (ScriptedServer(stage, "drop") as server, smtp(server.url, timeout=5) as transport,
          pytest.raises(DeliveryError) as lost):
        transport.send(BOUNCES, "a@example.org", make_message())
    assert lost.value.permanent is False
    assert "may have accepted" not in str(lost.value)
    assert server.received == []


def test_a_drop_after_the_message_was_sent_says_it_may_have_been_accepted() -> None:
    with (ScriptedServer("payload", "drop") as server,
          smtp(server.url, timeout=5) as transport, pytest.raises(DeliveryError) as lost):
        transport.send(BOUNCES, "a@example.org", make_message())
    assert "may have accepted it" in str(lost.value)
    assert server.received == ["a@example.org"]


@pytest.mark.parametrize("stage", ["greeting", "MAIL", "DATA", "payload"])
def test_a_stalling_server_costs_one_timeout_not_one_per_message(stage: str) -> None:
    timeout = 0.5
    with ScriptedServer(stage, "stall") as server:
        transport = smtp(server.url, timeout=timeout, pool=4)
        started = time.monotonic()
        errors: list[str] = []

        def send(index: int) -> None:
            try:
                transport.send(BOUNCES, f"r{index}@example.org", make_message())
            except DeliveryError as error:
                errors.append(str(error))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        transport.close()
        elapsed = time.monotonic() - started
    assert len(errors) == 12
    assert any(f"within {timeout:g} s" in error for error in errors)
    # 12 messages over 4 connections once took 3 timeouts a connection, plus one per QUIT.
    assert elapsed < 3 * timeout, elapsed


def test_unanswered_quits_are_said_at_once_and_cut_short_after_the_timeout() -> None:
    timeout = 0.5
    with ScriptedServer("QUIT", "stall") as server:
        transport = smtp(server.url, timeout=timeout, pool=4)
        barrier = threading.Barrier(4)

        def send(index: int) -> None:
            barrier.wait()  # four at once: four connections
            transport.send(BOUNCES, f"r{index}@example.org", make_message())

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert transport.connections_opened == 4
        started = time.monotonic()
        transport.close()
        elapsed = time.monotonic() - started
    assert sorted(server.delivered) == [f"r{i}@example.org" for i in range(4)]
    assert elapsed < 2 * timeout, elapsed  # concurrently: one timeout, not four
    assert transport.closing_note is not None
    assert "4 connection(s)" in transport.closing_note and "QUIT" in transport.closing_note


def test_a_stalled_server_is_given_another_chance_after_the_timeout() -> None:
    with (ScriptedServer("MAIL", "stall", fault_times=1) as server,
          smtp(server.url, timeout=0.3, pool=1) as transport):
        with pytest.raises(DeliveryError):
            transport.send(BOUNCES, "a@example.org", make_message())
        with pytest.raises(DeliveryError) as fast:
            transport.send(BOUNCES, "b@example.org", make_message())
        assert "within 0.3 s" in str(fast.value)
        time.sleep(0.35)
        transport.send(BOUNCES, "c@example.org", make_message())
    assert server.delivered == ["c@example.org"]
