"""What is new for each newsletter -> editions, rendered once, with their deliveries queued.

A newsletter remembers the entries it has announced. Its first run is a
*baseline*: every entry published then is recorded and nothing is mailed.
After that, each run looks for:

- **instant** editions: every published entry that is not in the baseline and
  has no instant edition yet becomes one (``period_key`` ``post:<entry id>``),
  queued for the subscribers whose subscription is ``instant``;
- a **digest** edition: when the newsletter's schedule (a cron expression in
  ``site.timezone``) has a slot at or before ``now`` that has no edition yet,
  the entries not yet announced go out to the ``digest`` subscribers. A slot
  with nothing new is recorded as ``empty``; a slot noticed later than
  ``scheduler.misfire_grace_hours`` is recorded as ``missed`` and its entries
  wait for the next one.

An edition, the announcement of its entries and its deliveries are written in
one transaction, and ``(newsletter, period_key)`` is unique: two runs at the
same moment make one edition, and a crash leaves either all of it or nothing.

Subscribers who chose categories get a variant of the digest that holds only
the entries in their categories (one variant per distinct set of entries,
rendered once), and nothing when no entry is theirs. Recipients are chosen
with ``INSERT … SELECT`` on the distinct category filters, so no subscriber
list is ever held in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from feedpub import lint, mathml, writer
from feedpub.catalog import Catalog, EntryRef, load_catalog
from feedpub.config import NewsletterConfig, Settings
from feedpub.entries import Entry, category_slug
from feedpub.errors import ContentError
from feedpub.mail.transports import Transport
from feedpub.schedules import Schedule as Schedule
from feedpub.schedules import parse_schedule as parse_schedule
from feedpub.sender import Clock, Progress, SendOptions, SendReport, send_queued
from feedpub.slots import newsletter_schedule
from feedpub.store.editions import (
    BASELINE_KEY,
    DIGEST_PREFIX,
    INSTANT_PREFIX,
    EditionStatus,
    announce,
    announced_ids,
    category_filters,
    count_recipients,
    find_edition,
    insert_edition,
    period_keys,
    queue_deliveries,
)
from feedpub.store.engine import Store
from feedpub.store.schema import Mode

if TYPE_CHECKING:
    from feedpub.mail.render import RenderedEdition

_MAX_KEY = 200


# --- keys --------------------------------------------------------------------------


def digest_key(slot: datetime) -> str:
    return DIGEST_PREFIX + slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def instant_key(entry_id: str) -> str:
    key = INSTANT_PREFIX + entry_id
    if len(key) <= _MAX_KEY:
        return key
    return INSTANT_PREFIX + "sha256:" + hashlib.sha256(entry_id.encode()).hexdigest()


def _digest_web_id(slot: datetime, tz: ZoneInfo) -> str:
    local = slot.astimezone(tz)
    return local.strftime("%Y-%m-%d-%H%M") + ("b" if local.fold else "")


def _post_web_id(entry: Entry) -> str:
    """The web page of a post's edition: named after the entry's id, which is unique
    (two posts may share a slug in different years); the slug only makes it readable."""
    id_hash = hashlib.sha1(entry.id.encode()).hexdigest()
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,79}", entry.slug):
        return f"post-{entry.slug}-{id_hash[:8]}"
    return "post-" + id_hash[:12]


def _short_hash(values: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(sorted(values)).encode()).hexdigest()[:10]


# --- choosing entries and recipients -------------------------------------------------


def _slugs(names: Iterable[str]) -> frozenset[str]:
    return frozenset(category_slug(name) for name in names if name.strip())


def in_categories(entry_categories: Iterable[str], wanted: Iterable[str]) -> bool:
    """Whether an entry belongs to a filter; an empty filter takes everything.

    Names compare as slugs, so ``Machine Learning`` matches ``machine-learning``.
    """
    wanted_slugs = _slugs(wanted)
    return not wanted_slugs or bool(wanted_slugs & _slugs(entry_categories))


def _filter_categories(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except json.JSONDecodeError:
        return ()
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


# --- what a run does ------------------------------------------------------------------

Kind = Literal["baseline", "digest", "post", "empty", "missed"]


@dataclass(frozen=True)
class EditionSummary:
    """An edition a run made (or, in a dry run, would make)."""

    newsletter: str
    kind: Kind
    period_key: str
    subject: str = ""
    entry_titles: tuple[str, ...] = ()
    recipients: int = 0
    edition_ids: tuple[int, ...] = ()
    """The rows written: the edition and its category variants; empty in a dry run."""
    web_paths: tuple[str, ...] = ()
    variants: int = 0
    """Category variants of a digest besides the full edition."""
    baselined: int = 0
    """For a baseline: how many entries it recorded."""


@dataclass(frozen=True)
class Refusal:
    """An entry held back because ``feedpub check`` finds errors in it."""

    newsletter: str
    entry_id: str
    source: str
    findings: tuple[lint.Finding, ...]


@dataclass(frozen=True)
class DigestReport:
    editions: tuple[EditionSummary, ...] = ()
    refused: tuple[Refusal, ...] = ()
    content_errors: tuple[ContentError, ...] = ()
    dry_run: bool = False

    @property
    def noteworthy(self) -> tuple[EditionSummary, ...]:
        """Every edition but the instant ones that nobody receives (each new post gets
        one): what the CLI prints and the scheduler logs."""
        return tuple(e for e in self.editions if e.kind != "post" or e.recipients)

    @property
    def made(self) -> tuple[EditionSummary, ...]:
        """Digests, and instant posts that someone receives (every new post gets an
        instant edition, so that a later instant subscriber never gets old posts)."""
        return tuple(
            e for e in self.editions if e.kind == "digest" or (e.kind == "post" and e.recipients)
        )


@dataclass
class _Run:
    settings: Settings
    store: Store
    now: datetime
    catalog: Catalog
    dry_run: bool
    force: bool
    editions: list[EditionSummary] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def blocked(self, newsletter: str, entries: Sequence[Entry]) -> set[str]:
        """Ids of entries with lint errors (none with ``force``); each is reported once."""
        if self.force or not entries:
            return set()
        report = self.catalog.lint(sources={entry.source for entry in entries})
        blocked: set[str] = set()
        for entry in entries:
            findings = lint.errors_for([entry], report)
            if findings:
                blocked.add(entry.id)
                if not any(r.entry_id == entry.id and r.newsletter == newsletter
                           for r in self.refused):
                    self.refused.append(
                        Refusal(newsletter, entry.id, entry.source, tuple(findings))
                    )
        return blocked

    def write_web(self, web_path: str | None, web_html: str, entries: Sequence[Entry]) -> None:
        """The edition's web page, and the images of the formulas its emails show."""
        public = self.settings.public_dir
        images = mathml.math_images(entries, exists=lambda relpath: (public / relpath).exists())
        page = [] if web_path is None else [
            writer.Output(unquote(web_path), web_html.encode("utf-8"))
        ]
        if images or page:
            writer.write_outputs(public, [*images, *page])


