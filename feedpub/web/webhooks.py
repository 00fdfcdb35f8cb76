"""Relay webhooks in ``feedpub serve``: Amazon SES (through SNS), Postmark, Mailgun, SendGrid.

Each request is verified before anything is read from it: SNS by its RSA
signature, with the signing certificate fetched only from an
``sns.<region>.amazonaws.com`` HTTPS URL and the topic in
``bounces.ses_topic_arns``; Postmark by the HTTP Basic password set on the
webhook; Mailgun by its HMAC of timestamp and token; SendGrid by its ECDSA
signature of timestamp and body. What fails is refused (401/403) and changes
nothing. A signed request older than ``bounces.webhook_max_age_seconds`` is
refused as a replay, and each event is applied once by its provider's id
(:func:`feedpub.bounces.apply_report`), so a replay inside the window changes
nothing either. A provider whose secret is not set has no endpoint (404).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from feedpub.bounces import Finding, Policy, Report, apply_report, classify_failure
from feedpub.config import Settings
from feedpub.store.engine import Store
from feedpub.store.schema import EventKind
from feedpub.tokens import TokenError, read_return_token

Clock = Callable[[], datetime]
Fetch = Callable[[str], bytes]
"""GETs an HTTPS URL (a signing certificate, a subscription confirmation)."""
MAX_BODY = 1_000_000
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")


class Refused(Exception):
    """The request is not from the provider (or is a replay): 401/403, nothing changes."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def https_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # the caller checked the host
        body: bytes = response.read(MAX_BODY)
        return body


# --- helpers ---------------------------------------------------------------------------


def _verp_delivery(address: str | None, settings: Settings) -> int | None:
    if not address or not settings.secret:
        return None
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    prefix = settings.mail.verp_local_part.lower() + "+"
    if not local.startswith(prefix):
        return None
    try:
        return read_return_token(settings.secret, local[len(prefix):])
    except TokenError:
        return None


def _fresh(moment: datetime, now: datetime, max_age: int) -> None:
    if abs((now - moment).total_seconds()) > max_age:
        raise Refused(f"timestamp {moment:%Y-%m-%dT%H:%M:%SZ} is too old (a replay?)")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused("the body is not JSON", status=400) from None


# --- Amazon SES through SNS -----------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The text SNS signs: ``Key\\nvalue\\n`` for its fields in order (Subject only if given)."""
    names = _SNS_FIELDS.get(str(message.get("Type")))
    if names is None:
        raise Refused(f"unknown SNS message type {message.get('Type')!r}", status=400)
    text = ""
    for name in names:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise Refused(f"SNS message without {name}", status=400)
        text += f"{name}\n{value}\n"
    return text.encode("utf-8")


def check_sns_url(url: object) -> str:
    """An SNS URL (certificate, subscribe) must be HTTPS on an SNS host of AWS."""
    if not isinstance(url, str):
        raise Refused("no SNS URL")
    parts = urlsplit(url)
    if parts.scheme != "https" or not _SNS_HOST.fullmatch(parts.hostname or ""):
        raise Refused(f"{url!r} is not an https://sns.<region>.amazonaws.com URL")
    return url


