"""Reports that come back after sending -> classified findings -> subscriber changes.

A report is a delivery status notification (RFC 3464), an abuse report (ARF,
RFC 5965), a bounce in one of the many older formats (read by Mailman's
``flufl.bounce``) or a relay's event (see :mod:`feedpub.web.webhooks`). Each
becomes a :class:`Report`: its key, and one :class:`Finding` per recipient,
classified as a hard bounce (5.x.x, no such user), a soft one (4.x.x, mailbox
full) or a complaint. Auto-replies and out-of-office messages are none of
these, and are ignored.

:func:`apply_reports` stores the findings of a batch of reports and applies the
policy of ``[mail]`` in one transaction (:func:`apply_report` does it for one): a
hard bounce marks the subscriber bounced at once,
``soft_bounce_limit`` soft bounces within ``soft_bounce_days`` do the same, a
complaint unsubscribes and suppresses the address. A report whose key was seen
before (a second fetch of the same message, a replayed webhook) changes nothing.

Parsing never raises for a malformed message: what cannot be understood is a
report with no findings and a reason it was ignored.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from enum import StrEnum

from sqlalchemy.engine import Connection

from feedpub.config import MailConfig
from feedpub.errors import InvalidAddress
from feedpub.store import events
from feedpub.store.addresses import email_key, parse_address
from feedpub.store.schema import EventKind, Source, Status
from feedpub.store.subscribers import (
    FORGOTTEN_DOMAIN,
    next_status,
    status_change_values,
    suppression_hash,
)
from feedpub.tokens import TokenError, read_return_token

EDITION_HEADER = "X-Feedpub-Edition"
SUPPRESSED_COMPLAINT = "complaint"
"""The ``suppressed_addresses.reason`` of an address whose owner reported spam."""
MAX_REASON = 2000
"""Characters of a report's reason kept with its event."""


class Ignored(StrEnum):
    """Why a message taught nothing about any delivery."""

    AUTO_REPLY = "auto-reply"
    NOT_A_REPORT = "not-a-report"
    NOT_A_FAILURE = "not-a-failure"
    """A DSN of a delivery that succeeded or was relayed, or a not-spam ARF."""
    UNKNOWN_RECIPIENT = "unknown"
    """The report names nobody we sent to."""


@dataclass(frozen=True)
class Finding:
    """What one report says about one recipient."""

    kind: EventKind
    recipient: str | None = None
    delivery_id: int | None = None
    """From a VERP return path: names the delivery without guessing."""
    message_id: str | None = None
    """The original message's ``Message-ID``, when the report quotes it."""
    edition_key: str | None = None
    """The original's ``X-Feedpub-Edition`` (``newsletter/period``), when quoted."""
    status_code: str = ""
    reason: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class Report:
    key: str
    """Unique per report: a report whose key was handled before is not handled again."""
    source: str
    findings: tuple[Finding, ...] = ()
    ignored: Ignored | None = None


@dataclass(frozen=True)
class Policy:
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 14

    @classmethod
    def from_mail(cls, mail: MailConfig) -> Policy:
        return cls(mail.soft_bounce_limit, mail.soft_bounce_days)


@dataclass
class Applied:
    """What :func:`apply_report` did."""

    duplicate: bool = False
    stored: int = 0
    unmatched: int = 0
    bounced: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)


# --- classification ---------------------------------------------------------------------

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SOFT_TEXT = re.compile(
    r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (the )?(storage|quota)|"
    r"insufficient (system )?storage|mailbox size limit|try again later|temporar",
    re.IGNORECASE,
)
_SOFT_SUBJECTS = {("2", "2"), ("3", "1")}
"""X.2.2 mailbox full and X.3.1 mail system full pass with time, even when sent as 5.x.x."""


def status_code_in(text: str) -> str:
    """The first enhanced status code (``5.1.1``) in ``text``; empty when there is none."""
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else ""


def classify_failure(
    status_code: str, reason: str = "", *, permanent: bool | None = None
) -> EventKind:
    """Hard or soft, from the enhanced status code first, then the words of the reason,
    then what the report said (``permanent``); hard when nothing says otherwise."""
    match = _STATUS.fullmatch(status_code) if status_code else None
    if match:
        klass, subject, detail = match.groups()
        if klass == "4" or (subject, detail) in _SOFT_SUBJECTS:
            return EventKind.SOFT
        return EventKind.HARD
    if _SOFT_TEXT.search(reason):
        return EventKind.SOFT
    if permanent is False:
        return EventKind.SOFT
    return EventKind.HARD