def make_editions(
    settings: Settings,
    store: Store,
    now: datetime,
    *,
    newsletter: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    catalog: Catalog | None = None,
) -> DigestReport:
    """Make every edition that is due at ``now`` (of one newsletter, if named).

    With ``dry_run`` nothing is written (no baseline either): the report says
    what would be made and for how many recipients. Entries with ``feedpub
    check`` errors are held back (reported in ``refused``) unless ``force``.
    ``catalog`` is the site as already scanned for ``now`` (else it is scanned here).
    """
    chosen = [settings.newsletter(newsletter)] if newsletter else list(settings.newsletters)
    schedules = {n.name: newsletter_schedule(settings, n) for n in chosen}
    if catalog is None:
        catalog = load_catalog(settings, now)
    run = _Run(settings, store, now, catalog, dry_run, force)
    if not dry_run:
        _remake_missing_pages(run, [config.name for config in chosen])
    for config in chosen:
        _newsletter_run(run, config, schedules[config.name])
    if settings.pages.enabled and any(edition.web_paths for edition in run.editions):
        _publish_pages(settings, catalog)
    return DigestReport(
        editions=tuple(run.editions),
        refused=tuple(run.refused),
        content_errors=tuple(catalog.errors),
        dry_run=dry_run,
    )


def _remake_missing_pages(run: _Run, newsletters: Sequence[str]) -> None:
    """Write again the "view in browser" page of every ready edition whose page is not in
    ``public/`` (a write that failed after its edition was committed, or a ``public/``
    made anew), from the entries it holds that are still published."""
    import sqlalchemy as sa

    from feedpub.mail.render import render_edition
    from feedpub.store.schema import editions

    public = run.settings.public_dir
    with run.store.read() as conn:
        rows = conn.execute(
            sa.select(editions.c.newsletter, editions.c.kind, editions.c.created_at,
                      editions.c.entry_ids, editions.c.web_path)
            .where(editions.c.status == EditionStatus.READY.value,
                   editions.c.web_path.is_not(None),
                   editions.c.newsletter.in_(list(newsletters)))
            .order_by(editions.c.id)
        ).all()
    missing = [row for row in rows if not (public / unquote(row.web_path)).is_file()]
    if not missing:
        return
    by_id = {ref.id: ref for ref in run.catalog.published}
    for row in missing:
        refs = [by_id[i] for i in json.loads(row.entry_ids or "[]") if i in by_id]
        loaded = run.catalog.load(refs)
        if not loaded:
            continue  # its posts are gone: there is nothing to show
        web_path = unquote(row.web_path)
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        rendered = render_edition(
            loaded, settings=run.settings, newsletter=run.settings.newsletter(row.newsletter),
            kind="post" if row.kind == Mode.INSTANT.value else "digest",
            edition_id=web_path.rpartition("/")[2].removesuffix(".html"), date=created,
        )
        run.write_web(row.web_path, rendered.web_html, loaded)


