"""How fast `feedpub digest send` mails a list, next to a bare smtplib loop; its memory; the
per-recipient cost; signed (DKIM) next to unsigned sending.

Everything runs on this machine: a local aiosmtpd server that accepts and
drops every message (in its own process), a site in a temporary folder,
SQLite and, with ``--postgres URL`` (default: ``$FEEDPUB_TEST_DATABASE_URL``),
PostgreSQL in a schema of its own that is dropped afterwards.

1. Rate, ``--rounds`` times, interleaved (the order rotates each round, so
   that a machine busy with other work slows all alike): ``feedpub digest
   send`` of N queued messages (its process start-up included), and a bare
   ``smtplib`` loop that sends the same message N times on reused connections
   to the same server, in a process of its own: on one connection, and on as
   many as ``--concurrency`` (a thread each). Wall time, CPU time of each client
   process, and CPU time of the server process.
2. Peak memory (``ru_maxrss``) of ``digest send`` at each of ``--memory-sizes``
   subscribers, on SQLite, with a one-post edition.
3. Per recipient: the sender's own composer (two signed links, placeholder
   substitution, MIME) and the template's ``build`` alone, without DKIM.
4. DKIM (fresh keys: RSA-2048 and Ed25519): ``digest send`` of the same
   ``--dkim-subscribers`` messages unsigned, signed with RSA, and signed with
   RSA and Ed25519 (two signatures), ``--dkim-rounds`` interleaved rounds on
   SQLite and on PostgreSQL; each signed rate as a ratio of the unsigned one of
   the same round. Then where a signature's time goes, per message: parsing,
   canonicalisation, hashing, the private-key operations, and dkimpy's own
   ``dkim.sign`` for comparison.

    python benchmarks/send.py
    python benchmarks/send.py --subscribers 10000 --rounds 3 --memory-sizes 10000,100000 \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/send.py --rounds 0 --memory-sizes '' --no-recipient-cost \\
        --dkim-subscribers 3000 --dkim-rounds 3       # DKIM alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SEND_AT = MONDAY_9 + timedelta(minutes=1)
BODY = "\n\n".join(
    f"Paragraph {n}: a digest reads like a letter, with [a link](https://example.com/{n}/) "
    "and some **bold** words, 中文 and émoji 🎉 to keep the encoder honest."
    for n in range(1, 25)
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the server and the bare loop, each in a process of its own ------------------------


def serve() -> None:
    """Accept every message, keep nothing; print the port, run until stdin closes."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


def bare_loop(port: int, count: int, message_file: str, connections: int) -> None:
    """``count`` messages over ``connections`` reused connections, one thread each."""
    from concurrent.futures import ThreadPoolExecutor

    message = Path(message_file).read_bytes()

    def send(numbers: range) -> None:
        with smtplib.SMTP("127.0.0.1", port) as connection:
            for number in numbers:
                connection.sendmail("news@example.com", [f"reader{number}@example.org"],
                                    message)

    with ThreadPoolExecutor(connections) as threads:
        list(threads.map(send, [range(n, count, connections) for n in range(connections)]))


@dataclass
class Sink:
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (Linux; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        yield Sink(int(process.stdout.readline()), process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=30)


# --- timing a process ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed process: wall seconds, CPU seconds (its own), peak RSS, the server's CPU."""

    wall: float
    cpu: float
    rss_kib: int
    server_cpu: float
    load: float
    output: str = ""


def timed(command: list[str], sink: Sink | None, env: dict[str, str] | None = None) -> Run:
    server_before = sink.cpu_seconds() if sink else 0.0
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:6])}… failed:\n{output}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
               (sink.cpu_seconds() - server_before) if sink else 0.0, os.getloadavg()[0],
               output)


# --- a site with N subscribers -------------------------------------------------------------


