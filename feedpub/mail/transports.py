"""Hand finished messages to a mail server (SMTP) or to a folder (Maildir).

A transport takes bytes that are already a complete message and never looks
inside them: it is the hot loop of a send to 100,000 subscribers.

Failures raise :class:`~feedpub.errors.DeliveryError`. ``permanent`` is true
only when the server refused *this message* with a 5xx reply (at MAIL FROM,
RCPT TO or DATA): retrying it cannot help. Everything that concerns the
connection rather than the message (refused or lost connections, timeouts,
TLS, authentication, a 4xx reply) is temporary, so that a broken server or a
wrong password leaves the queue intact instead of failing every subscriber.

The ``mail.transport`` setting is parsed once, by :mod:`feedpub.config`, into a
:class:`~feedpub.config.MaildirConfig` or :class:`~feedpub.config.SmtpConfig`;
:func:`open_transport` opens what it describes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import logging
import os
import queue
import secrets
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from feedpub.config import TRANSPORT_KEY, MaildirConfig, SmtpConfig, TransportConfig
from feedpub.errors import ConfigError, DeliveryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """The server's answer to an accepted message (for Maildir: where it went)."""

    code: int
    reply: str


class Transport(Protocol):
    """Delivers one message to one recipient; use it as a context manager.

    ``envelope_from`` is the bounce address (``MAIL FROM``); a display name
    (``"News <news@example.com>"``) is allowed and stripped.
    """

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult: ...

    def close(self) -> None: ...

    def probe(self) -> str | None:
        """None when messages can be handed over now, else why not (a closing run asks
        after server failures whether the server is down)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_transport(config: TransportConfig) -> Transport:
    """The transport for ``settings.mail.transport``, parsed and checked at load."""
    if isinstance(config, MaildirConfig):
        return MaildirTransport(config.path)
    return SmtpTransport(config)


# --- addresses -------------------------------------------------------------------


@dataclass(frozen=True)
class _EnvelopeAddress:
    address: str
    needs_smtputf8: bool


def _bare_address(value: str, role: str) -> str:
    """The address without a display name; a line break would inject commands."""
    if "\r" in value or "\n" in value:
        raise DeliveryError(f"{role} {value!r} contains a line break", permanent=True)
    return parseaddr(value)[1] if "<" in value else value.strip()


def _envelope_address(value: str, role: str) -> _EnvelopeAddress:
    """The address for the SMTP envelope: no display name, IDNA domain."""
    address = _bare_address(value, role)
    if address.isascii():
        return _EnvelopeAddress(address, needs_smtputf8=False)
    local, at, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise DeliveryError(
                f"{role} {value!r} has a domain that cannot be encoded: {error}",
                permanent=True,
            ) from None
    address = f"{local}{at}{domain}"
    return _EnvelopeAddress(address, needs_smtputf8=not address.isascii())


# Every message of a run has the same bounce address: parse it once.
_sender_address = functools.lru_cache(maxsize=32)(_envelope_address)


def _recipient_address(value: str) -> _EnvelopeAddress:
    if value.isascii() and "<" not in value and "\n" not in value and "\r" not in value:
        return _EnvelopeAddress(value.strip(), needs_smtputf8=False)
    return _envelope_address(value, "recipient")


# --- Maildir -----------------------------------------------------------------------


class MaildirTransport(Transport):
    """Writes each message as a file in ``PATH/new`` (the Maildir format that mutt,
    Thunderbird, Dovecot and Python's :mod:`mailbox` read).

    Each file is written under a unique name in ``tmp/``, synced, then renamed
    into ``new/``, so readers never see half a message and any number of
    processes and threads can deliver at once. Like a local delivery agent,
    it prepends ``Return-Path`` and ``Delivered-To``: the envelope would be
    lost otherwise. Line endings become ``\\n``, the Maildir convention.
    """

    def __init__(self, path: Path | str, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            for folder in ("tmp", "new", "cur"):
                (self.path / folder).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot use {str(self.path)!r} as a Maildir: {error.strerror}", key=TRANSPORT_KEY
            ) from None
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._sequence = itertools.count()

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult:
        # Header lines are ASCII: an IDN domain goes in its IDNA form, as on the wire; a
        # non-ASCII local part has no ASCII form (SMTPUTF8 only), as with an SMTP server
        # that does not offer SMTPUTF8.
        sender = _envelope_address(envelope_from, "envelope sender").address
        rcpt = _envelope_address(recipient, "recipient").address
        if not (sender + rcpt).isascii():
            raise DeliveryError(
                f"{recipient}: a non-ASCII local part needs SMTPUTF8, which a Maildir "
                "trace header cannot carry", permanent=True,
            )
        trace = f"Return-Path: <{sender}>\nDelivered-To: {rcpt}\n".encode()
        name = self._unique_name()
        temporary = self.path / "tmp" / name
        final = self.path / "new" / name
        try:
            self._write(temporary, trace + message.replace(b"\r\n", b"\n"))
            temporary.rename(final)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise DeliveryError(
                f"cannot write to the Maildir {str(self.path)!r}: {error.strerror}",
                permanent=False,
                path=self.path,
            ) from None
        return SendResult(250, f"saved as {final}")

    def close(self) -> None:
        """Nothing stays open between messages."""

    def _unique_name(self) -> str:
        now = time.time_ns()
        seconds, nanoseconds = divmod(now, 1_000_000_000)
        return (
            f"{seconds}.M{nanoseconds // 1000}P{os.getpid()}Q{next(self._sequence)}"
            f"R{secrets.token_hex(8)}.{self._host}"
        )

    def _write(self, path: Path, data: bytes) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if self.fsync:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def __repr__(self) -> str:
        return f"MaildirTransport({str(self.path)!r})"


# --- SMTP --------------------------------------------------------------------------


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split("\n")).strip()


class _Refused(Exception):
    """The server answered one command of the transaction with an error code."""

    def __init__(self, command: str, code: int, reply: bytes | str) -> None:
        super().__init__(command, code, reply)
        self.command = command
        self.code = code
        self.reply = _reply_text(reply)


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` (or what smtplib turned into it) is a socket timeout."""
    cause: BaseException | None = error
    for _ in range(8):  # smtplib wraps an error once or twice
        if cause is None:
            break
        if isinstance(cause, TimeoutError) or "timed out" in str(cause):
            return True
        cause = cause.__context__
    return False


class _Disconnected(Exception):
    """The connection broke; ``accepted_maybe`` if it broke after the message was sent
    (after the server's 354, while the message or its final reply was on the way)."""

    def __init__(self, command: str, cause: BaseException, *, accepted_maybe: bool = False
                 ) -> None:
        super().__init__(command, cause)
        self.command = command
        self.cause = cause
        self.accepted_maybe = accepted_maybe
        self.timed_out = _timed_out(cause)


class SmtpTransport(Transport):
    """Sends through an SMTP server over a small pool of reused connections.

    Thread-safe: each ``send`` takes a connection from the pool (waiting when
    all ``config.pool`` connections are busy) and puts it back. A connection
    that the server closed while idle is noticed at ``MAIL FROM``; the message
    is then retried once on a new connection. A refused message is followed by
    ``RSET`` so that the connection stays usable.

    A server that stalls costs one ``timeout``, not one per message: after a
    timeout the transport holds the server for unresponsive for ``timeout``
    seconds, and every send meanwhile fails at once (temporary, "no answer
    within T s"), so a run sees an outage and ends. :meth:`close` says QUIT on
    all idle connections at once and waits at most ``timeout`` for the answers
    (none when the server was unresponsive); :attr:`closing_note` says what it
    had to cut short.
    """

    def __init__(self, config: SmtpConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._ssl_context = ssl_context
        self._helo = config.helo
        # Each slot is an idle connection or None (a connection that may still be opened).
        self._slots: queue.LifoQueue[smtplib.SMTP | None] = queue.LifoQueue()
        for _ in range(config.pool):
            self._slots.put(None)
        self._lock = threading.Lock()
        self._closed = False
        self._unresponsive: tuple[float, str] | None = None
        """Until when (``time.monotonic()``) sends fail at once, and why."""
        self.connections_opened = 0
        """How many connections this transport has opened (for tests and reports)."""
        self.closing_note: str | None = None
        """After :meth:`close`: connections that did not answer QUIT in time, if any."""

    def send(self, envelope_from: str, recipient: str, message: bytes) -> SendResult:
        sender = _sender_address(envelope_from, "envelope sender")
        rcpt = _recipient_address(recipient)
        payload = _data_payload(message)
        connection = self._acquire()
        try:
            for attempt in (1, 2):
                self._fail_fast()
                if connection is None:
                    connection = self._connect()
                try:
                    return self._transaction(connection, sender, rcpt, payload)
                except _Disconnected as lost:
                    if lost.timed_out:
                        self._stalled(f"{self.config.describe()}: no answer to {lost.command} "
                                      f"within {self.config.timeout:g} s")
                    if lost.accepted_maybe or lost.timed_out or attempt == 2:
                        raise self._lost(lost, recipient) from None
                except _Refused as refused:
                    # A 421 to MAIL FROM is how an idle connection's timeout often shows.
                    if refused.code != 421 or refused.command != "MAIL FROM" or attempt == 2:
                        raise self._refusal(refused, recipient) from None
                log.debug("%s: connection lost, reconnecting", self.config.describe())
                connection.close()
                connection = None
            raise AssertionError("unreachable")
        finally:
            self._release(connection)

    def close(self) -> None:
        """Says QUIT on idle connections, all at once, and waits at most ``timeout`` for the
        answers (not at all when the server stopped answering); connections in use close
        when they come back."""
        with self._lock:
            self._closed = True
            idle: list[smtplib.SMTP | None] = []
            while True:
                try:
                    idle.append(self._slots.get_nowait())
                except queue.Empty:
                    break
            for _ in idle:
                self._slots.put(None)  # wakes senders waiting for a slot
            unresponsive = self._unresponsive
        connections = [c for c in idle if c is not None]
        if not connections:
            return
        if unresponsive is not None:
            for connection in connections:
                _hang_up(connection)
            self.closing_note = (f"closed {len(connections)} connection(s) without QUIT: "
                                 f"{unresponsive[1]}")
            return
        unanswered = _quit_all(connections, self.config.timeout)
        if unanswered:
            self.closing_note = (
                f"{unanswered} connection(s) to {self.config.describe()} did not answer "
                f"QUIT within {self.config.timeout:g} s; closed them"
            )

    def probe(self) -> str | None:
        """Opens a fresh connection (greeting, EHLO, TLS, login) and says QUIT: None when the
        server answers, else why it cannot be reached."""
        try:
            self._fail_fast()
            connection = self._connect()
        except DeliveryError as error:
            return str(error)
        _quit(connection)
        return None

    def __repr__(self) -> str:
        return f"SmtpTransport({self.config.describe()!r})"

    # -- the pool

    def _acquire(self) -> smtplib.SMTP | None:
        connection = self._slots.get()
        if self._closed:
            self._slots.put(connection)
            raise RuntimeError(f"{self!r} is closed")
        return connection

    def _release(self, connection: smtplib.SMTP | None) -> None:
        if connection is not None and connection.sock is None:
            connection = None  # closed after a failure: the slot may open a new one
        with self._lock:
            if not self._closed:
                self._slots.put(connection)
                return
            self._slots.put(None)
            unresponsive = self._unresponsive is not None
        if connection is not None and unresponsive:
            _hang_up(connection)
        elif connection is not None:
            _quit(connection)

    def _fail_fast(self) -> None:
        with self._lock:
            unresponsive = self._unresponsive
            if unresponsive is not None and time.monotonic() >= unresponsive[0]:
                self._unresponsive = unresponsive = None
        if unresponsive is not None:
            raise DeliveryError(unresponsive[1], permanent=False)

    def _stalled(self, reason: str) -> None:
        """The server let ``timeout`` pass without an answer: for the next ``timeout``
        seconds, sends fail at once instead of waiting for it one by one."""
        with self._lock:
            self._unresponsive = (time.monotonic() + self.config.timeout, reason)
        log.warning("%s", reason)

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        if self._helo is None:
            self._helo = socket.getfqdn()
        try:
            if config.tls == "ssl":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, local_hostname=self._helo,
                    timeout=config.timeout, context=self._tls_context(),
                )
            else:
                connection = smtplib.SMTP(
                    config.host, config.port, local_hostname=self._helo, timeout=config.timeout
                )
        except (smtplib.SMTPException, OSError) as error:
            raise self._unreachable(error) from None
        try:
            self._start_session(connection)
        except (smtplib.SMTPException, OSError) as error:
            connection.close()
            raise self._unreachable(error) from None
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self.connections_opened += 1
        log.debug("%s: connected", config.describe())
        return connection

    def _start_session(self, connection: smtplib.SMTP) -> None:
        code, reply = connection.ehlo()
        if code != 250:
            code, reply = connection.helo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, reply)
        if self.config.tls == "starttls":
            connection.starttls(context=self._tls_context())
            connection.ehlo()
        if self.config.user:
            _login(connection, self.config.user, self.config.password)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    # -- one message

    def _transaction(
        self,
        connection: smtplib.SMTP,
        sender: _EnvelopeAddress,
        recipient: _EnvelopeAddress,
        payload: bytes,
    ) -> SendResult:
        command = "MAIL FROM"
        payload_sent = False
        try:
            options = []
            if connection.does_esmtp:
                if connection.has_extn("size"):
                    options.append(f"SIZE={len(payload)}")
                if connection.has_extn("8bitmime") and not payload.isascii():
                    options.append("BODY=8BITMIME")
                if sender.needs_smtputf8 or recipient.needs_smtputf8:
                    if not connection.has_extn("smtputf8"):
                        raise _Refused(command, 0, "the server does not support SMTPUTF8, "
                                       "which this non-ASCII address needs")
                    options.append("SMTPUTF8")
            code, reply = connection.mail(sender.address, options)
            if code != 250:
                raise _Refused(command, code, reply)
            command = "RCPT TO"
            code, reply = connection.rcpt(recipient.address)
            if code not in (250, 251):
                raise _Refused(command, code, reply)
            command = "DATA"
            # smtplib's data() dot-stuffs with a regex: 0.2 ms for 25 KB, a third of the
            # client's time per message. The payload is stuffed once, in _data_payload.
            connection.putcmd("data")
            code, reply = connection.getreply()
            if code != 354:
                raise _Refused(command, code, reply)
            payload_sent = True  # from here on, the server may have the message
            connection.send(payload)
            code, reply = connection.getreply()
            if code != 250:
                raise _Refused(command, code, reply)
            return SendResult(code, _reply_text(reply))
        except smtplib.SMTPServerDisconnected as lost:
            raise _Disconnected(command, lost, accepted_maybe=payload_sent) from None
        except _Refused as refused:
            _reset(connection, refused.code)
            raise
        except BaseException:
            connection.close()  # stopped half-way through a transaction: never reuse it
            raise

    # -- errors

    def _refusal(self, refused: _Refused, recipient: str) -> DeliveryError:
        where = self.config.describe()
        if refused.code == 0:  # refused before asking the server
            return DeliveryError(f"{recipient}: {refused.reply}", permanent=True)
        return DeliveryError(
            f"{recipient}: {where} refused {refused.command}: {refused.code} {refused.reply}",
            permanent=500 <= refused.code < 600,
            code=refused.code,
        )

    def _lost(self, lost: _Disconnected, recipient: str) -> DeliveryError:
        after = (
            "after the message was sent; the server may have accepted it"
            if lost.accepted_maybe else f"at {lost.command}"
        )
        return DeliveryError(
            f"{recipient}: connection to {self.config.describe()} lost {after}: {lost.cause}",
            permanent=False,
        )

    def _unreachable(self, error: BaseException) -> DeliveryError:
        where = self.config.describe()
        if isinstance(error, smtplib.SMTPNotSupportedError):
            hint = " (use tls=ssl or tls=none in mail.transport)" if "TLS" in str(error) else ""
            return DeliveryError(f"{where}: {error}{hint}", permanent=False)
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return DeliveryError(
                f"{where}: authentication failed: {error.smtp_code} "
                f"{_reply_text(error.smtp_error)}",
                permanent=False, code=error.smtp_code,
            )
        if isinstance(error, smtplib.SMTPResponseException):
            return DeliveryError(
                f"{where}: {error.smtp_code} {_reply_text(error.smtp_error)}",
                permanent=False, code=error.smtp_code,
            )
        if isinstance(error, ssl.SSLError):
            return DeliveryError(f"{where}: TLS failed: {error}", permanent=False)
        if _timed_out(error):
            reason = f"{where}: no answer within {self.config.timeout:g} s"
            self._stalled(reason)
            return DeliveryError(reason, permanent=False)
        return DeliveryError(f"cannot connect to {where}: {error}", permanent=False)