_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"absence|vacation|away from|autosvar|auto:|réponse automatique)",
    re.IGNORECASE,
)


def is_auto_reply(message: email.message.Message) -> bool:
    """An auto-reply or out-of-office message (RFC 3834 and the common vendor headers)."""
    auto = (message.get("Auto-Submitted") or "").strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress")
           if h != "X-Auto-Response-Suppress") or (
        (message.get("Precedence") or "").strip().lower() == "auto_reply"
    ):
        return True
    return bool(_AUTO_SUBJECT.search(str(message.get("Subject") or "")))


# --- reading one message ----------------------------------------------------------------


def message_key(raw: bytes, message: email.message.Message) -> str:
    """``mail:<Message-ID>``, or a hash of the bytes for a message without one."""
    message_id = (message.get("Message-ID") or "").strip()
    if message_id and len(message_id) < 240:
        return f"mail:{message_id}"
    return f"mail:sha256:{hashlib.sha256(raw).hexdigest()}"


def parse_message(
    raw: bytes, *, secret: str | None, verp_local_part: str = "bounces",
    envelope_recipient: str | None = None,
) -> Report:
    """The report in one mail message (a DSN, an ARF report, an older bounce format).

    ``envelope_recipient`` is the address the message was delivered to (an MTA's
    pipe gives it); a VERP token there, or in a ``Delivered-To``/``To`` header or
    in the quoted original's ``Return-Path``, names the delivery.
    """
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    key = message_key(raw, message)
    delivery_id = _verp_delivery(
        _return_addresses(message, envelope_recipient), secret, verp_local_part
    )
    original = _original_headers(message)
    if delivery_id is None and original is not None:
        delivery_id = _verp_delivery(
            [a for _, a in getaddresses(original.get_all("Return-Path") or [])],
            secret, verp_local_part,
        )
    quoted = _Quoted.of(original)
    report_type = (message.get_param("report-type") or "")
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    if message.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return _arf(key, message, delivery_id, quoted)
    if message.get_content_type() == "multipart/report" and report_type == "delivery-status":
        findings = list(_dsn_findings(message, delivery_id, quoted))
        if findings:
            return Report(key, "dsn", tuple(findings))
        if _has_delivery_status(message):
            return Report(key, "dsn", ignored=Ignored.NOT_A_FAILURE)
    if is_auto_reply(message) and not _looks_like_bounce(message):
        return Report(key, "mail", ignored=Ignored.AUTO_REPLY)
    findings = list(_legacy_findings(message, delivery_id, quoted))
    if findings:
        return Report(key, "dsn", tuple(findings))
    if delivery_id is not None and _looks_like_bounce(message):
        # Returned to a VERP address as a bounce, in a format nothing could read.
        text = _first_text(message)
        code = status_code_in(text)
        return Report(key, "dsn", (Finding(
            classify_failure(code, text), delivery_id=delivery_id, status_code=code,
            reason=_short(text), message_id=quoted.message_id, edition_key=quoted.edition,
        ),))
    return Report(key, "mail", ignored=Ignored.NOT_A_REPORT)


@dataclass(frozen=True)
class _Quoted:
    """What the report quotes of the message we sent."""

    message_id: str | None = None
    edition: str | None = None
    to: str | None = None

    @classmethod
    def of(cls, headers: email.message.Message | None) -> _Quoted:
        if headers is None:
            return cls()
        to = parseaddr(str(headers.get("To") or ""))[1] or None
        message_id = str(headers.get("Message-ID") or "").strip() or None
        edition = str(headers.get(EDITION_HEADER) or "").strip() or None
        return cls(message_id, edition, to)


def _return_addresses(message: email.message.Message, envelope: str | None) -> list[str]:
    found = [envelope] if envelope else []
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To"):
        found.extend(address for _, address in getaddresses(message.get_all(header) or []))
    return found


def _verp_delivery(addresses: Iterable[str], secret: str | None, local_part: str) -> int | None:
    if not secret:
        return None
    prefix = local_part.lower() + "+"
    for address in addresses:
        local = address.strip().strip("<>").rpartition("@")[0].lower()
        if local.startswith(prefix):
            try:
                return read_return_token(secret, local[len(prefix):])
            except TokenError:
                continue
    return None