@dataclass
class Site:
    root: Path
    database_url: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDPUB_")}
        env.update(FEEDPUB_SECRET="benchmark-secret", FEEDPUB_DATABASE_URL=self.database_url)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "feedpub", "--site", str(self.root), *args]

    def feedpub(self, *args: str, sink: Sink | None = None) -> Run:
        return timed(self.command(*args), sink, self.env())

    def requeue(self) -> None:
        """Every delivery back in the queue, as if never sent (between rounds)."""
        from feedpub.store import open_store
        from feedpub.store.schema import deliveries

        store = open_store(self.database_url)
        try:
            with store.write() as conn:
                conn.execute(deliveries.update().values(
                    status="queued", attempts=0, next_attempt_at=MONDAY_9, claimed_by=None,
                    claimed_at=None, sent_at=None, last_reply=None, message_id=None))
        finally:
            store.close()

    def sent(self) -> int:
        from feedpub.store import open_store, queue

        store = open_store(self.database_url)
        try:
            with store.read() as conn:
                return queue.status_counts(conn).get("sent", 0)
        finally:
            store.close()


def write_site_files(root: Path, port: int, concurrency: int, *, rate: float = 0,
                     mail_extra: str = "") -> None:
    """The benchmark site's feedpub.toml (sending to the sink on ``port``) and its first,
    old post."""
    (root / "content" / "posts").mkdir(parents=True)
    (root / "feedpub.toml").write_text(f"""\
[site]
title = "Benchmark"
url = "https://example.com/"

[mail]
from = "Benchmark <news@example.com>"
transport = "smtp://127.0.0.1:{port}?tls=none&pool={concurrency}"
rate_limit = {rate:g}
{mail_extra}
[[newsletter]]
name = "weekly"
schedule = "0 9 * * MON"
""", encoding="utf-8")
    (root / "content" / "posts" / "2025-12-01-old.md").write_text(
        "---\ntitle: Old\ndate: 2025-12-01 10:00:00 +0000\n---\n\nOld.\n", encoding="utf-8")


def write_posts(root: Path, posts: int, body: str) -> None:
    """``posts`` new posts, dated after the baseline and before the edition's slot."""
    for number in range(1, posts + 1):
        (root / "content" / "posts" / f"2026-01-0{number + 1}-post-{number}.md").write_text(
            f"---\ntitle: Post {number}\ndate: 2026-01-0{number + 1} 10:00:00 +0000\n---\n\n"
            f"{body}\n", encoding="utf-8")


def make_site(root: Path, database_url: str, port: int, subscribers: int, concurrency: int,
              *, posts: int = 3, mail_extra: str = "") -> Site:
    """The site, its subscribers, the baseline, the posts; the edition is queued."""
    from feedpub.config import load_settings
    from feedpub.digest import make_editions
    from feedpub.store import open_store
    from feedpub.store.schema import subscribers as subscribers_table
    from feedpub.store.schema import subscriptions

    write_site_files(root, port, concurrency, mail_extra=mail_extra)
    site = Site(root, database_url)
    store = open_store(database_url)
    try:
        make_editions(load_settings(root, env=site.env()), store, T0)  # the baseline
        with store.write() as conn:
            for start in range(0, subscribers, 5000):
                conn.execute(subscribers_table.insert(), [
                    {"email": f"reader{n}@example.org", "email_key": f"reader{n}@example.org",
                     "status": "active", "source": "import", "created_at": T0,
                     "status_changed_at": T0, "confirmed_at": T0,
                     "token_key": uuid.uuid4().hex}
                    for n in range(start, min(start + 5000, subscribers))
                ])
            conn.execute(subscriptions.insert().from_select(
                ["subscriber_id", "newsletter", "mode", "categories", "created_at"],
                sa.select(subscribers_table.c.id, sa.literal("weekly"), sa.literal("digest"),
                          sa.literal("[]"), sa.literal(T0, subscriptions.c.created_at.type)),
            ))
    finally:
        store.close()
    write_posts(root, posts, BODY if posts > 1 else "One short paragraph.")
    site.feedpub("digest", "send", "--queue-only", "--now", MONDAY_9.isoformat())
    return site


