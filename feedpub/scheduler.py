"""``feedpub schedule``: APScheduler 3 jobs that run exactly what ``feedpub digest send`` runs.

Jobs, in one :class:`Daemon`:

- ``digest:<name>``, one per newsletter, fires at the slots of its
  ``schedule`` (cron, in ``site.timezone``) and makes that newsletter's
  editions, then sends them;
- ``tick`` runs once at start and then every ``scheduler.tick_seconds``: it
  makes whatever is due for every newsletter (instant posts, and a digest
  whose slot passed while the daemon was down) and sends every delivery that
  is due, retries included;
- ``bounces`` runs ``feedpub bounces fetch`` every ``bounces.fetch_minutes``
  when a bounce mailbox is set (``bounces.imap_host``), one run at a time.

The first two call :func:`run_once`, the composition of :func:`feedpub.digest.make_editions`
and :func:`feedpub.sender.send_queued` that ``digest send`` performs.

Lateness is judged in one place, by ``make_editions`` against the slot: a
digest noticed within ``scheduler.misfire_grace_hours`` of its slot is made
and sent once, a later one is recorded as ``missed`` and reported. So
APScheduler must never drop a late run itself (its default grace of 1 s
does): jobs run however late (``misfire_grace_time=None``), and once
(``coalesce=True``). A restart needs no job store: the tick at start catches up.

Uniqueness lives in the store (one edition per newsletter and slot, each
delivery claimed by one sender), so daemons on several machines and cron
``digest send`` runs can share one database.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from feedpub.config import Settings
from feedpub.digest import RunReport, run_once
from feedpub.errors import FeedpubError
from feedpub.mail.transports import open_transport
from feedpub.schedules import utc_iso
from feedpub.sender import SendOptions
from feedpub.slots import slot_trigger
from feedpub.store.engine import Store

Clock = Callable[[], datetime]
LogFormat = Literal["plain", "json"]
TICK_JOB = "tick"
BOUNCES_JOB = "bounces"


def utc_now() -> datetime:
    return datetime.now(UTC)


def digest_job_id(newsletter: str) -> str:
    return f"digest:{newsletter}"


# --- when a newsletter's job fires ------------------------------------------------------


# --- one run ----------------------------------------------------------------------------




# --- what a run writes in the log ---------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """One run of a job, as the log shows it."""

    job: str
    started_at: datetime
    finished_at: datetime
    report: RunReport | None = None
    """None when the run failed before it made anything (see ``error``)."""
    sending_elsewhere: bool = False
    """Another run in this process was sending: this one only made editions."""
    error: str | None = None

    @property
    def idle(self) -> bool:
        """Nothing was made, sent or refused, and nothing went wrong."""
        if self.error is not None:
            return False
        if self.report is None:
            return True
        digest, sent = self.report.digest, self.report.send
        return (
            not digest.noteworthy and not digest.refused and not digest.content_errors
            and (sent is None or (
                sent.sent == sent.retrying == sent.failed == sent.skipped == sent.returned == 0
                and sent.outage is None
            ))
        )

    @property
    def level(self) -> Literal["info", "warning", "error"]:
        sent = self.report.send if self.report else None
        if self.error is not None or (sent is not None and not sent.ok):
            return "error"
        digest = self.report.digest if self.report else None
        if digest is not None and (
            digest.refused or digest.content_errors
            or any(e.kind == "missed" for e in digest.editions)
        ):
            return "warning"
        return "info"


def run_fields(record: RunRecord) -> dict[str, Any]:
    """The run as a JSON object: the shape of each ``--log-format json`` line."""
    digest = record.report.digest if record.report else None
    sent = record.report.send if record.report else None
    return {
        "time": utc_iso(record.finished_at),
        "level": record.level,
        "job": record.job,
        "started_at": utc_iso(record.started_at),
        "seconds": round((record.finished_at - record.started_at).total_seconds(), 3),
        "editions": [
            {"newsletter": e.newsletter, "kind": e.kind, "period_key": e.period_key,
             "entries": len(e.entry_titles), "recipients": e.recipients}
            for e in (digest.noteworthy if digest else ())
        ],
        "refused": [
            {"newsletter": r.newsletter, "source": r.source}
            for r in (digest.refused if digest else ())
        ],
        "unreadable_posts": len(digest.content_errors) if digest else 0,
        "sent": sent.sent if sent else 0,
        "retrying": sent.retrying if sent else 0,
        "failed": sent.failed if sent else 0,
        "skipped": sent.skipped if sent else 0,
        "bounced": sent.bounced if sent else 0,
        "left_queued": sent.returned if sent else 0,
        "outage": sent.outage if sent else None,
        "failures": [{"email": f.email, "reply": f.reply} for f in (sent.failures if sent else ())],
        "sending_elsewhere": record.sending_elsewhere,
        "error": record.error,
    }


def _describe_edition(fields: dict[str, Any], grace_hours: float) -> str:
    name, kind, key = fields["newsletter"], fields["kind"], fields["period_key"]
    if kind == "baseline":
        return f"{name}: first run, existing posts recorded, nothing mailed"
    if kind == "empty":
        return f"{name}: {key}: nothing new"
    if kind == "missed":
        return (f"{name}: {key} missed: noticed more than {grace_hours:g} h after its slot "
                "(scheduler.misfire_grace_hours); its posts wait for the next digest")
    return (f"{name}: {kind} {key} ({fields['entries']} "
            f"entr{'y' if fields['entries'] == 1 else 'ies'}) queued for {fields['recipients']}")


def format_run(record: RunRecord, log_format: LogFormat, *, grace_hours: float) -> str:
    """One line: JSON (:func:`run_fields`) or text for people."""
    fields = run_fields(record)
    if log_format == "json":
        return json.dumps(fields, ensure_ascii=False)
    parts = [_describe_edition(e, grace_hours) for e in fields["editions"]]
    parts += [f"{r['newsletter']}: held back {r['source']} (`feedpub check` finds errors)"
              for r in fields["refused"]]
    if fields["unreadable_posts"]:
        parts.append(f"{fields['unreadable_posts']} post(s) cannot be read")
    if record.report is not None and record.report.send is not None:
        parts.append(
            f"sent {fields['sent']}, retrying {fields['retrying']}, failed {fields['failed']}, "
            f"skipped {fields['skipped']}"
            + (f", {fields['left_queued']} left queued" if fields["left_queued"] else "")
        )
    elif record.sending_elsewhere:
        parts.append("sending is under way in another run")
    parts += [f"failed: {f['reply']}" for f in fields["failures"][:3]]
    if fields["outage"]:
        parts.append(f"mail server unreachable: {fields['outage']}")
    if fields["error"]:
        parts.append(f"error: {fields['error']}")
    text = "; ".join(parts) or "nothing to do"
    return f"{fields['time']} {fields['level'].upper()} {record.job}: {text}"


@dataclass
class LineLog:
    """Writes each run, and each event of the daemon, as one line, flushed at once."""

    stream: TextIO
    log_format: LogFormat = "plain"
    grace_hours: float = 6.0
    clock: Clock = utc_now
    log_idle: bool = False
    """Also log ticks that found nothing to do."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, record: RunRecord) -> None:
        if record.idle and not self.log_idle:
            return
        self._write(format_run(record, self.log_format, grace_hours=self.grace_hours))

    def event(self, level: str, message: str, **fields: Any) -> None:
        moment = utc_iso(self.clock())
        if self.log_format == "json":
            line = json.dumps({"time": moment, "level": level, "event": message, **fields},
                              ensure_ascii=False, default=str)
        else:
            details = "".join(f" {key}={value}" for key, value in fields.items())
            line = f"{moment} {level.upper()} {message}{details}"
        self._write(line)

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


