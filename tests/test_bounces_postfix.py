"""`feedpub bounces fetch` with real parts: Debian's Postfix on 127.0.0.1 turns a digest sent
to an unknown user and to a full mailbox into real DSNs, Debian's Dovecot serves them over
IMAP, and the fetch marks the right subscribers, once.

Both daemons run from configurations of their own in a temporary folder (their own queue,
ports, logs and pid files), so nothing of the machine's mail system is used or changed.
Postfix delivers with its ``virtual`` agent: ``full@`` is an mbox already larger than
``virtual_mailbox_limit`` (Postfix answers 5.2.2, "mailbox full"), ``nobody@`` is in no
table but is accepted at RCPT time (``smtpd_reject_unlisted_recipient = no``) so that it
bounces later, as a DSN (5.1.1), which is what feedpub cannot learn during the session.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from feedpub.cli import main
from feedpub.store import Status, open_store
from feedpub.store.schema import (
    deliveries,
    delivery_events,
    inbound_reports,
    subscriber_events,
    subscribers,
    suppressed_addresses,
)
from tests.conftest import SiteFactory, free_port
from tests.test_digest import MONDAY_9, T0, add_readers, post, site_config

LIMIT_SECONDS = 30
"""How long a daemon may take to start, stop, or deliver what it was given."""
DOMAIN = "test.example"
"""Where the subscribers are: Postfix's own virtual mailbox domain."""
BOUNCE_DOMAIN = "bounces.test"
"""Where the return paths point (the From address, or VERP's ``bounces+TOKEN@``)."""
FINE, NOBODY, FULL = (f"{name}@{DOMAIN}" for name in ("fine", "nobody", "full"))
IMAP_USER = "bounces"
IMAP_PASSWORD = "bounce-box-password"
MAILBOX_LIMIT = 1_000_000


def _program(name: str, *folders: str) -> str | None:
    return shutil.which(name) or next(
        (str(Path(f) / name) for f in folders if os.access(Path(f) / name, os.X_OK)), None
    )


POSTFIX = _program("postfix", "/usr/sbin")
DOVECOT = _program("dovecot", "/usr/sbin")
DOVEADM = _program("doveadm", "/usr/bin")


def _account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _why_not() -> str | None:
    if POSTFIX is None:
        return "Postfix is not installed (apt-get install postfix)"
    if DOVECOT is None or DOVEADM is None:
        return "Dovecot is not installed (apt-get install dovecot-imapd)"
    if os.geteuid() != 0:
        return "Postfix's master and Dovecot must be started as root"
    missing = [n for n in ("postfix", "dovecot", "dovenull") if _account(n) is None]
    if missing:
        return f"the mail system's accounts are missing: {', '.join(missing)}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


# --- the daemons ------------------------------------------------------------------------

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = postfix-feedpub-test
myhostname = mail.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_peername_lookup = no
smtputf8_enable = no
biff = no
recipient_delimiter = +
virtual_mailbox_domains = {domain}, {bounce_domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/etc/mailboxes
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_mailbox_limit = {limit}
message_size_limit = {limit}
# Accept the unknown user, so that the failure comes back later as a DSN.
smtpd_reject_unlisted_recipient = no
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix n - n 60 1 pickup
cleanup    unix n - n - 0 cleanup
qmgr       unix n - n 300 1 qmgr
rewrite    unix - - n - - trivial-rewrite
bounce     unix - - n - 0 bounce
defer      unix - - n - 0 bounce
trace      unix - - n - 0 bounce
verify     unix - - n - 1 verify
flush      unix n - n 1000? 0 flush
proxymap   unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq      unix n - n - - showq
error      unix - - n - - error
retry      unix - - n - - error
discard    unix - - n - - discard
virtual    unix - n n - - virtual
anvil      unix - - n - 1 anvil
scache     unix - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

MAILBOXES = """\
{fine} fine/
{full} full.mbox
@{bounce_domain} bounce/Maildir/
"""

DOVECOT_CONF = """\
base_dir = {root}/dovecot/run
state_dir = {root}/dovecot/state
instance_name = feedpub-test-{port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = {root}/dovecot/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 100
mail_location = maildir:{root}/mail/bounce/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/dovecot/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/bounce
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


@dataclass
class MailSystem:
    root: Path
    smtp_port: int
    imap_port: int

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.smtp_port}?tls=none"

    @property
    def bounce_maildir(self) -> Path:
        return self.root / "mail" / "bounce" / "Maildir"

    def logs(self) -> str:
        found = [self.root / "maillog", self.root / "dovecot" / "dovecot.log"]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}"
                         for p in found if p.exists())

    def wait_for_bounces(self, count: int) -> list[Path]:
        """The DSNs that Postfix delivered to the bounce mailbox, once there are ``count``."""
        deadline = time.monotonic() + LIMIT_SECONDS
        while True:
            landed = sorted((self.bounce_maildir / "new").glob("*"))
            if len(landed) >= count:
                return landed
            if time.monotonic() > deadline:
                pytest.fail(f"{len(landed)} of {count} DSNs arrived in {LIMIT_SECONDS} s\n"
                            + self.logs())
            time.sleep(0.1)

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=LIMIT_SECONDS)
        client.login(IMAP_USER, IMAP_PASSWORD)
        return client


@dataclass(frozen=True)
class Ran:
    returncode: int
    output: str


def _run(*command: str) -> Ran:
    """Run a command that may leave a daemon behind: its output goes to a file, not a pipe,
    which the daemon would hold open (and ``subprocess.run`` wait for)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output,
                              stderr=subprocess.STDOUT, timeout=LIMIT_SECONDS, check=False)
        output.seek(0)
        return Ran(done.returncode, output.read())