@contextmanager
def database(kind: str, workdir: Path, postgres: str | None) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'feedpub.db'}"
        return
    assert postgres is not None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.scratch
    from tests.scratch import scratch_schema

    with scratch_schema(postgres, prefix="bench") as url:
        yield url


def composed(site: Site, limit: int) -> tuple[object, list[object]]:
    """The sender's composer for the site, and up to ``limit`` claims of its queue."""
    from feedpub.config import load_settings
    from feedpub.sender import _Composer, offset_clock
    from feedpub.store import open_store, queue

    settings = load_settings(site.root, env=site.env())
    store = open_store(site.database_url)
    with store.write() as conn:
        claims = queue.claim(conn, worker="benchmark", now=SEND_AT, limit=limit)
    composer = _Composer(settings, store, offset_clock(SEND_AT), None)
    composer.prepared(claims[0].edition_id)
    store.close()  # the edition is cached: the composer reads no more
    return composer, list(claims)


# --- 1. the rate, next to the bare loop ------------------------------------------------------


@dataclass
class RatePair:
    database: str
    feedpub: list[Run] = field(default_factory=list)
    bare: list[Run] = field(default_factory=list)
    """One connection."""
    bare_pool: list[Run] = field(default_factory=list)
    """As many connections as `digest send` uses, a thread each."""


def rate_rounds(kinds: list[str], count: int, rounds: int, sink: Sink, concurrency: int,
                postgres: str | None, tmp: Path) -> list[RatePair]:
    pairs = []
    with ExitStack() as stack:
        sites = {}
        for kind in kinds:
            url = stack.enter_context(database(kind, tmp / kind, postgres))
            (tmp / kind).mkdir(exist_ok=True)
            say(f"{kind}: making {count:,} subscribers and queueing the edition")
            site = make_site(tmp / kind / "site", url, sink.port, count, concurrency)
            sites[kind] = site
            pairs.append(RatePair(kind))
        message = tmp / "message.eml"
        composer, claims = composed(sites[kinds[0]], 1)
        message.write_bytes(composer.message(claims[0])[0])  # type: ignore[attr-defined]
        sites[kinds[0]].requeue()
        for number in range(rounds):
            for pair in pairs:
                site = sites[pair.database]
                steps = ["feedpub", "bare", "bare×c"]
                steps = steps[number % 3:] + steps[:number % 3]
                for step in steps:
                    if step == "feedpub":
                        site.requeue()
                        run = site.feedpub("digest", "send", "--concurrency", str(concurrency),
                                           "--now", SEND_AT.isoformat(), sink=sink)
                        if site.sent() != count:
                            raise SystemExit(f"sent {site.sent()} of {count}:\n{run.output}")
                        pair.feedpub.append(run)
                    else:
                        connections = 1 if step == "bare" else concurrency
                        run = timed([sys.executable, __file__, "--bare", str(sink.port),
                                     str(count), str(message), str(connections)], sink)
                        (pair.bare if connections == 1 else pair.bare_pool).append(run)
                    say(f"round {number + 1} {pair.database:10} {step:7} {count / run.wall:7.1f}"
                        f" msg/s  client CPU {run.cpu / count * 1000:.2f} ms/msg  server CPU "
                        f"{run.server_cpu / count * 1000:.2f} ms/msg  load {run.load:.1f}")
    return pairs


# --- 2. memory ---------------------------------------------------------------------------


def memory_run(count: int, sink: Sink, concurrency: int, tmp: Path) -> Run:
    """A one-post edition: memory does not depend on the message's size, and the local
    server takes a small message several times faster."""
    folder = tmp / f"memory-{count}"
    folder.mkdir()
    with database("sqlite", folder, None) as url:
        say(f"memory: making {count:,} subscribers")
        site = make_site(folder / "site", url, sink.port, count, concurrency, posts=1)
        run = site.feedpub("digest", "send", "--concurrency", str(concurrency),
                           "--now", SEND_AT.isoformat(), sink=sink)
        if site.sent() != count:
            raise SystemExit(f"sent fewer than {count}:\n{run.output}")
    say(f"memory {count:>7,}: peak RSS {run.rss_kib / 1024:.1f} MiB, {count / run.wall:.0f} msg/s")
    return run