def _data_payload(message: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends (servers reject bare LF, a defence
    against SMTP smuggling), a dot doubled at the start of a line, and the final dot."""
    if message.count(b"\n") != message.count(b"\r\n"):
        message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    payload = message.replace(b"\r\n.", b"\r\n..")
    if payload.startswith(b"."):
        payload = b"." + payload
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return payload + b".\r\n"


def _login(connection: smtplib.SMTP, user: str, password: str) -> None:
    if (user + password).isascii():
        connection.login(user, password)
        return
    # smtplib sends AUTH as ASCII only (python/cpython#73936); RFC 4616 PLAIN is UTF-8.
    if "PLAIN" not in connection.esmtp_features.get("auth", "").upper().split():
        raise smtplib.SMTPNotSupportedError(
            "the server does not offer AUTH PLAIN, which a non-ASCII user or password needs"
        )
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
    code, reply = connection.docmd("AUTH", f"PLAIN {token}")
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _reset(connection: smtplib.SMTP, code: int) -> None:
    """Ends a refused transaction so that the connection can carry the next one."""
    if code == 421 or connection.sock is None:  # 421: the server is closing the channel
        connection.close()
        return
    try:
        reset_code, _ = connection.rset()
    except (smtplib.SMTPException, OSError):
        reset_code = 0
    if reset_code != 250:
        connection.close()


def _hang_up(connection: smtplib.SMTP) -> None:
    """Closes the socket at once, waking a thread that waits on it."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    connection.close()


def _quit_all(connections: list[smtplib.SMTP], timeout: float) -> int:
    """QUIT on every connection at once; those without an answer within ``timeout`` are
    hung up. Returns how many did not answer."""
    deadline = time.monotonic() + timeout
    answered: list[bool] = [False] * len(connections)

    def say_quit(index: int) -> None:
        answered[index] = _quit(connections[index])

    threads = [threading.Thread(target=say_quit, args=(index,), daemon=True,
                                name="feedpub-smtp-quit") for index in range(len(connections))]
    for thread in threads:
        thread.start()
    for thread, connection in zip(threads, connections, strict=True):
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            _hang_up(connection)
    # A QUIT cut short by the socket's own timeout (the same length) is as unanswered
    # as one still waiting when the deadline passed.
    return answered.count(False)


def _quit(connection: smtplib.SMTP) -> bool:
    """Says QUIT; False when the server did not answer it."""
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
        return False
    return True