def _publish_pages(settings: Settings, catalog: Catalog) -> None:
    """Bring the site's pages up to date before any mail links to them: the pages of the
    posts just mailed, and the newsletter pages that list the new editions."""
    from feedpub.build import stored_editions, write_pages

    write_pages(catalog, settings, editions=stored_editions(settings))


def pending_entries(
    catalog: Catalog, store: Store, newsletter: NewsletterConfig | str | None
) -> list[Entry]:
    """The entries the newsletter's next digest would hold if it were made at the
    catalog's ``now``, newest first; empty before its baseline (the first run mails
    nothing)."""
    config = newsletter if isinstance(newsletter, NewsletterConfig) else \
        catalog.settings.newsletter(newsletter)
    with store.read() as conn:
        if find_edition(conn, config.name, BASELINE_KEY) is None:
            return []
        announced = announced_ids(conn, config.name)
    refs = [
        ref for ref in catalog.published
        if ref.id not in announced and in_categories(ref.categories, config.categories)
    ]
    return catalog.load(refs)


def _newsletter_run(run: _Run, config: NewsletterConfig, schedule: Schedule) -> None:
    with run.store.read() as conn:
        baseline = find_edition(conn, config.name, BASELINE_KEY)
        if baseline is not None:
            announced = announced_ids(conn, config.name)
            baseline_ids = announced_ids(conn, config.name, edition_id=baseline.id)
            instants = period_keys(conn, config.name, INSTANT_PREFIX)
    if baseline is None:
        _baseline(run, config)
        return
    published = run.catalog.published
    for ref in reversed(published):  # oldest first: instant mail in publication order
        if (
            ref.id not in baseline_ids
            and instant_key(ref.id) not in instants
            and in_categories(ref.categories, config.categories)
        ):
            _instant(run, config, ref)
    slot = schedule.last_slot(run.now)
    if slot is None or slot <= baseline.created_at:
        return
    key = digest_key(slot)
    with run.store.read() as conn:
        if find_edition(conn, config.name, key) is not None:
            return
    new = [ref for ref in published if ref.id not in announced]
    _digest(run, config, slot, key, new)


def _baseline(run: _Run, config: NewsletterConfig) -> None:
    ids = [ref.id for ref in run.catalog.published]
    summary = EditionSummary(config.name, "baseline", BASELINE_KEY, baselined=len(ids))
    if run.dry_run:
        run.editions.append(summary)
        return
    with run.store.write() as conn:
        edition_id = insert_edition(
            conn, newsletter=config.name, kind=Mode.DIGEST, period_key=BASELINE_KEY,
            now=run.now, status=EditionStatus.BASELINE,
        )
        if edition_id is None:
            return  # another run made the baseline a moment ago
        announce(conn, config.name, ids, edition_id=edition_id, now=run.now)
    run.editions.append(
        EditionSummary(config.name, "baseline", BASELINE_KEY, edition_ids=(edition_id,),
                       baselined=len(ids))
    )


