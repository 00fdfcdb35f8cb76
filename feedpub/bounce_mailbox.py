"""``feedpub bounces fetch``: read a bounce mailbox over IMAP and handle each message once.

Each message is fetched without marking it seen, parsed
(:func:`feedpub.bounces.parse_message`) and applied in one transaction whose
first write claims the message's key (its ``Message-ID``): two fetches that
overlap both read the message, one applies it, the other finds the key taken.
Only after that commit is the message kept as seen, deleted or moved
(``bounces.after``); a run that dies in between leaves it for the next run,
which finds it handled and just files it. The password comes from the
environment variable named by ``bounces.imap_password_env``, never the file.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from feedpub.bounces import Applied, Policy, apply_report, parse_message
from feedpub.config import BouncesConfig, Settings
from feedpub.errors import ConfigError, DeliveryError
from feedpub.store.engine import Store

Clock = Callable[[], datetime]


@dataclass
class FetchReport:
    """What one fetch did."""

    messages: int = 0
    duplicates: int = 0
    ignored: int = 0
    events: int = 0
    unmatched: int = 0
    bounced: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)

    def add(self, applied: Applied, *, findings: int) -> None:
        self.messages += 1
        if applied.duplicate:
            self.duplicates += 1
            return
        if not findings:
            self.ignored += 1
        self.events += applied.stored
        self.unmatched += applied.unmatched
        self.bounced.extend(applied.bounced)
        self.unsubscribed.extend(applied.unsubscribed)


def imap_password(config: BouncesConfig, env: Mapping[str, str]) -> str:
    password = env.get(config.imap_password_env, "")
    if not password:
        raise ConfigError(
            f"set the IMAP password in the environment variable {config.imap_password_env}",
            key="bounces.imap_password_env",
        )
    return password


def connect(config: BouncesConfig, password: str, *, timeout: float = 30.0) -> imaplib.IMAP4:
    """A logged-in IMAP connection with the bounce folder selected (read-write)."""
    if config.imap_host is None:
        raise ConfigError("no bounce mailbox: set bounces.imap_host", key="bounces.imap_host")
    where = f"{config.imap_host}:{config.imap_port}"
    try:
        client: imaplib.IMAP4
        if config.imap_tls == "ssl":
            client = imaplib.IMAP4_SSL(config.imap_host, config.imap_port,
                                       ssl_context=ssl.create_default_context(), timeout=timeout)
        else:
            client = imaplib.IMAP4(config.imap_host, config.imap_port, timeout=timeout)
            if config.imap_tls == "starttls":
                client.starttls(ssl.create_default_context())
        client.login(config.imap_user, password)
        status, _ = client.select(_quoted(config.imap_folder))
        if status != "OK":
            raise DeliveryError(f"IMAP {where}: cannot open folder {config.imap_folder!r}")
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as error:
        raise DeliveryError(f"IMAP {where}: {error}") from None
    return client


def fetch_bounces(
    settings: Settings, store: Store, *, clock: Clock, env: Mapping[str, str],
    limit: int | None = None, client: imaplib.IMAP4 | None = None,
) -> FetchReport:
    """Handle the messages waiting in the bounce mailbox (at most ``limit``)."""
    config = settings.bounces
    own = client is None
    if client is None:
        client = connect(config, imap_password(config, env))
    report = FetchReport()
    policy = Policy.from_mail(settings.mail)
    try:
        criteria = "UNSEEN" if config.after == "keep" else "ALL"
        status, data = client.uid("SEARCH", None, criteria)  # type: ignore[arg-type]
        if status != "OK":
            raise DeliveryError(f"IMAP search failed: {data!r}")
        uids = (data[0] or b"").split()
        if limit is not None:
            uids = uids[:limit]
        for uid in uids:
            raw = _fetch(client, uid)
            if raw is None:
                continue
            parsed = parse_message(raw, secret=settings.secret,
                                   verp_local_part=settings.mail.verp_local_part)
            with store.write() as conn:
                applied = apply_report(conn, parsed, now=clock(), policy=policy)
            report.add(applied, findings=len(parsed.findings))
            _file(client, uid, config)
        if config.after in ("delete", "move"):
            client.expunge()
    except (OSError, imaplib.IMAP4.error) as error:
        raise DeliveryError(f"IMAP {config.imap_host}: {error}") from None
    finally:
        if own:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
    return report


def _fetch(client: imaplib.IMAP4, uid: bytes) -> bytes | None:
    status, data = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
    if status != "OK":
        return None
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _file(client: imaplib.IMAP4, uid: bytes, config: BouncesConfig) -> None:
    number = uid.decode()
    if config.after == "move":
        status, _ = client.uid("COPY", number, _quoted(config.move_to))
        if status != "OK":
            client.create(_quoted(config.move_to))
            client.uid("COPY", number, _quoted(config.move_to))
        client.uid("STORE", number, "+FLAGS", "(\\Deleted \\Seen)")
    elif config.after == "delete":
        client.uid("STORE", number, "+FLAGS", "(\\Deleted)")
    else:
        client.uid("STORE", number, "+FLAGS", "(\\Seen)")


def _quoted(folder: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9._/-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