# --- the daemon --------------------------------------------------------------------------


class Daemon:
    """The jobs of ``feedpub schedule`` on an APScheduler ``BackgroundScheduler``.

    ``clock`` is what every run takes as now (APScheduler fires on the real
    clock); ``stop`` ends the daemon: messages in flight are finished, the rest
    stay queued. Only one run at a time sends; the others make their editions
    and leave the sending to it.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = utc_now,
        stop: threading.Event | None = None,
        on_run: Callable[[RunRecord], None] | None = None,
        options: SendOptions | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.stop = stop or threading.Event()
        self.on_run = on_run or (lambda record: None)
        self.options = options
        self._sending = threading.Lock()
        triggers = {n.name: slot_trigger(settings, n) for n in settings.newsletters}
        self.scheduler = BackgroundScheduler(
            timezone=settings.site.tz,
            executors={"default": ThreadPoolExecutor(2 * len(triggers) + 2)},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": None,
                # A second instance only makes editions while the first one sends.
                "max_instances": 2,
            },
        )
        for name, trigger in triggers.items():
            self.scheduler.add_job(
                self._run, trigger, args=(digest_job_id(name), name), id=digest_job_id(name),
                name=f"digest of {name}",
            )
        self.scheduler.add_job(
            self._run, IntervalTrigger(seconds=settings.scheduler.tick_seconds,
                                       timezone=settings.site.tz),
            args=(TICK_JOB, None), id=TICK_JOB, name="instant posts, retries, catch-up",
            next_run_time=datetime.now(settings.site.tz),
        )
        if settings.bounces.imap_host:
            self.scheduler.add_job(
                self._fetch_bounces, IntervalTrigger(minutes=settings.bounces.fetch_minutes,
                                                     timezone=settings.site.tz),
                id=BOUNCES_JOB, name="bounces fetch", max_instances=1,
            )

    def start(self) -> None:
        self.settings.require_secret()  # every message carries signed unsubscribe links
        self.scheduler.start()

    def shutdown(self) -> None:
        """Stop: runs under way finish their messages in flight and return."""
        self.stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def run_until_stopped(
        self, on_started: Callable[[dict[str, datetime | None]], None] | None = None
    ) -> None:
        """Start, wait for ``stop``, shut down; ``on_started`` gets :meth:`next_run_times`."""
        self.start()
        try:
            if on_started is not None:
                on_started(self.next_run_times())
            while not self.stop.wait(1.0):
                pass
        finally:
            self.shutdown()

    def next_run_times(self) -> dict[str, datetime | None]:
        """Each job's next run, by job id (after :meth:`start`)."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def _run(self, job: str, newsletter: str | None) -> None:
        if self.stop.is_set():
            return
        started = self.clock()
        sending = self._sending.acquire(blocking=False)
        try:
            report = self._run_once(newsletter, sending)
        except (FeedpubError, sa.exc.SQLAlchemyError) as error:
            self.on_run(RunRecord(job, started, self.clock(), error=_one_line(error)))
            return
        finally:
            if sending:
                self._sending.release()
        self.on_run(RunRecord(job, started, self.clock(), report, sending_elsewhere=not sending))

    def _fetch_bounces(self) -> None:
        """``feedpub bounces fetch``; only a failure is logged (a run record with its error)."""
        from feedpub.bounce_mailbox import fetch_bounces

        started = self.clock()
        try:
            fetch_bounces(self.settings, self.store, clock=self.clock, env=os.environ)
        except (FeedpubError, sa.exc.SQLAlchemyError) as error:
            self.on_run(RunRecord(BOUNCES_JOB, started, self.clock(), error=_one_line(error)))

    def _run_once(self, newsletter: str | None, sending: bool) -> RunReport:
        if not sending:
            return run_once(self.settings, self.store, clock=self.clock, transport=None,
                            newsletter=newsletter)
        with open_transport(self.settings.mail.transport) as transport:
            return run_once(
                self.settings, self.store, clock=self.clock, transport=transport,
                stop=self.stop, newsletter=newsletter, options=self.options,
            )


def _one_line(error: BaseException) -> str:
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        text = str(error.orig)
    else:
        text = str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]