def _original_headers(message: email.message.Message) -> email.message.Message | None:
    """The headers of the original message, from a message/rfc822 or text/rfc822-headers part."""
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                inner = payload[0]
                return inner if isinstance(inner, email.message.Message) else None
        if content_type in ("text/rfc822-headers", "text/global-headers"):
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                return email.message_from_bytes(body, policy=email.policy.compat32)
    return None


def _has_delivery_status(message: email.message.Message) -> bool:
    return any(p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
               for p in message.walk())


def _status_blocks(message: email.message.Message) -> Iterator[email.message.Message]:
    """The per-recipient field blocks of the delivery-status part (the first is per message)."""
    for part in message.walk():
        if part.get_content_type() not in (
            "message/delivery-status", "message/global-delivery-status"
        ):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            yield from (b for b in payload[1:] if isinstance(b, email.message.Message))
            # Some servers put the recipient fields in the first block alone.
            if len(payload) == 1 and isinstance(payload[0], email.message.Message) and (
                payload[0].get("Final-Recipient") or payload[0].get("Original-Recipient")
            ):
                yield payload[0]


def _typed_address(value: str | None) -> str | None:
    """``rfc822; ada@example.com`` -> ``ada@example.com``."""
    if not value:
        return None
    address = value.partition(";")[2] if ";" in value else value
    address = address.strip().strip("<>").strip()
    return address or None


def _dsn_findings(
    message: email.message.Message, delivery_id: int | None, quoted: _Quoted
) -> Iterator[Finding]:
    for block in _status_blocks(message):
        action = (block.get("Action") or "").strip().lower()
        if action not in ("failed", "delayed"):
            continue
        recipient = _typed_address(block.get("Original-Recipient")) or _typed_address(
            block.get("Final-Recipient")
        )
        status = status_code_in(str(block.get("Status") or ""))
        diagnostic = _unfold(str(block.get("Diagnostic-Code") or ""))
        # "smtp; 550 5.1.1 <ada@…>: user unknown": the text after the diagnostic type.
        reason = diagnostic.partition(";")[2].strip() if ";" in diagnostic[:12] else diagnostic
        kind = EventKind.SOFT if action == "delayed" else classify_failure(status, reason)
        yield Finding(
            kind, recipient=recipient, delivery_id=delivery_id, message_id=quoted.message_id,
            edition_key=quoted.edition, status_code=status,
            reason=_short(f"{action}: {reason}" if reason else action),
            at=_date(block.get("Last-Attempt-Date") or message.get("Date")),
        )


def _legacy_findings(
    message: email.message.Message, delivery_id: int | None, quoted: _Quoted
) -> Iterator[Finding]:
    """Bounces that are no DSN: Exim's and qmail's own formats, old Exchange, ..."""
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(message)
    except Exception:  # noqa: BLE001 - a detector choking on odd input is an unreadable report
        return
    text = _first_text(message)
    for addresses, is_permanent in ((permanent, True), (temporary, False)):
        for raw_address in sorted(addresses):
            address = raw_address.decode("utf-8", "replace").strip("<>")
            reason = _reason_near(text, address)
            code = status_code_in(reason)
            kind = classify_failure(code, reason, permanent=is_permanent)
            if not is_permanent and kind == EventKind.HARD:
                kind = EventKind.SOFT
            yield Finding(
                kind, recipient=address, delivery_id=delivery_id,
                message_id=quoted.message_id, edition_key=quoted.edition, status_code=code,
                reason=_short(reason), at=_date(message.get("Date")),
            )