# --- 3. per recipient ------------------------------------------------------------------------


def recipient_cost(sink: Sink, tmp: Path, count: int = 2000) -> dict[str, float]:
    from feedpub.mail.render import Recipient

    folder = tmp / "recipients"
    folder.mkdir()
    with database("sqlite", folder, None) as url:
        site = make_site(folder / "site", url, sink.port, count, 1)
        composer, claims = composed(site, count)
    template = composer.prepared(claims[0].edition_id).template  # type: ignore[attr-defined]
    recipient = Recipient("reader0@example.org", "Zoë", "https://example.com/unsubscribe/x",
                          "https://example.com/preferences/x")
    best_compose = best_build = float("inf")
    size = 0
    for _ in range(5):
        start = time.process_time()
        for claim in claims:
            size = len(composer.message(claim)[0])  # type: ignore[attr-defined]
        best_compose = min(best_compose, (time.process_time() - start) / len(claims))
        start = time.process_time()
        for _ in claims:
            template.build(recipient, date=SEND_AT)
        best_build = min(best_build, (time.process_time() - start) / len(claims))
    result = {"compose_ms": best_compose * 1000, "build_ms": best_build * 1000,
              "message_bytes": size}
    say(f"per recipient: {result['compose_ms']:.3f} ms with its two signed links, "
        f"{result['build_ms']:.3f} ms for the MIME build alone ({size:,} bytes)")
    return result


# --- 4. DKIM -------------------------------------------------------------------------------

VARIANTS = ("unsigned", "rsa", "rsa+ed25519")


def dkim_keys(folder: Path) -> dict[str, str]:
    """Fresh keys and the ``[mail]`` lines of each variant."""
    rsa, ed25519 = folder / "dkim.pem", folder / "dkim-ed25519.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(rsa), "2048"], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed25519)],
                   check=True, capture_output=True)
    signed = f'dkim_selector = "bench"\ndkim_domain = "example.com"\ndkim_key_file = "{rsa}"\n'
    return {"unsigned": "", "rsa": signed,
            "rsa+ed25519": signed + f'dkim_ed25519_selector = "bench-ed"\n'
                                    f'dkim_ed25519_key_file = "{ed25519}"\n'}


@dataclass
class DkimSeries:
    database: str
    runs: dict[str, list[Run]] = field(default_factory=lambda: {v: [] for v in VARIANTS})


def dkim_rounds(kinds: list[str], count: int, rounds: int, sink: Sink, concurrency: int,
                postgres: str | None, tmp: Path) -> list[DkimSeries]:
    folder = tmp / "dkim"
    folder.mkdir()
    extras = dkim_keys(folder)
    series = [DkimSeries(kind) for kind in kinds]
    with ExitStack() as stack:
        sites: dict[tuple[str, str], Site] = {}
        for kind in kinds:
            for variant in VARIANTS:
                here = folder / kind / variant.replace("+", "-")
                here.mkdir(parents=True)
                url = stack.enter_context(database(kind, here, postgres))
                say(f"dkim, {kind}, {variant}: making {count:,} subscribers")
                sites[kind, variant] = make_site(here / "site", url, sink.port, count,
                                                 concurrency, mail_extra=extras[variant])
        for number in range(rounds):
            for one in series:
                order = VARIANTS[number % 3:] + VARIANTS[:number % 3]
                for variant in order:
                    site = sites[one.database, variant]
                    site.requeue()
                    run = site.feedpub("digest", "send", "--concurrency", str(concurrency),
                                       "--now", SEND_AT.isoformat(), sink=sink)
                    if site.sent() != count:
                        raise SystemExit(f"sent {site.sent()} of {count}:\n{run.output}")
                    one.runs[variant].append(run)
                    say(f"round {number + 1} dkim {one.database:10} {variant:11} "
                        f"{count / run.wall:7.1f} msg/s  client CPU "
                        f"{run.cpu / count * 1000:.2f} ms/msg  load {run.load:.1f}")
    return series