def _instant(run: _Run, config: NewsletterConfig, ref: EntryRef) -> None:
    from feedpub.mail.render import render_edition

    loaded = run.catalog.load([ref])
    if not loaded:
        return  # it cannot be converted: the catalog reports it among its errors
    (entry,) = loaded
    if run.blocked(config.name, [entry]):
        return
    key = instant_key(entry.id)
    with run.store.read() as conn:
        filters = [
            text for text in category_filters(conn, config.name, Mode.INSTANT)
            if in_categories(entry.categories, _filter_categories(text))
        ]
        if run.dry_run:
            recipients = count_recipients(conn, config.name, Mode.INSTANT, filters)
            run.editions.append(
                EditionSummary(config.name, "post", key, entry_titles=(entry.title,),
                               recipients=recipients)
            )
            return
    rendered = render_edition(
        [entry], settings=run.settings, newsletter=config, kind="post",
        edition_id=_post_web_id(entry), date=run.now,
    )
    # The page first: a mail must never link to a page that a failed write left unmade.
    run.write_web(rendered.web_path, rendered.web_html, [entry])
    with run.store.write() as conn:
        edition_id = insert_edition(
            conn, newsletter=config.name, kind=Mode.INSTANT, period_key=key, now=run.now,
            status=EditionStatus.READY, subject=rendered.subject, html=rendered.html,
            text=rendered.text, entry_ids=[entry.id], web_path=rendered.web_path,
        )
        if edition_id is None:
            return
        recipients = queue_deliveries(
            conn, edition_id, newsletter=config.name, mode=Mode.INSTANT, filters=filters,
            now=run.now,
        )
    run.editions.append(
        EditionSummary(
            config.name, "post", key, subject=rendered.subject, entry_titles=(entry.title,),
            recipients=recipients, edition_ids=(edition_id,),
            web_paths=(rendered.web_path,) if rendered.web_path else (),
        )
    )


def _digest(
    run: _Run,
    config: NewsletterConfig,
    slot: datetime,
    key: str,
    new: list[EntryRef],
) -> None:
    grace = timedelta(hours=run.settings.scheduler.misfire_grace_hours)
    if run.now - slot > grace:
        _record_slot(run, config, key, EditionStatus.MISSED, announce_ids=[])
        return
    wanted = [ref for ref in new if in_categories(ref.categories, config.categories)]
    others = [ref.id for ref in new if ref not in wanted]
    entries = run.catalog.load(wanted)
    blocked = run.blocked(config.name, entries)
    entries = [entry for entry in entries if entry.id not in blocked]
    if not entries:
        _record_slot(run, config, key, EditionStatus.EMPTY, announce_ids=others)
        return
    groups = _category_groups(run, config, entries)
    if run.dry_run:
        with run.store.read() as conn:
            recipients = sum(
                count_recipients(conn, config.name, Mode.DIGEST, texts)
                for texts in groups.values()
            )
        run.editions.append(
            EditionSummary(
                config.name, "digest", key, entry_titles=tuple(e.title for e in entries),
                recipients=recipients, variants=len(groups) - 1,
            )
        )
        return
    variants = _render_variants(run, config, slot, key, entries, groups)
    _queue_digest(run, config, key, entries, others, variants)


def _category_groups(
    run: _Run, config: NewsletterConfig, entries: list[Entry]
) -> dict[tuple[str, ...], list[str]]:
    """The entries' ids each distinct category filter picks -> those filters; the full
    edition (every entry) is always one of them. Subscribers whose categories pick the
    same entries share one rendering."""
    with run.store.read() as conn:
        filter_texts = category_filters(conn, config.name, Mode.DIGEST)
    groups: dict[tuple[str, ...], list[str]] = {}
    for text in filter_texts:
        chosen = tuple(
            e.id for e in entries if in_categories(e.categories, _filter_categories(text))
        )
        if chosen:
            groups.setdefault(chosen, []).append(text)
    groups.setdefault(tuple(e.id for e in entries), [])
    return groups


@dataclass(frozen=True)
class _Variant:
    period_key: str
    entry_ids: tuple[str, ...]
    filters: list[str]
    rendered: RenderedEdition