def verify_sns(message: Mapping[str, Any], fetch: Fetch) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    url = check_sns_url(message.get("SigningCertURL"))
    if not urlsplit(url).path.endswith(".pem"):
        raise Refused("the signing certificate URL does not name a .pem file")
    version = str(message.get("SignatureVersion"))
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # what SNS signs with unless the topic asks for version 2
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise Refused(f"unknown SNS SignatureVersion {version!r}")
    try:
        signature = base64.b64decode(str(message.get("Signature")), validate=True)
        certificate = x509.load_pem_x509_certificate(_certificate(url, fetch))
    except (binascii.Error, ValueError) as error:
        raise Refused(f"unreadable SNS signature or certificate: {error}") from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("the SNS certificate has no RSA key")
    try:
        key.verify(signature, sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise Refused("the SNS signature does not match") from None


@lru_cache(maxsize=16)
def _cached_certificate(url: str, fetch: Fetch) -> bytes:
    return fetch(url)


def _certificate(url: str, fetch: Fetch) -> bytes:
    try:
        return _cached_certificate(url, fetch)
    except OSError as error:
        raise Refused(f"cannot fetch the SNS certificate: {error}", status=503) from None


def ses_reports(notification: Mapping[str, Any], message_id: str,
                settings: Settings) -> list[Report]:
    """The findings of one SES notification (``Bounce`` or ``Complaint``; others: none)."""
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") or {}
    common = mail.get("commonHeaders") or {}
    original = common.get("messageId") if isinstance(common, dict) else None
    delivery_id = _verp_delivery(mail.get("source"), settings)
    findings: list[Finding] = []
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        bounce_type = bounce.get("bounceType")
        for item in bounce.get("bouncedRecipients") or []:
            status = str(item.get("status") or "")
            reason = str(item.get("diagnosticCode") or bounce.get("bounceSubType") or "")
            if bounce_type == "Permanent":
                event = classify_failure(status, reason, permanent=True)
                if bounce.get("bounceSubType") == "MailboxFull":
                    event = EventKind.SOFT
            else:
                event = EventKind.SOFT
            findings.append(Finding(
                event, recipient=item.get("emailAddress"), delivery_id=delivery_id,
                message_id=original, status_code=status[:16],
                reason=f"{bounce_type}/{bounce.get('bounceSubType')}: {reason}"[:2000],
                at=_parse_time(bounce.get("timestamp")),
            ))
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        if complaint.get("complaintFeedbackType") == "not-spam":
            return [Report(f"ses:{message_id}", "ses")]
        for item in complaint.get("complainedRecipients") or []:
            findings.append(Finding(
                EventKind.COMPLAINT, recipient=item.get("emailAddress"),
                delivery_id=delivery_id, message_id=original,
                reason=f"complaint ({complaint.get('complaintFeedbackType') or 'abuse'}) "
                       f"from {complaint.get('userAgent') or 'SES'}",
                at=_parse_time(complaint.get("timestamp")),
            ))
    return [Report(f"ses:{message_id}", "ses", tuple(findings))]


# --- Postmark, Mailgun, SendGrid --------------------------------------------------------

_POSTMARK_KINDS = {
    "HardBounce": EventKind.HARD, "BadEmailAddress": EventKind.HARD,
    "SoftBounce": EventKind.SOFT, "Transient": EventKind.SOFT, "DnsError": EventKind.SOFT,
    "SpamComplaint": EventKind.COMPLAINT, "SpamNotification": EventKind.COMPLAINT,
}


def postmark_reports(event: Mapping[str, Any], settings: Settings) -> list[Report]:
    kind = _POSTMARK_KINDS.get(str(event.get("Type") or event.get("RecordType")))
    key = f"postmark:{event.get('RecordType')}:{event.get('ID')}"
    if event.get("ID") is None:
        raise Refused("a Postmark event without ID", status=400)
    if kind is None:
        return [Report(key, "postmark")]
    details = str(event.get("Details") or event.get("Description") or "")
    return [Report(key, "postmark", (Finding(
        kind, recipient=event.get("Email"), status_code=_status(details),
        reason=f"{event.get('Type')}: {details}"[:2000],
        at=_parse_time(event.get("BouncedAt")),
    ),))]


def mailgun_reports(payload: Mapping[str, Any], settings: Settings) -> list[Report]:
    data = payload.get("event-data") or {}
    event = data.get("event")
    token = (payload.get("signature") or {}).get("token")
    key = f"mailgun:{data.get('id') or token}"
    status = data.get("delivery-status") or {}
    message = data.get("message") or {}
    headers = message.get("headers") or {}
    original = headers.get("message-id")
    if original and not str(original).startswith("<"):
        original = f"<{original}>"
    delivery_id = _verp_delivery((data.get("envelope") or {}).get("sender"), settings)
    at = datetime.fromtimestamp(float(data.get("timestamp") or 0), UTC) if data.get(
        "timestamp") else None
    if event == "failed":
        code = str(status.get("enhanced-code") or "") or _status(str(status.get("message") or ""))
        reason = str(status.get("message") or status.get("description") or "")
        kind = (classify_failure(code, reason, permanent=True)
                if data.get("severity") == "permanent" else EventKind.SOFT)
        finding = Finding(kind, recipient=data.get("recipient"), delivery_id=delivery_id,
                          message_id=original, status_code=code, reason=reason[:2000], at=at)
    elif event == "complained":
        finding = Finding(EventKind.COMPLAINT, recipient=data.get("recipient"),
                          delivery_id=delivery_id, message_id=original,
                          reason="complaint (Mailgun feedback loop)", at=at)
    else:
        return [Report(key, "mailgun")]
    return [Report(key, "mailgun", (finding,))]


def sendgrid_reports(events: list[Any], settings: Settings) -> list[Report]:
    reports: list[Report] = []
    for event in events:
        if not isinstance(event, dict) or not event.get("sg_event_id"):
            continue
        key = f"sendgrid:{event['sg_event_id']}"
        name = event.get("event")
        original = event.get("smtp-id")
        at = datetime.fromtimestamp(float(event["timestamp"]), UTC) if isinstance(
            event.get("timestamp"), int | float) else None
        if name == "bounce":
            code = str(event.get("status") or "")
            reason = str(event.get("reason") or "")
            kind = (EventKind.SOFT if event.get("type") == "blocked"
                    else classify_failure(code, reason, permanent=True))
            finding = Finding(kind, recipient=event.get("email"), message_id=original,
                              status_code=code[:16], reason=reason[:2000], at=at)
        elif name == "spamreport":
            finding = Finding(EventKind.COMPLAINT, recipient=event.get("email"),
                              message_id=original, reason="spam report (SendGrid)", at=at)
        else:
            reports.append(Report(key, "sendgrid"))
            continue
        reports.append(Report(key, "sendgrid", (finding,)))
    return reports


def _status(text: str) -> str:
    match = re.search(r"\b[245]\.\d{1,3}\.\d{1,3}\b", text)
    return match.group(0) if match else ""


# --- the endpoints ---------------------------------------------------------------------


@dataclass
class Webhooks:
    settings: Settings
    store: Store
    clock: Clock
    env: Mapping[str, str]
    fetch_url: Fetch | None = None
    """How certificates and subscribe URLs are fetched; None: :func:`https_get`."""

    def fetch(self, url: str) -> bytes:
        return (self.fetch_url or https_get)(url)

    def secret(self, variable: str) -> str:
        return self.env.get(variable, "")

    async def handle(self, request: Request,
                     verify: Callable[[bytes, Request], list[Report]]) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("too large", status_code=413)
        try:
            reports = await run_in_threadpool(verify, body, request)
        except Refused as refused:
            return PlainTextResponse(str(refused), status_code=refused.status)
        await run_in_threadpool(self.apply, reports)
        return PlainTextResponse("ok")

    def apply(self, reports: list[Report]) -> None:
        policy = Policy.from_mail(self.settings.mail)
        with self.store.write() as conn:
            for report in reports:
                apply_report(conn, report, now=self.clock(), policy=policy)

    # SES through SNS
    async def ses(self, request: Request) -> Response:
        if not self.settings.bounces.ses_topic_arns:
            return PlainTextResponse("not configured", status_code=404)
        return await self.handle(request, self.verify_ses)

    def verify_ses(self, body: bytes, request: Request) -> list[Report]:
        message = _json(body)
        if not isinstance(message, dict):
            raise Refused("not an SNS message", status=400)
        if message.get("TopicArn") not in self.settings.bounces.ses_topic_arns:
            raise Refused(f"topic {message.get('TopicArn')!r} is not in bounces.ses_topic_arns")
        verify_sns(message, self.fetch)
        sent_at = _parse_time(message.get("Timestamp"))
        if sent_at is None:
            raise Refused("SNS message without a Timestamp", status=400)
        _fresh(sent_at, self.clock(), self.settings.bounces.webhook_max_age_seconds)
        if message["Type"] == "SubscriptionConfirmation":
            try:
                self.fetch(check_sns_url(message.get("SubscribeURL")))
            except OSError as error:
                raise Refused(f"cannot confirm the subscription: {error}", status=503) from None
            return []
        if message["Type"] != "Notification":
            return []
        notification = _json(str(message.get("Message")).encode())
        if not isinstance(notification, dict):
            raise Refused("the SNS Message is not an SES notification", status=400)
        return ses_reports(notification, str(message.get("MessageId")), self.settings)

    # Postmark
    async def postmark(self, request: Request) -> Response:
        if not self.secret(self.settings.bounces.postmark_token_env):
            return PlainTextResponse("not configured", status_code=404)
        return await self.handle(request, self.verify_postmark)

    def verify_postmark(self, body: bytes, request: Request) -> list[Report]:
        expected = self.secret(self.settings.bounces.postmark_token_env)
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            password = base64.b64decode(encoded, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if scheme.lower() != "basic" or not hmac.compare_digest(password.encode(),
                                                                expected.encode()):
            raise Refused("wrong or missing HTTP Basic credentials", status=401)
        event = _json(body)
        if not isinstance(event, dict):
            raise Refused("not a Postmark event", status=400)
        return postmark_reports(event, self.settings)

    # Mailgun
    async def mailgun(self, request: Request) -> Response:
        if not self.secret(self.settings.bounces.mailgun_signing_key_env):
            return PlainTextResponse("not configured", status_code=404)
        return await self.handle(request, self.verify_mailgun)

    def verify_mailgun(self, body: bytes, request: Request) -> list[Report]:
        payload = _json(body)
        signature = payload.get("signature") if isinstance(payload, dict) else None
        if not isinstance(signature, dict):
            raise Refused("no Mailgun signature", status=401)
        timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
        key = self.secret(self.settings.bounces.mailgun_signing_key_env).encode()
        expected = hmac.new(key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature.get("signature", ""))):
            raise Refused("the Mailgun signature does not match", status=401)
        try:
            moment = datetime.fromtimestamp(int(timestamp), UTC)
        except (ValueError, OverflowError):
            raise Refused("bad Mailgun timestamp", status=400) from None
        _fresh(moment, self.clock(), self.settings.bounces.webhook_max_age_seconds)
        return mailgun_reports(payload, self.settings)

    # SendGrid
    async def sendgrid(self, request: Request) -> Response:
        if not self.secret(self.settings.bounces.sendgrid_public_key_env):
            return PlainTextResponse("not configured", status_code=404)
        return await self.handle(request, self.verify_sendgrid)

    def verify_sendgrid(self, body: bytes, request: Request) -> list[Report]:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp", "")
        signature = request.headers.get("x-twilio-email-event-webhook-signature", "")
        try:
            key = serialization.load_der_public_key(base64.b64decode(
                self.secret(self.settings.bounces.sendgrid_public_key_env)))
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("unreadable SendGrid key or signature", status=401) from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Refused("the SendGrid verification key is not an ECDSA key", status=401)
        try:
            key.verify(raw_signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Refused("the SendGrid signature does not match", status=401) from None
        try:
            moment = datetime.fromtimestamp(int(timestamp), UTC)
        except (ValueError, OverflowError):
            raise Refused("bad SendGrid timestamp", status=400) from None
        _fresh(moment, self.clock(), self.settings.bounces.webhook_max_age_seconds)
        events = _json(body)
        if not isinstance(events, list):
            raise Refused("not a list of SendGrid events", status=400)
        return sendgrid_reports(events, self.settings)
