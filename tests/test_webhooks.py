"""Relay webhooks: a request signed with the provider's key (made by the test) changes the
right subscriber; a forged, stale or replayed one is refused or changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from feedpub.store import Status, find_subscriber, open_store
from feedpub.web import webhooks
from feedpub.web.app import create_app
from feedpub.web.webhooks import sns_string_to_sign
from tests.conftest import BASIC_CONFIG, SiteFactory
from tests.test_bounces import NOW, send_edition

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; httpx is what the project installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
MAILGUN_KEY = "key-mailgun-test"
POSTMARK_TOKEN = "postmark-test-token"


@dataclass
class Hooks:
    client: TestClient
    url: str
    fetched: list[str]
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    def status(self, address: str) -> Status:
        with open_store(self.url) as store, store.read() as conn:
            found = find_subscriber(conn, address)
        assert found is not None
        return found.status


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def hooks(make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    public = ec_key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    site = make_site(config=BASIC_CONFIG + f'\n[bounces]\nses_topic_arns = ["{TOPIC}"]\n')
    url = f"sqlite:///{site / 'feedpub.db'}"
    monkeypatch.setenv("FEEDPUB_POSTMARK_WEBHOOK_TOKEN", POSTMARK_TOKEN)
    monkeypatch.setenv("FEEDPUB_MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("FEEDPUB_SENDGRID_PUBLIC_KEY", base64.b64encode(public).decode())
    fetched: list[str] = []
    certificate = _certificate(rsa_key)

    def fetch(address: str) -> bytes:
        fetched.append(address)
        return certificate if address == CERT_URL else b"confirmed"

    monkeypatch.setattr(webhooks, "https_get", fetch)
    webhooks._cached_certificate.cache_clear()
    with open_store(url) as store:
        send_edition(store, "bounced@example.com", "complainer@example.com",
                     "full@example.com", "fine@example.com")
    settings = make_site.settings({"FEEDPUB_SECRET": "test-secret", "FEEDPUB_DATABASE_URL": url})
    with TestClient(create_app(settings, now=lambda: NOW)) as client:
        yield Hooks(client, url, fetched, rsa_key, ec_key)


# --- SES via SNS ---------------------------------------------------------------------


def sns(hooks: Hooks, kind: str, payload: dict[str, Any], *, message_id: str = "m-1",
        at: datetime = NOW, version: str = "1") -> dict[str, Any]:
    message = {"Type": kind, "MessageId": message_id, "TopicArn": TOPIC,
               "Message": json.dumps(payload), "Timestamp": at.isoformat().replace("+00:00", "Z"),
               "SignatureVersion": version, "SigningCertURL": CERT_URL}
    if kind == "SubscriptionConfirmation":
        message["Token"] = "tok"
        message["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = hooks.rsa_key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


SES_BOUNCE = {"notificationType": "Bounce", "mail": {"source": "news@example.com"},
              "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                         "bouncedRecipients": [{"emailAddress": "bounced@example.com",
                                                "status": "5.1.1",
                                                "diagnosticCode": "smtp; 550 5.1.1 unknown"}]}}


def test_ses_confirms_its_subscription_and_a_signed_bounce_marks_the_subscriber(
    hooks: Hooks,
) -> None:
    confirm = sns(hooks, "SubscriptionConfirmation", {})
    assert hooks.client.post("/webhooks/ses", json=confirm).status_code == 200
    assert hooks.fetched[-1].startswith("https://sns.eu-west-1.amazonaws.com/?Action=Confirm")
    response = hooks.client.post("/webhooks/ses", json=sns(hooks, "Notification", SES_BOUNCE,
                                                            version="2"))
    assert response.status_code == 200
    assert hooks.status("bounced@example.com") == Status.BOUNCED


def test_ses_refuses_forged_foreign_and_stale_messages(hooks: Hooks) -> None:
    forged = sns(hooks, "Notification", SES_BOUNCE)
    forged["Message"] = forged["Message"].replace("bounced@", "fine@")
    assert hooks.client.post("/webhooks/ses", json=forged).status_code == 403
    elsewhere = sns(hooks, "Notification", SES_BOUNCE)
    elsewhere["SigningCertURL"] = "https://attacker.example/sns.amazonaws.com.pem"
    assert hooks.client.post("/webhooks/ses", json=elsewhere).status_code == 403
    other_topic = sns(hooks, "Notification", SES_BOUNCE)
    other_topic["TopicArn"] = "arn:aws:sns:eu-west-1:999:other"
    assert hooks.client.post("/webhooks/ses", json=other_topic).status_code == 403
    stale = sns(hooks, "Notification", SES_BOUNCE, at=NOW - timedelta(hours=2))
    assert hooks.client.post("/webhooks/ses", json=stale).status_code == 403
    assert "https://attacker.example/sns.amazonaws.com.pem" not in hooks.fetched
    assert hooks.status("bounced@example.com") == Status.ACTIVE
    assert hooks.status("fine@example.com") == Status.ACTIVE


def test_ses_complaint_unsubscribes_once_even_when_replayed(hooks: Hooks) -> None:
    complaint = {"notificationType": "Complaint", "mail": {"source": "news@example.com"},
                 "complaint": {"complaintFeedbackType": "abuse",
                               "complainedRecipients": [{"emailAddress":
                                                         "complainer@example.com"}]}}
    message = sns(hooks, "Notification", complaint, message_id="c-1")
    assert hooks.client.post("/webhooks/ses", json=message).status_code == 200
    assert hooks.status("complainer@example.com") == Status.UNSUBSCRIBED
    with open_store(hooks.url) as store, store.write() as conn:  # they come back...
        found = find_subscriber(conn, "complainer@example.com")
        assert found is not None
        from feedpub.store import change_status
        from feedpub.store.schema import Source
        change_status(conn, found.id, Status.ACTIVE, now=NOW, source=Source.CLI,
                      resubscribe=True)
    assert hooks.client.post("/webhooks/ses", json=message).status_code == 200  # ...a replay
    assert hooks.status("complainer@example.com") == Status.ACTIVE


# --- Postmark --------------------------------------------------------------------------

POSTMARK_BOUNCE = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce",
                   "TypeCode": 1, "Email": "bounced@example.com",
                   "Details": "smtp;550 5.1.1 The email account does not exist",
                   "BouncedAt": "2026-03-04T08:59:00Z"}


def test_postmark_needs_its_basic_credentials(hooks: Hooks) -> None:
    wrong = hooks.client.post("/webhooks/postmark", json=POSTMARK_BOUNCE,
                              auth=("postmark", "guess"))
    assert wrong.status_code == 401
    assert hooks.client.post("/webhooks/postmark", json=POSTMARK_BOUNCE).status_code == 401
    assert hooks.status("bounced@example.com") == Status.ACTIVE
    right = hooks.client.post("/webhooks/postmark", json=POSTMARK_BOUNCE,
                              auth=("postmark", POSTMARK_TOKEN))
    assert right.status_code == 200
    assert hooks.status("bounced@example.com") == Status.BOUNCED


def test_postmark_soft_bounces_and_auto_replies_do_not_bounce_anyone(hooks: Hooks) -> None:
    for index, kind in enumerate(("SoftBounce", "AutoResponder", "OutOfOffice")):
        event = {**POSTMARK_BOUNCE, "ID": index, "Type": kind, "Email": "full@example.com"}
        assert hooks.client.post("/webhooks/postmark", json=event,
                                 auth=("x", POSTMARK_TOKEN)).status_code == 200
    assert hooks.status("full@example.com") == Status.ACTIVE


# --- Mailgun ---------------------------------------------------------------------------


def mailgun(event: dict[str, Any], *, token: str = "t" * 50, at: datetime = NOW,
            key: str = MAILGUN_KEY) -> dict[str, Any]:
    timestamp = str(int(at.timestamp()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event}


MAILGUN_FAILED = {"event": "failed", "severity": "permanent", "id": "mg-1",
                  "recipient": "bounced@example.com", "timestamp": NOW.timestamp(),
                  "delivery-status": {"code": 550, "message": "5.1.1 No such user"}}


def test_mailgun_checks_its_hmac_and_its_timestamp(hooks: Hooks) -> None:
    forged = mailgun(MAILGUN_FAILED, key="not-the-key")
    assert hooks.client.post("/webhooks/mailgun", json=forged).status_code == 401
    stale = mailgun(MAILGUN_FAILED, at=NOW - timedelta(minutes=10))
    assert hooks.client.post("/webhooks/mailgun", json=stale).status_code == 403
    assert hooks.status("bounced@example.com") == Status.ACTIVE
    signed = mailgun(MAILGUN_FAILED)
    assert hooks.client.post("/webhooks/mailgun", json=signed).status_code == 200
    assert hooks.status("bounced@example.com") == Status.BOUNCED


def test_a_replayed_mailgun_complaint_is_applied_once(hooks: Hooks) -> None:
    event = {"event": "complained", "id": "mg-2", "recipient": "complainer@example.com",
             "timestamp": NOW.timestamp()}
    signed = mailgun(event, token="u" * 50)
    for _ in range(2):
        assert hooks.client.post("/webhooks/mailgun", json=signed).status_code == 200
    with open_store(hooks.url) as store, store.read() as conn:
        from feedpub.store.events import recent_events
        assert [e.kind.value for e in recent_events(conn)] == ["complaint"]


# --- SendGrid --------------------------------------------------------------------------


def sendgrid(hooks: Hooks, events: list[dict[str, Any]], at: datetime = NOW
             ) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    timestamp = str(int(at.timestamp()))
    signature = hooks.ec_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                  "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                  "Content-Type": "application/json"}


SENDGRID_EVENTS = [
    {"email": "bounced@example.com", "event": "bounce", "type": "bounce", "status": "5.1.1",
     "reason": "550 5.1.1 user unknown", "sg_event_id": "sg-1", "timestamp": 1772614740},
    {"email": "complainer@example.com", "event": "spamreport", "sg_event_id": "sg-2",
     "timestamp": 1772614740},
    {"email": "fine@example.com", "event": "delivered", "sg_event_id": "sg-3",
     "timestamp": 1772614740},
]


def test_sendgrid_checks_its_ecdsa_signature(hooks: Hooks) -> None:
    body, headers = sendgrid(hooks, SENDGRID_EVENTS)
    tampered = body.replace(b"bounced@", b"fine0000@")
    assert hooks.client.post("/webhooks/sendgrid", content=tampered,
                             headers=headers).status_code == 401
    old_body, old_headers = sendgrid(hooks, SENDGRID_EVENTS, at=NOW - timedelta(hours=1))
    assert hooks.client.post("/webhooks/sendgrid", content=old_body,
                             headers=old_headers).status_code == 403
    assert hooks.status("bounced@example.com") == Status.ACTIVE
    assert hooks.client.post("/webhooks/sendgrid", content=body,
                             headers=headers).status_code == 200
    assert hooks.status("bounced@example.com") == Status.BOUNCED
    assert hooks.status("complainer@example.com") == Status.UNSUBSCRIBED
    assert hooks.status("fine@example.com") == Status.ACTIVE


def test_a_provider_without_a_secret_has_no_endpoint(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("FEEDPUB_POSTMARK_WEBHOOK_TOKEN", "FEEDPUB_MAILGUN_SIGNING_KEY",
                     "FEEDPUB_SENDGRID_PUBLIC_KEY"):
        monkeypatch.delenv(variable, raising=False)
    site = make_site()
    settings = make_site.settings({"FEEDPUB_SECRET": "s",
                                   "FEEDPUB_DATABASE_URL": f"sqlite:///{site / 'f.db'}"})
    with TestClient(create_app(settings, now=lambda: NOW)) as client:
        for provider in ("ses", "postmark", "mailgun", "sendgrid"):
            assert client.post(f"/webhooks/{provider}", json={}).status_code == 404