def _render_variants(
    run: _Run, config: NewsletterConfig, slot: datetime, key: str, entries: list[Entry],
    groups: dict[tuple[str, ...], list[str]],
) -> list[_Variant]:
    """Each group rendered once; the full edition first, since it claims the slot."""
    from feedpub.mail.render import render_edition

    everything = tuple(e.id for e in entries)
    web_id = _digest_web_id(slot, run.settings.site.tz)
    by_id = {e.id: e for e in entries}
    variants = []
    for ids, texts in groups.items():
        full = ids == everything
        rendered = render_edition(
            [by_id[i] for i in ids], settings=run.settings, newsletter=config,
            kind="digest", edition_id=web_id if full else f"{web_id}-{_short_hash(ids)}",
            date=slot,
        )
        variants.append(
            _Variant(key if full else f"{key}/{_short_hash(ids)}", ids, texts, rendered)
        )
    variants.sort(key=lambda variant: variant.period_key != key)
    return variants


def _queue_digest(
    run: _Run, config: NewsletterConfig, key: str, entries: list[Entry], others: list[str],
    variants: list[_Variant],
) -> None:
    """Write the editions' web pages; then the editions, announce their entries and queue
    their deliveries in one transaction (a page that cannot be written stops the edition,
    so no mail ever links to a missing page; the next run tries again)."""
    for variant in variants:
        run.write_web(variant.rendered.web_path, variant.rendered.web_html, entries)
    made: list[int] = []
    recipients = 0
    with run.store.write() as conn:
        for variant in variants:
            rendered = variant.rendered
            edition_id = insert_edition(
                conn, newsletter=config.name, kind=Mode.DIGEST,
                period_key=variant.period_key, now=run.now, status=EditionStatus.READY,
                subject=rendered.subject, html=rendered.html, text=rendered.text,
                entry_ids=variant.entry_ids, web_path=rendered.web_path,
            )
            if edition_id is None:
                if variant.period_key == key:
                    return  # another run made this slot's edition a moment ago
                continue
            made.append(edition_id)
            recipients += queue_deliveries(
                conn, edition_id, newsletter=config.name, mode=Mode.DIGEST,
                filters=variant.filters, now=run.now,
            )
        announce(conn, config.name, [e.id for e in entries], edition_id=made[0], now=run.now)
        announce(conn, config.name, others, edition_id=None, now=run.now)
    main = variants[0].rendered
    run.editions.append(
        EditionSummary(
            config.name, "digest", key, subject=main.subject,
            entry_titles=tuple(e.title for e in entries), recipients=recipients,
            edition_ids=tuple(made),
            web_paths=tuple(v.rendered.web_path for v in variants if v.rendered.web_path),
            variants=len(variants) - 1,
        )
    )


def _record_slot(
    run: _Run,
    config: NewsletterConfig,
    key: str,
    status: EditionStatus,
    *,
    announce_ids: Sequence[str],
) -> None:
    kind: Kind = "missed" if status == EditionStatus.MISSED else "empty"
    if run.dry_run:
        run.editions.append(EditionSummary(config.name, kind, key))
        return
    with run.store.write() as conn:
        edition_id = insert_edition(
            conn, newsletter=config.name, kind=Mode.DIGEST, period_key=key, now=run.now,
            status=status,
        )
        if edition_id is None:
            return
        announce(conn, config.name, announce_ids, edition_id=None, now=run.now)
    run.editions.append(EditionSummary(config.name, kind, key, edition_ids=(edition_id,)))


@dataclass(frozen=True)
class RunReport:
    digest: DigestReport
    send: SendReport | None
    """None when nothing was sent in this run (queue only)."""


def run_once(
    settings: Settings,
    store: Store,
    *,
    clock: Clock,
    transport: Transport | None,
    stop: threading.Event | None = None,
    newsletter: str | None = None,
    force: bool = False,
    options: SendOptions | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """What ``feedpub digest send`` and every scheduler job do: make the editions due at
    ``clock()`` (of one newsletter, if named), then send every delivery that is due
    (none when ``transport`` is None, as ``--queue-only``)."""
    digest = make_editions(settings, store, clock(), newsletter=newsletter, force=force)
    if transport is None:
        return RunReport(digest, None)
    sent = send_queued(
        settings, store, transport, clock=clock, stop=stop, newsletter=newsletter,
        options=options or SendOptions(), progress=progress,
    )
    return RunReport(digest, sent)