def _wait_for_port(port: int, what: str, system: MailSystem) -> None:
    deadline = time.monotonic() + LIMIT_SECONDS
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                if connection.recv(100):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} is not answering on 127.0.0.1:{port}\n{system.logs()}")
        time.sleep(0.1)


def _write_postfix(system: MailSystem, mail_uid: int, mail_gid: int) -> Path:
    root = system.root
    etc = root / "etc"
    for folder in ("etc", "spool", "data", "mail/fine"):
        (root / folder).mkdir(parents=True)
    values = {"root": root, "domain": DOMAIN, "bounce_domain": BOUNCE_DOMAIN, "uid": mail_uid,
              "gid": mail_gid, "limit": MAILBOX_LIMIT, "port": system.smtp_port,
              "fine": FINE, "full": FULL}
    (etc / "main.cf").write_text(MAIN_CF.format(**values), encoding="utf-8")
    (etc / "master.cf").write_text(MASTER_CF.format(**values), encoding="utf-8")
    (etc / "mailboxes").write_text(MAILBOXES.format(**values), encoding="utf-8")
    # A mailbox already over the limit: Postfix's virtual agent answers "5.2.2 mailbox full".
    with (root / "mail" / "full.mbox").open("w", encoding="ascii") as mbox:
        line = "x" * 79 + "\n"
        mbox.write(line * (MAILBOX_LIMIT // len(line) + 100))
    for folder in ("cur", "new", "tmp"):
        (system.bounce_maildir / folder).mkdir(parents=True)
    for path in [root / "mail", *(root / "mail").rglob("*")]:
        os.chown(path, mail_uid, mail_gid)
    postfix = _account("postfix")
    assert postfix is not None
    os.chown(root / "data", postfix.pw_uid, postfix.pw_gid)
    return etc


def _write_dovecot(system: MailSystem) -> Path:
    folder = system.root / "dovecot"
    folder.mkdir()
    (folder / "users").write_text(f"{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}\n", encoding="utf-8")
    config = folder / "dovecot.conf"
    config.write_text(DOVECOT_CONF.format(root=system.root, port=system.imap_port),
                      encoding="utf-8")
    return config


def _stop_postfix(etc: Path, system: MailSystem) -> None:
    assert POSTFIX is not None
    with contextlib.suppress(subprocess.TimeoutExpired):
        _run(POSTFIX, "-c", str(etc), "stop")
    _kill_if_running(system.root / "spool" / "pid" / "master.pid")


def _stop_dovecot(config: Path, system: MailSystem) -> None:
    assert DOVEADM is not None
    with contextlib.suppress(subprocess.TimeoutExpired):
        _run(DOVEADM, "-c", str(config), "stop")
    _kill_if_running(system.root / "dovecot" / "run" / "master.pid")


def _kill_if_running(pid_file: Path) -> None:
    """The last resort when a daemon would not stop: its master process, by its pid file."""
    deadline = time.monotonic() + LIMIT_SECONDS
    while pid_file.exists():
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            return
        if time.monotonic() > deadline + 5:
            return
        time.sleep(0.2)


@pytest.fixture
def mail_system() -> Iterator[MailSystem]:
    """Postfix (SMTP) and Dovecot (IMAP) on 127.0.0.1, stopped at the end whatever happens."""
    mail_user = _account("dovecot")
    assert mail_user is not None and POSTFIX is not None and DOVECOT is not None
    # Not pytest's tmp_path: its parents are closed to the postfix and dovecot users.
    root = Path(tempfile.mkdtemp(prefix="feedpub-postfix-"))
    root.chmod(0o755)
    system = MailSystem(root, free_port(), free_port())
    etc: Path | None = None
    dovecot_config: Path | None = None
    try:
        etc = _write_postfix(system, mail_user.pw_uid, mail_user.pw_gid)
        checked = _run(POSTFIX, "-c", str(etc), "check")
        started = _run(POSTFIX, "-c", str(etc), "start")
        if checked.returncode or started.returncode:
            pytest.fail(f"postfix did not start: {checked.output}{started.output}\n"
                        + system.logs())
        _wait_for_port(system.smtp_port, "Postfix", system)
        dovecot_config = _write_dovecot(system)
        started = _run(DOVECOT, "-c", str(dovecot_config))
        if started.returncode:
            pytest.fail(f"dovecot did not start: {started.output}\n{system.logs()}")
        _wait_for_port(system.imap_port, "Dovecot", system)
        yield system
    finally:
        try:
            if dovecot_config is not None:
                _stop_dovecot(dovecot_config, system)
        finally:
            if etc is not None:
                _stop_postfix(etc, system)
            shutil.rmtree(root, ignore_errors=True)


# --- feedpub ----------------------------------------------------------------------------


@dataclass
class Site:
    root: Path
    database_url: str

    def __call__(self, *args: str, now: Any = None) -> Result:
        command = ["--site", str(self.root), *args]
        if now is not None:
            command += ["--now", now.isoformat()]
        return CliRunner().invoke(main, command, env={
            "FEEDPUB_DATABASE_URL": self.database_url, "FEEDPUB_IMAP_PASSWORD": IMAP_PASSWORD,
        })

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row a report can change."""
        tables = {"subscribers": subscribers, "subscriber_events": subscriber_events,
                  "delivery_events": delivery_events, "inbound_reports": inbound_reports,
                  "suppressed_addresses": suppressed_addresses}
        with open_store(self.database_url) as store, store.read() as conn:
            return {name: sorted(tuple(row) for row in conn.execute(sa.select(table)).all())
                    for name, table in tables.items()}

    def statuses(self) -> dict[str, Status]:
        with open_store(self.database_url) as store, store.read() as conn:
            return {email: Status(status) for email, status in conn.execute(
                sa.select(subscribers.c.email, subscribers.c.status)).all()}

    def events(self) -> dict[str, tuple[str, str, str, bool]]:
        """Per address: (kind, status code, source, whether it names the delivery we sent)."""
        with open_store(self.database_url) as store, store.read() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.email, delivery_events.c.kind,
                          delivery_events.c.status_code, delivery_events.c.source,
                          delivery_events.c.delivery_id, deliveries.c.id)
                .join(subscribers, subscribers.c.id == delivery_events.c.subscriber_id)
                .outerjoin(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
            ).all()
        found: dict[str, tuple[str, str, str, bool]] = {}
        for email, kind, code, source, event_delivery, sent_delivery in rows:
            assert email not in found, f"more than one event about {email}"
            names_it = sent_delivery is not None and event_delivery == sent_delivery
            found[email] = (kind, code, source, names_it)
        return found


def _site_config(system: MailSystem, *, verp: bool, after: str) -> str:
    config = site_config(transport=system.smtp_url).replace(
        "news@example.com", f"news@{BOUNCE_DOMAIN}")
    if verp:
        config = config.replace("rate_limit = 0",
                                f'rate_limit = 0\nverp_domain = "{BOUNCE_DOMAIN}"')
    return config + f"""
[bounces]
imap_host = "127.0.0.1"
imap_port = {system.imap_port}
imap_tls = "none"
imap_user = "{IMAP_USER}"
after = "{after}"
"""


def _send_digest(site: Site, system: MailSystem) -> None:
    """One digest to three subscribers through Postfix; two of them bounce."""
    baseline = site("digest", "send", now=T0)
    assert baseline.exit_code == 0, baseline.output
    with open_store(site.database_url) as store:
        add_readers(store, [FINE, NOBODY, FULL])
    (site.root / "content" / "posts" / "2026-01-02-new.md").write_text(
        post("New", "2026-01-02 10:00:00 +0000"), encoding="utf-8")
    sent = site("digest", "send", now=MONDAY_9 + timedelta(minutes=1))
    assert sent.exit_code == 0, sent.output
    # Postfix took all three: the two failures come later, as DSNs.
    assert "sent 3, retrying 0, failed 0" in sent.output, sent.output


def _return_paths(dsns: list[Path]) -> list[str]:
    """Who each DSN was delivered to (Postfix's ``X-Original-To``)."""
    found = []
    for path in dsns:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("X-Original-To:"):
                found.append(line.partition(":")[2].strip())
                break
    return sorted(found)


FETCHED_AT = MONDAY_9 + timedelta(hours=1)


def _fetch(site: Site, expected: str) -> None:
    fetched = site("bounces", "fetch", now=FETCHED_AT)
    assert fetched.exit_code == 0, fetched.output
    assert fetched.stdout.strip() == expected


def _assert_the_right_subscribers_were_marked(site: Site) -> None:
    assert site.statuses() == {FINE: Status.ACTIVE, NOBODY: Status.BOUNCED,
                               FULL: Status.ACTIVE}
    # Each event is about the delivery of the digest that bounced, with Postfix's codes:
    # a full mailbox passes with time (soft), one soft bounce is below soft_bounce_limit.
    assert site.events() == {NOBODY: ("hard", "5.1.1", "dsn", True),
                             FULL: ("soft", "5.2.2", "dsn", True)}


def test_postfix_dsns_to_verp_addresses_mark_the_right_subscribers_once(
    make_site: SiteFactory, database_url: str, cli_env: Callable[..., Any],
    mail_system: MailSystem,
) -> None:
    site = Site(make_site(config=_site_config(mail_system, verp=True, after="keep")),
                database_url)
    _send_digest(site, mail_system)
    dsns = mail_system.wait_for_bounces(2)
    return_paths = _return_paths(dsns)
    assert all(p.startswith("bounces+") and p.endswith(f"@{BOUNCE_DOMAIN}")
               for p in return_paths) and len(set(return_paths)) == 2, return_paths

    _fetch(site, "2 messages: 2 events, 1 bounced, 0 unsubscribed (complaints), 0 ignored, "
                 "0 about unknown addresses, 0 handled before")
    _assert_the_right_subscribers_were_marked(site)
    after_first = site.snapshot()

    # Kept, and marked seen: the next run has nothing to read.
    _fetch(site, "0 messages: 0 events, 0 bounced, 0 unsubscribed (complaints), 0 ignored, "
                 "0 about unknown addresses, 0 handled before")
    # As if a run had died after its commit but before it filed the messages (or two runs
    # overlapped): both are read again, and found handled.
    client = mail_system.imap()
    try:
        client.select("INBOX")
        client.store("1:*", "-FLAGS", "(\\Seen)")
    finally:
        client.logout()
    _fetch(site, "2 messages: 0 events, 0 bounced, 0 unsubscribed (complaints), 0 ignored, "
                 "0 about unknown addresses, 2 handled before")
    assert site.snapshot() == after_first


def test_postfix_dsns_to_a_plain_return_path_mark_the_right_subscribers_once(
    make_site: SiteFactory, database_url: str, cli_env: Callable[..., Any],
    mail_system: MailSystem,
) -> None:
    site = Site(make_site(config=_site_config(mail_system, verp=False, after="move")),
                database_url)
    _send_digest(site, mail_system)
    dsns = mail_system.wait_for_bounces(2)
    assert _return_paths(dsns) == [f"news@{BOUNCE_DOMAIN}"] * 2

    _fetch(site, "2 messages: 2 events, 1 bounced, 0 unsubscribed (complaints), 0 ignored, "
                 "0 about unknown addresses, 0 handled before")
    _assert_the_right_subscribers_were_marked(site)
    after_first = site.snapshot()

    _fetch(site, "0 messages: 0 events, 0 bounced, 0 unsubscribed (complaints), 0 ignored, "
                 "0 about unknown addresses, 0 handled before")
    assert site.snapshot() == after_first
    client = mail_system.imap()
    try:
        assert client.select("INBOX")[1] == [b"0"]
        assert client.select("feedpub-handled")[1] == [b"2"]
    finally:
        client.logout()