def _arf(key: str, message: email.message.Message, delivery_id: int | None,
         quoted: _Quoted) -> Report:
    fields: email.message.Message | None = None
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(
                payload[0], email.message.Message
            ):
                fields = payload[0]
            elif isinstance(payload, str):
                fields = email.message_from_string(payload, policy=email.policy.compat32)
    if fields is None:
        return Report(key, "arf", ignored=Ignored.NOT_A_REPORT)
    feedback = (fields.get("Feedback-Type") or "").strip().lower()
    if feedback in ("not-spam", "auth-failure", "dkim", "spf"):
        return Report(key, "arf", ignored=Ignored.NOT_A_FAILURE)
    recipients: list[str | None] = [
        _typed_address(str(v)) or str(v).strip()
        for v in (fields.get_all("Original-Rcpt-To") or fields.get_all("Removal-Recipient") or [])
    ] or [quoted.to]
    reporter = fields.get("User-Agent") or fields.get("Reporting-MTA") or "unknown"
    findings = tuple(
        Finding(
            EventKind.COMPLAINT, recipient=recipient, delivery_id=delivery_id,
            message_id=quoted.message_id, edition_key=quoted.edition,
            reason=_short(f"{feedback or 'abuse'} report from {reporter}"),
            at=_date(fields.get("Arrival-Date") or message.get("Date")),
        )
        for recipient in recipients
    )
    return Report(key, "arf", findings)


_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|delivery (status notification|failure|has failed)|"
    r"failure notice|mail delivery (failed|system)|non[- ]?delivery|could not be delivered",
    re.IGNORECASE,
)


def _looks_like_bounce(message: email.message.Message) -> bool:
    sender = parseaddr(str(message.get("From") or ""))[1].lower()
    return (
        sender.startswith(("mailer-daemon@", "postmaster@"))
        or bool(_BOUNCE_SUBJECT.search(str(message.get("Subject") or "")))
        or message.get_content_type() == "multipart/report"
    )