def dkim_cost(sink: Sink, tmp: Path, count: int = 500) -> dict[str, float]:
    """Process time per message of each step of a signature (best of 5 × ``count``)."""
    import dataclasses
    import hashlib

    import dkim

    from feedpub.config import load_settings
    from feedpub.mail import message as mime
    from feedpub.mail.render import Recipient

    folder = tmp / "dkim-cost"
    folder.mkdir()
    extra = dkim_keys(folder)["rsa+ed25519"]
    with database("sqlite", folder, None) as url:
        site = make_site(folder / "site", url, sink.port, count, 1, mail_extra=extra)
        composer, claims = composed(site, count)
        settings = load_settings(site.root, env=site.env())
        config = settings.mail.dkim
    assert config is not None
    both = mime.DkimSigner.from_config(config)
    # The composer's template is signed or not depending on the sender's version: make both.
    prepared = composer.prepared(claims[0].edition_id)  # type: ignore[attr-defined]
    unsigned_template = dataclasses.replace(prepared.template, signer=None, relaxed=None)
    signed_template = mime.prepare_message(
        settings=settings, newsletter=settings.newsletter(prepared.edition.newsletter),
        rendered=prepared.edition, edition_key=prepared.key, signer=both)
    recipients = [Recipient(claim.email, claim.name or "",
                            f"https://example.com/unsubscribe/{claim.delivery_id}x7Qz",
                            f"https://example.com/preferences/{claim.delivery_id}x7Qz")
                  for claim in claims]
    messages = [unsigned_template.build(r, date=SEND_AT) for r in recipients]
    rsa = mime.DkimSigner(both.domain, both.keys[:1])
    rsa_key, ed25519_key = both.keys
    parsed = [mime._parse(m) for m in messages]
    bodies = [mime._relaxed_body(body) for _, body in parsed]
    digest = hashlib.sha256(b"x").digest()
    pem = config.key_file.read_bytes()
    steps = {
        "build_unsigned": lambda m, i: unsigned_template.build(recipients[i], date=SEND_AT),
        "build_signed": lambda m, i: signed_template.build(recipients[i], date=SEND_AT),
        "sign_rsa_ed25519": lambda m, i: both.sign(m),
        "sign_rsa": lambda m, i: rsa.sign(m),
        "parse": lambda m, i: mime._parse(m),
        "canonicalise_body": lambda m, i: mime._relaxed_body(parsed[i][1]),
        "hash_body": lambda m, i: hashlib.sha256(bodies[i]).digest(),
        "canonicalise_headers": lambda m, i: mime._RELAXED.canonicalize_headers(parsed[i][0]),
        "rsa_private_key": lambda m, i: rsa_key.sign(digest),
        "ed25519_private_key": lambda m, i: ed25519_key.sign(digest),
    }
    result = {}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for i, message in enumerate(messages):
                step(message, i)
            best = min(best, (time.process_time() - start) / count)
        result[name] = best * 1000
    start = time.process_time()
    for message in messages[:50]:  # pure-Python RSA: 50 are plenty
        dkim.sign(message, b"bench", b"example.com", pem,
                  include_headers=list(mime.SIGNED_HEADERS), canonicalize=(b"relaxed", b"relaxed"))
    result["dkimpy_sign_rsa"] = (time.process_time() - start) / 50 * 1000
    result["message_bytes"] = statistics.mean(len(m) for m in messages)
    say("per message, ms: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    return result


# --- the report -------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(args: argparse.Namespace, pairs: list[RatePair], memory: list[tuple[int, Run]],
           per_recipient: dict[str, float] | None, dkim: list[DkimSeries],
           dkim_profile: dict[str, float] | None, loads: list[float]) -> str:
    n = args.subscribers
    lines = [f"Machine: {machine()}; load average {min(loads):.1f}–{max(loads):.1f} "
             "during the run.",
             ""]
    if pairs:
        c = args.concurrency
        lines += [
            f"Rate, {n:,} subscribers, concurrency {c}, {args.rounds} rounds (medians; each "
            "ratio is of runs of the same round):", "",
            f"| database | `digest send` msg/s | bare smtplib, 1 connection | bare smtplib, {c} "
            "connections | ratio to 1 connection (per round) | ratio to the faster bare "
            "(per round) | client CPU ms/msg, feedpub / bare 1 | server CPU ms/msg, feedpub / "
            "bare 1 |",
            "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
        ]
        for pair in pairs:
            ours = [n / r.wall for r in pair.feedpub]
            single = [n / r.wall for r in pair.bare]
            pooled = [n / r.wall for r in pair.bare_pool]
            to_single = [a / b for a, b in zip(ours, single, strict=True)]
            to_best = [a / max(b, p) for a, b, p in zip(ours, single, pooled, strict=True)]
            lines.append(
                f"| {pair.database} | {median(ours):.1f} | {median(single):.1f} | "
                f"{median(pooled):.1f} | "
                f"{median(to_single):.0%} ({', '.join(f'{r:.0%}' for r in to_single)}) | "
                f"{median(to_best):.0%} ({', '.join(f'{r:.0%}' for r in to_best)}) | "
                f"{median([r.cpu / n * 1000 for r in pair.feedpub]):.2f} / "
                f"{median([r.cpu / n * 1000 for r in pair.bare]):.2f} | "
                f"{median([r.server_cpu / n * 1000 for r in pair.feedpub]):.2f} / "
                f"{median([r.server_cpu / n * 1000 for r in pair.bare]):.2f} |")
        lines.append("")
    if memory:
        lines += ["| subscribers (one-post edition, SQLite) | `digest send` peak RSS | msg/s |",
                  "| ---: | ---: | ---: |"]
        lines += [f"| {count:,} | {run.rss_kib / 1024:.1f} MiB | {count / run.wall:.0f} |"
                  for count, run in memory]
        lines.append("")
    if per_recipient:
        lines.append(
            f"Per recipient, no DKIM (process time, best of 5 × 2,000): "
            f"{per_recipient['compose_ms']:.3f} ms with its two signed links, "
            f"{per_recipient['build_ms']:.3f} ms for the placeholders and MIME build alone "
            f"({int(per_recipient['message_bytes']):,}-byte message).")
        lines.append("")
    if dkim:
        n = args.dkim_subscribers
        lines += [f"DKIM, {n:,} subscribers, concurrency {args.concurrency}, "
                  f"{args.dkim_rounds} interleaved rounds (medians; each ratio is of runs of the "
                  "same round):", "",
                  "| database | unsigned msg/s | RSA msg/s | RSA / unsigned (per round) | "
                  "RSA + Ed25519 msg/s | RSA + Ed25519 / unsigned (per round) | client CPU "
                  "ms/msg, unsigned / RSA / both |",
                  "| --- | ---: | ---: | --- | ---: | --- | --- |"]
        for one in dkim:
            rates = {v: [n / r.wall for r in runs] for v, runs in one.runs.items()}
            cells = [one.database, f"{median(rates['unsigned']):.1f}"]
            for variant in VARIANTS[1:]:
                ratios = [a / b for a, b in zip(rates[variant], rates["unsigned"], strict=True)]
                cells += [f"{median(rates[variant]):.1f}",
                          f"{median(ratios):.0%} ({', '.join(f'{r:.0%}' for r in ratios)})"]
            cells.append(" / ".join(f"{median([r.cpu / n * 1000 for r in one.runs[v]]):.2f}"
                                    for v in VARIANTS))
            lines.append(f"| {' | '.join(cells)} |")
        lines.append("")
    if dkim_profile:
        c = dkim_profile
        lines += [
            f"Where a signature's time goes (process time per message, best of 5 × 500 "
            f"messages of {c['message_bytes']:,.0f} bytes): a template builds a message in "
            f"{c['build_unsigned']:.3f} ms unsigned, {c['build_signed']:.3f} ms signed with "
            f"RSA + Ed25519 (its shared parts canonicalised once). A whole message signed "
            f"afterwards: RSA + Ed25519 "
            f"{c['sign_rsa_ed25519']:.3f} ms, RSA alone {c['sign_rsa']:.3f} ms, of which "
            f"parsing the header {c['parse']:.3f}, canonicalising the body "
            f"{c['canonicalise_body']:.3f}, hashing it {c['hash_body']:.3f}, canonicalising the "
            f"header {c['canonicalise_headers']:.3f}, the RSA-2048 private-key operation "
            f"{c['rsa_private_key']:.3f} (Ed25519: {c['ed25519_private_key']:.3f}); dkimpy's "
            f"own `dkim.sign` (RSA in pure Python): {c['dkimpy_sign_rsa']:.3f} ms.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", default="10000,100000",
                        help="comma-separated subscriber counts for the memory runs ('' skips)")
    parser.add_argument("--postgres", default=os.environ.get("FEEDPUB_TEST_DATABASE_URL"),
                        help="a PostgreSQL URL: also measure the rate there "
                             "(default: $FEEDPUB_TEST_DATABASE_URL)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dkim-subscribers", type=int, default=3000, help="0 skips")
    parser.add_argument("--dkim-rounds", type=int, default=3)
    parser.add_argument("--no-dkim-cost", dest="dkim_cost", action="store_false",
                        help="skip the per-message profile of a signature")
    parser.add_argument("--no-recipient-cost", dest="recipient_cost", action="store_false")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if args.bare:
        bare_loop(int(args.bare[0]), int(args.bare[1]), args.bare[2], int(args.bare[3]))
        return
    loads = [os.getloadavg()[0]]
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with smtp_sink() as sink, tempfile.TemporaryDirectory(prefix="feedpub-send-") as tmp_name:
        tmp = Path(tmp_name)
        pairs = rate_rounds(kinds, args.subscribers, args.rounds, sink, args.concurrency,
                            args.postgres, tmp) if args.rounds else []
        memory = [(size, memory_run(size, sink, args.concurrency, tmp))
                  for size in (int(s) for s in args.memory_sizes.split(",") if s.strip())]
        per_recipient = recipient_cost(sink, tmp) if args.recipient_cost else None
        dkim = dkim_rounds(kinds, args.dkim_subscribers, args.dkim_rounds, sink,
                           args.concurrency, args.postgres, tmp) \
            if args.dkim_subscribers and args.dkim_rounds else []
        dkim_profile = dkim_cost(sink, tmp) if args.dkim_cost else None
    for pair in pairs:
        loads += [r.load for r in pair.feedpub + pair.bare]
    loads += [r.load for _, r in memory]
    loads += [r.load for one in dkim for runs in one.runs.values() for r in runs]
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(),
            "rate": [{"database": p.database, "feedpub": [vars(r) | {"output": ""}
                                                          for r in p.feedpub],
                      "bare": [vars(r) for r in p.bare],
                      "bare_pool": [vars(r) for r in p.bare_pool]} for p in pairs],
            "memory": [{"subscribers": c, **(vars(r) | {"output": ""})} for c, r in memory],
            "per_recipient": per_recipient,
            "dkim": [{"database": one.database,
                      **{v: [vars(r) | {"output": ""} for r in runs]
                         for v, runs in one.runs.items()}} for one in dkim],
            "dkim_profile": dkim_profile,
        }, indent=2), encoding="utf-8")
    print(report(args, pairs, memory, per_recipient, dkim, dkim_profile, loads))


if __name__ == "__main__":
    main()
