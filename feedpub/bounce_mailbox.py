"""``feedpub bounces fetch``: read a bounce mailbox over IMAP and handle each message once.

Messages are fetched in batches of :data:`BATCH_SIZE` without marking them
seen, parsed (:func:`feedpub.bounces.parse_message`) and applied in one
transaction per batch (:func:`feedpub.bounces.apply_reports`), which claims
each message's key (its ``Message-ID``) along with its effects: two fetches
that overlap both read a message, one applies it, the other finds the key
taken. Only after that commit are the batch's messages kept as seen, deleted
or moved (``bounces.after``); a run that dies in between leaves them for the
next run, which finds them handled and just files them. The password comes from the
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

from feedpub.bounces import Applied, Policy, apply_reports, parse_message
from feedpub.config import BouncesConfig, Settings
from feedpub.errors import ConfigError, DeliveryError
from feedpub.store.engine import Store

Clock = Callable[[], datetime]
BATCH_SIZE = 200
"""Messages handled in one transaction: a few statements for all of them instead of
about ten for each (``benchmarks/bounces.py``), and one IMAP round trip to fetch
them and one to file them."""


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
    batch_size: int = BATCH_SIZE,
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
        for start in range(0, len(uids), max(1, batch_size)):
            fetched = _fetch(client, uids[start:start + max(1, batch_size)])
            if not fetched:
                continue
            parsed = [parse_message(raw, secret=settings.secret,
                                    verp_local_part=settings.mail.verp_local_part)
                      for raw in fetched.values()]
            with store.write() as conn:
                applied = apply_reports(conn, parsed, now=clock(), policy=policy)
            for one, result in zip(parsed, applied, strict=True):
                report.add(result, findings=len(one.findings))
            _file(client, list(fetched), config)
        if config.after in ("delete", "move"):
            client.expunge()
    except (OSError, imaplib.IMAP4.error) as error:
        raise DeliveryError(f"IMAP {config.imap_host}: {error}") from None
    finally:
        if own:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
    return report


_UID = re.compile(rb"\bUID (\d+)")


def _fetch(client: imaplib.IMAP4, uids: list[bytes]) -> dict[bytes, bytes]:
    """The messages with these UIDs, by UID, in one command (those the server did not give
    are left out, and left in the mailbox for the next run)."""
    wanted = set(uids)
    status, data = client.uid("FETCH", b",".join(uids).decode(), "(UID BODY.PEEK[])")
    if status != "OK":
        return {}
    found: dict[bytes, bytes] = {}
    for item in data:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes)):
            continue
        match = _UID.search(item[0])
        if match and match.group(1) in wanted:
            found[match.group(1)] = item[1]
    return {uid: found[uid] for uid in uids if uid in found}


def _file(client: imaplib.IMAP4, uids: list[bytes], config: BouncesConfig) -> None:
    numbers = b",".join(uids).decode()
    if config.after == "move":
        status, _ = client.uid("COPY", numbers, _quoted(config.move_to))
        if status != "OK":
            client.create(_quoted(config.move_to))
            status, reply = client.uid("COPY", numbers, _quoted(config.move_to))
            if status != "OK":
                # Never delete what could not be moved: it stays, and is found handled later.
                raise DeliveryError(f"IMAP: cannot move handled messages to "
                                    f"{config.move_to!r}: {reply!r}")
        client.uid("STORE", numbers, "+FLAGS", "(\\Deleted \\Seen)")
    elif config.after == "delete":
        client.uid("STORE", numbers, "+FLAGS", "(\\Deleted)")
    else:
        client.uid("STORE", numbers, "+FLAGS", "(\\Seen)")


def _quoted(folder: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9._/-]+", folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