def _first_text(message: email.message.Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    return body.decode(charset, "replace")
                except LookupError:
                    return body.decode("utf-8", "replace")
    return ""


def _reason_near(text: str, address: str) -> str:
    """The lines after the first mention of ``address`` (where qmail and Exim give the reason)."""
    index = text.lower().find(address.lower())
    if index < 0:
        return _short(text)
    lines = [line.strip() for line in text[index + len(address):].splitlines()]
    kept: list[str] = []
    for line in lines:
        if not line and kept:
            break
        if line:
            kept.append(line.strip(">: "))
    return " ".join(kept)


def _unfold(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _short(text: str) -> str:
    text = _unfold(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else None


# --- applying reports -------------------------------------------------------------------


def apply_report(conn: Connection, report: Report, *, now: datetime, policy: Policy) -> Applied:
    """Store the findings of ``report`` and change the subscribers they name, once
    (a webhook, ``bounces read``): :func:`apply_reports` of this one report."""
    return apply_reports(conn, [report], now=now, policy=policy)[0]


def apply_reports(
    conn: Connection, reports: Sequence[Report], *, now: datetime, policy: Policy
) -> list[Applied]:
    """Store the findings of each report and change the subscribers they name, once per key.

    Runs inside the caller's write transaction with a fixed number of statements for the
    whole batch: who the findings are about is looked up for all of them at once, then the
    keys are claimed in one INSERT that skips the keys already taken, and only the reports
    whose key this transaction claimed change anything. Two handlers of the same report
    (overlapping fetches, a replayed webhook) cannot both apply it: the second finds the
    key taken (PostgreSQL makes it wait for the first to commit) and changes nothing, and a
    report twice in one batch is applied once. The policy sees the reports in order.
    """
    results = [Applied() for _ in reports]
    targets = _targets(conn, [finding for report in reports for finding in report.findings])
    claimed = events.claim_reports(conn, [
        events.Claim(report.key, report.source, _outcome(report, targets)) for report in reports
    ], now=now)
    new_events: list[events.NewEvent] = []
    effects: list[tuple[Applied, events.Target, Finding]] = []
    for report, applied in zip(reports, results, strict=True):
        key = report.key[:255]
        if key not in claimed:
            applied.duplicate = True
            continue
        claimed.discard(key)  # the same report again, later in this batch, is a duplicate
        for finding in report.findings:
            target = targets.get(finding)
            if target is None:
                applied.unmatched += 1
                continue
            new_events.append(events.NewEvent(
                target, finding.kind, report.source,
                at=finding.at if finding.at is not None and finding.at <= now else now,
                status_code=finding.status_code, reason=finding.reason, report_key=report.key,
            ))
            applied.stored += 1
            effects.append((applied, target, finding))
    events.add_events(conn, new_events)
    _apply_policy(conn, effects, now=now, policy=policy)
    return results


def _outcome(report: Report, targets: dict[Finding, events.Target]) -> str:
    if not report.findings:
        return str(report.ignored or Ignored.NOT_A_REPORT)
    if any(finding in targets for finding in report.findings):
        return "events"
    return str(Ignored.UNKNOWN_RECIPIENT)


def _targets(conn: Connection, findings: Iterable[Finding]) -> dict[Finding, events.Target]:
    """The delivery (or at least the subscriber) each finding is about: the VERP token first,
    then the quoted Message-ID, then the address and the quoted edition. A few queries for
    all the findings; those about nobody we know are left out."""
    found: dict[Finding, events.Target] = {}
    unique = list(dict.fromkeys(findings))
    by_delivery = events.targets_of_deliveries(
        conn, [f.delivery_id for f in unique if f.delivery_id is not None])
    for finding in unique:
        if finding.delivery_id is not None and finding.delivery_id in by_delivery:
            found[finding] = by_delivery[finding.delivery_id]
    by_message = events.targets_by_message_ids(
        conn, [f.message_id for f in unique if f.message_id and f not in found])
    for finding in unique:
        if finding not in found and finding.message_id:
            target = by_message.get(finding.message_id.strip())
            if target is not None:
                found[finding] = target
    address_keys: dict[Finding, str] = {}
    for finding in unique:
        if finding not in found and finding.recipient:
            try:
                address_keys[finding] = parse_address(
                    finding.recipient, allow_smtputf8=True).key
            except InvalidAddress:
                continue
    subscriber_of = events.subscriber_ids_by_key(conn, address_keys.values())
    wanted = {finding: (subscriber_of[key], finding.edition_key)
              for finding, key in address_keys.items() if key in subscriber_of}
    by_edition = events.targets_by_editions(conn, wanted.values())
    for finding, pair in wanted.items():
        found[finding] = by_edition[pair]
    return found


def _apply_policy(
    conn: Connection, effects: Sequence[tuple[Applied, events.Target, Finding]], *,
    now: datetime, policy: Policy,
) -> None:
    """Complaints unsubscribe and suppress, hard bounces (and enough soft ones) mark bounced.

    The soft bounces are counted once, after this batch's events are stored: a subscriber
    who reaches the limit within the batch is bounced once, as if one report at a time."""
    if not effects:
        return
    states = events.subscriber_states(conn, {target.subscriber_id for _, target, _ in effects})
    soft_counts = events.count_events_of(
        conn, {t.subscriber_id for _, t, f in effects if f.kind == EventKind.SOFT},
        EventKind.SOFT, since=now - timedelta(days=policy.soft_bounce_days),
    )
    # The stored count includes this batch; the reports before each one count, in order.
    in_batch = Counter(t.subscriber_id for _, t, f in effects if f.kind == EventKind.SOFT)
    running = {sid: max(0, soft_counts.get(sid, 0) - n) for sid, n in in_batch.items()}
    changes: list[events.StatusChange] = []
    suppressed: set[str] = set()
    for applied, target, finding in effects:
        state = states.get(target.subscriber_id)
        if state is None:
            continue
        detail = f"{finding.kind.value} {finding.status_code} {finding.reason}".strip()[:500]
        wanted = Status.BOUNCED
        if finding.kind == EventKind.COMPLAINT:
            wanted = Status.UNSUBSCRIBED
            applied.unsubscribed.append(state.email)
            if not state.email.endswith("@" + FORGOTTEN_DOMAIN):
                suppressed.add(suppression_hash(email_key(state.email)))
        elif finding.kind == EventKind.SOFT:
            running[target.subscriber_id] += 1
            if running[target.subscriber_id] < policy.soft_bounce_limit:
                continue
            detail = (f"{policy.soft_bounce_limit} soft bounces in {policy.soft_bounce_days} "
                      f"days; {detail}")
        moved_to = next_status(state.status, wanted, resubscribe=False)
        if moved_to is None:
            continue
        changes.append(events.StatusChange(
            target.subscriber_id, status_change_values(moved_to, now), moved_to.value, detail))
        states[target.subscriber_id] = replace(state, status=moved_to)
        if moved_to == Status.BOUNCED:
            applied.bounced.append(state.email)
    events.change_statuses(conn, changes, now=now, source=Source.REPORT.value)
    events.suppress_hashes(conn, suppressed, now=now, reason=SUPPRESSED_COMPLAINT)
