"""Issue 14, the content side: nothing private is published, one bad post never stops
the others, and every fault ends quickly and clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feedpub import catalog as catalog_module
from feedpub import entries, writer
from feedpub.build import build
from feedpub.catalog import lint_site, load_catalog
from feedpub.config import parse_transport
from feedpub.digest import make_editions
from feedpub.errors import ContentError, FeedpubError
from feedpub.mail.transports import open_transport
from feedpub.sender import SendOptions, send_queued
from feedpub.store import open_store
from feedpub.store import queue as delivery_queue
from tests.conftest import BASIC_CONFIG, Clock, SiteFactory, SmtpServer
from tests.test_digest import MONDAY_9, T0, Site, add_readers, post, site_config

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = "---\ntitle: Good post\ndate: 2025-01-01\n---\n\nA good post.\n"
ROOT = Path(__file__).resolve().parent.parent


def bad(body: str) -> str:
    return f"---\ntitle: Bad post\ndate: 2025-01-02\n---\n\n{body}\n"


def atom(site: Path) -> str:
    return (site / "public" / "atom.xml").read_text(encoding="utf-8")


def only_error(errors: list[ContentError], name: str) -> ContentError:
    assert [e.path.as_posix() if e.path else None for e in errors] == [
        f"content/posts/{name}"
    ], [str(e) for e in errors]
    assert "\n" not in str(errors[0])
    return errors[0]


# --- nothing private is ever published ------------------------------------------------


@pytest.mark.parametrize("target", ["secret", "/etc/passwd"])
def test_a_link_to_a_file_outside_the_site_is_an_error_and_never_published(
    make_site: SiteFactory, tmp_path: Path, target: str
) -> None:
    site = make_site(posts={"2025-01-01-good.md": GOOD})
    if target == "secret":
        secret = tmp_path / ".feedpub-secret"
        secret.write_text("---\ntitle: Notes\ndate: 2025-01-03\n---\nSIGNING-SECRET-1234\n")
        target = str(secret)
    (site / "content" / "posts" / "2025-01-03-notes.md").symlink_to(target)
    settings = make_site.settings()

    report = build(settings, NOW, jobs=1)

    error = only_error(report.errors, "2025-01-03-notes.md")
    assert "outside the site" in error.message
    feed = atom(site)
    assert "Good post" in feed
    assert "SIGNING-SECRET" not in feed and "root:" not in feed
    findings = lint_site(settings, NOW).findings
    assert [(f.path, f.severity) for f in findings] == [
        ("content/posts/2025-01-03-notes.md", "error")
    ]


def test_a_link_to_a_post_inside_the_site_is_read(make_site: SiteFactory) -> None:
    site = make_site(posts={"2025-01-01-good.md": GOOD},
                     files={"drafts/2025-01-05-kept.md": bad("Kept inside.")})
    (site / "content" / "posts" / "2025-01-05-kept.md").symlink_to(
        site / "drafts" / "2025-01-05-kept.md"
    )
    report = build(make_site.settings(), NOW, jobs=1)
    assert report.errors == []
    assert "Kept inside." in atom(site)


# --- one bad post never stops the others ------------------------------------------------

HOSTILE = {
    "dashes": "- " * 10_000,
    "numbers": "1. " * 10_000,
    "stars": "* " * 10_000,
    "brackets": "[" * 10_000 + "x" + "]" * 10_000,
    "open-brackets": "[" * 10_000,
    "footnotes": "[^" * 3_000,
    "quotes": "\n".join(">" * n + " x" for n in range(1, 2_001)),  # 2 MB: too large
    "quotes-600": "\n".join(">" * n + " x" for n in range(1, 601)),
    "indented": "\n".join("  " * n + "- x" for n in range(700)),
    "emphasis": "*" * 2_000 + "x" + "*" * 2_000,
    "large": "word " * 220_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_post_is_one_line_and_the_rest_is_built(
    make_site: SiteFactory, name: str
) -> None:
    site = make_site(posts={"2025-01-01-good.md": GOOD, "2025-01-02-bad.md": bad(HOSTILE[name])})
    started = time.monotonic()
    report = build(make_site.settings(), NOW, jobs=1)
    assert time.monotonic() - started < 10
    error = only_error(report.errors, "2025-01-02-bad.md")
    why = "too large" if name in ("large", "quotes") else "too deeply"
    assert why in error.message
    assert "Good post" in atom(site)
    assert "Bad post" not in atom(site)


def test_a_crash_in_the_converter_is_that_posts_error(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(posts={"2025-01-01-good.md": GOOD, "2025-01-02-bad.md": bad("boom")})
    real = entries.make_entry_with_outline

    def convert(post: Any, site_config: Any) -> Any:
        if "boom" in post.body:
            raise KeyError("unexpected")
        return real(post, site_config)

    monkeypatch.setattr(entries, "make_entry_with_outline", convert)
    settings = make_site.settings()
    report = build(settings, NOW, jobs=1)
    error = only_error(report.errors, "2025-01-02-bad.md")
    assert "could not be rendered (KeyError" in error.message
    assert "Good post" in atom(site) and "Bad post" not in atom(site)
    # The next scan leaves it out from the start, without converting it again.
    monkeypatch.setattr(entries, "make_entry_with_outline", real)
    again = load_catalog(settings, NOW, jobs=1)
    assert [ref.source for ref in again.published] == ["content/posts/2025-01-01-good.md"]
    only_error(again.errors, "2025-01-02-bad.md")
    assert len(lint_site(settings, NOW).findings) == 1


def test_a_post_that_renders_too_slowly_is_stopped_and_reported(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BASIC_CONFIG + "\n[limits]\nrender_seconds = 0.5\n"
    site = make_site(posts={"2025-01-01-good.md": GOOD, "2025-01-02-bad.md": bad("slow")},
                     config=config)
    real = entries.make_entry_with_outline

    def convert(post: Any, site_config: Any) -> Any:
        while "slow" in post.body:
            time.sleep(0.01)
        return real(post, site_config)

    monkeypatch.setattr(entries, "make_entry_with_outline", convert)
    started = time.monotonic()
    report = build(make_site.settings(), NOW, jobs=1)
    assert time.monotonic() - started < 5
    error = only_error(report.errors, "2025-01-02-bad.md")
    assert "took more than 0.5 s to render" in error.message
    assert "Good post" in atom(site)


def test_limits_come_from_the_settings(make_site: SiteFactory) -> None:
    config = BASIC_CONFIG + "\n[limits]\nnesting = 4\npost_bytes = 5000\n"
    site = make_site(config=config, posts={
        "2025-01-01-good.md": GOOD,
        "2025-01-02-bad.md": bad("- a\n    - b\n        - c\n            - d\n                - e"),
        "2025-01-03-big.md": bad("x" * 6000).replace("Bad post", "Big post"),
    })
    report = build(make_site.settings(), NOW, jobs=1)
    assert sorted(str(e) for e in report.errors) == [
        "content/posts/2025-01-02-bad.md:10: is nested too deeply to render: 5 levels of "
        "lists or quotes (the limit set by [limits] nesting is 4)",
        "content/posts/2025-01-03-big.md: is too large: more than 5,000 bytes (the limit "
        "set by [limits] post_bytes); split it or raise the limit",
    ]
    assert "Good post" in atom(site)


def test_hostile_posts_on_every_core_are_reported_and_the_rest_is_built(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_module, "_PARALLEL_THRESHOLD", 4)
    monkeypatch.setattr(catalog_module, "_CHUNK", 2)
    posts = {f"2025-01-{day:02d}-good.md": GOOD.replace("2025-01-01", f"2025-01-{day:02d}")
             .replace("Good post", f"Good {day}") for day in range(1, 9)}
    posts["2025-02-01-deep.md"] = bad(HOSTILE["dashes"])
    posts["2025-02-02-brackets.md"] = bad(HOSTILE["brackets"])
    site = make_site(posts=posts)
    report = build(make_site.settings(), NOW, jobs=2)
    assert sorted(str(e.path) for e in report.errors) == [
        "content/posts/2025-02-01-deep.md", "content/posts/2025-02-02-brackets.md"
    ]
    assert all(f"Good {day}" in atom(site) for day in range(1, 9))


# --- dates feeds cannot carry -------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "line"),
    [("0001-01-01", 3), ("1899-12-31 23:59", 3), ('"Mon, 01 Jan 0001 00:00:00 +0000"', 3)],
)
def test_a_date_feeds_cannot_carry_is_an_error_naming_file_line_and_key(
    make_site: SiteFactory, written: str, line: int
) -> None:
    make_site(posts={"old.md": f"---\ntitle: Old\ndate: {written}\n---\nx\n"})
    report = build(make_site.settings(), NOW, jobs=1)
    (error,) = report.errors
    assert (str(error.path), error.line, error.key) == ("content/posts/old.md", line, "date")
    assert "1900 to 9999" in error.message


# --- faults end quickly and leave nothing behind -------------------------------------------


def test_a_killed_builds_temporary_files_go_at_the_next_build_pages_off(
    make_site: SiteFactory,
) -> None:
    config = BASIC_CONFIG + "\n[pages]\nenabled = false\n"
    site = make_site(config=config, posts={"2025-01-01-good.md": GOOD})
    public = site / "public"
    public.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftover = public / f".atom.xml.{dead.stdout.strip()}-abc123.tmp"
    leftover.write_text("half a feed")
    unrelated = public / ".keep.tmp"  # not ours to judge by a process: too young to go
    unrelated.write_text("x")
    build(make_site.settings(), NOW, jobs=1)
    assert not leftover.exists()
    assert unrelated.exists()
    assert "Good post" in atom(site)


WORKER_SCRIPT = """
import os, sys, time
from pathlib import Path
from feedpub import catalog
from feedpub.config import load_settings
import tests.test_hardening

def main():
    settings = load_settings(Path(sys.argv[1]), env={{"FEEDPUB_SECRET": "x"}})
    paths = [Path(f"/nonexistent/{{i}}.md") for i in range(8)]
    for _ in catalog._run_chunks(
        {worker}, settings, paths, 2, None
    ):
        pass

if __name__ == "__main__":
    catalog._PARALLEL_THRESHOLD = 1
    catalog._CHUNK = 1
    main()
"""


def test_pool_workers_end_with_a_killed_build(make_site: SiteFactory, tmp_path: Path) -> None:
    site = make_site(posts={"2025-01-01-good.md": GOOD})
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "run.py"
    script.write_text(WORKER_SCRIPT.format(worker="tests.test_hardening.stuck_worker"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARDENING_PIDS": str(pids)}
    child = subprocess.Popen([sys.executable, str(script), str(site)], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while (len(list(pids.iterdir())) < 2 and time.monotonic() < deadline
               and child.poll() is None):
            time.sleep(0.05)
        recorded = [p.read_text().split() for p in pids.iterdir()]
        assert len(recorded) >= 2
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        others = {int(pid) for pair in recorded for pid in pair}
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in others) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in others if _alive(pid)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def stuck_worker(settings: Any, paths: list[Path]) -> list[Any]:
    """A pool worker that never finishes: records its pid and its parent's (the
    forkserver), then waits."""
    folder = Path(os.environ["HARDENING_PIDS"])
    (folder / str(os.getpid())).write_text(f"{os.getpid()} {os.getppid()}")
    time.sleep(300)
    return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in every way that matters; /proc says which.
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False



# --- only feedpub's own template carries placeholders ----------------------------------------


def test_placeholders_typed_in_a_post_reach_every_reader_as_written(
    make_site: SiteFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    make_site(config=site_config(transport=smtp_server.url))
    url = f"sqlite:///{tmp_path / 'feedpub.db'}"
    store = open_store(url)
    try:
        site = Site(make_site, url, store)
        make_editions(site.settings, store, T0)  # the baseline
        add_readers(store, ["ann@example.org", "bob@example.org"])
        typed = "Write to %%FEEDPUB_EMAIL%% or leave: %%FEEDPUB_UNSUBSCRIBE_URL%%"
        site.write("2026-01-02-tricks.md",
                   post("Hi %%FEEDPUB_EMAIL%%", "2026-01-02 10:00:00 +0000", body=typed))
        due = MONDAY_9 + timedelta(minutes=1)
        make_editions(site.settings, store, due)
        with open_transport(parse_transport(smtp_server.url)) as transport:
            report = send_queued(site.settings, store, transport, clock=Clock(due),
                                 options=SendOptions())
        assert report.sent == 2
    finally:
        store.close()
    assert len(smtp_server.recorder.messages) == 2
    for received in smtp_server.recorder.messages:
        message = received.message
        reader = received.rcpt_tos[0]
        bodies = [part.get_content() for part in message.walk()
                  if part.get_content_type() in ("text/plain", "text/html")]
        assert len(bodies) == 2
        for body in bodies:
            visible = body.replace("\u2060", "")
            assert "%%FEEDPUB_EMAIL%%" in visible
            assert "%%FEEDPUB_UNSUBSCRIBE_URL%%" in visible
            # The template's own placeholders are still filled in: the footer's link.
            assert "/unsubscribe" in body or "unsubscribe" in body.lower()
            assert f"Write to {reader}" not in visible
        assert "Hi %%FEEDPUB_EMAIL%%" in str(message["Subject"]).replace("\u2060", "")


def test_no_edition_is_committed_before_its_web_page_is_written(
    make_site: SiteFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_site(config=site_config())
    url = f"sqlite:///{tmp_path / 'feedpub.db'}"
    store = open_store(url)
    try:
        site = Site(make_site, url, store)
        make_editions(site.settings, store, T0)  # the baseline
        add_readers(store, ["ann@example.org"])
        site.write("2026-01-02-news.md", post("News", "2026-01-02 10:00:00 +0000"))
        due = MONDAY_9 + timedelta(minutes=1)
        real = writer.write_outputs

        def disk_full(public_dir: Path, outputs: Any) -> Any:
            if any(output.relpath.startswith("editions/") for output in outputs):
                raise FeedpubError("cannot write the file: No space left on device")
            return real(public_dir, outputs)

        monkeypatch.setattr(writer, "write_outputs", disk_full)
        with pytest.raises(FeedpubError, match="No space left"):
            make_editions(site.settings, store, due)
        with store.read() as conn:
            assert delivery_queue.status_counts(conn) == {}
        monkeypatch.setattr(writer, "write_outputs", real)
        report = make_editions(site.settings, store, due)
        (edition,) = [e for e in report.editions if e.kind == "digest"]
        assert edition.recipients == 1
        pages = [site.root / "public" / path for path in edition.web_paths]
        assert pages and all(page.is_file() for page in pages)
        made = pages[0].read_bytes()
        # A page lost after its edition was committed is made again by the next run.
        pages[0].unlink()
        make_editions(site.settings, store, due + timedelta(minutes=1))
        assert pages[0].read_bytes() == made
    finally:
        store.close()


def test_a_post_that_fails_outside_the_feeds_leaves_the_pages_whole(
    make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BASIC_CONFIG.replace("limit = 20", "limit = 1")
    site = make_site(config=config, posts={
        "2025-01-01-old.md": bad("boom").replace("2025-01-02", "2024-06-01"),
        "2025-01-02-new.md": GOOD.replace("2025-01-01", "2025-03-01"),
    })
    real = entries.make_entry_with_outline

    def convert(post: Any, site_config: Any) -> Any:
        if "boom" in post.body:
            raise ValueError("unexpected")
        return real(post, site_config)

    monkeypatch.setattr(entries, "make_entry_with_outline", convert)
    report = build(make_site.settings(), NOW, jobs=1)
    only_error(report.errors, "2025-01-01-old.md")
    assert (site / "public" / "index.html").is_file()
    assert "Bad post" not in (site / "public" / "index.html").read_text(encoding="utf-8")


def test_a_post_over_ten_megabytes_still_gives_feeds(make_site: SiteFactory) -> None:
    # lxml refuses a text node over 10 MB unless told otherwise ("Text node too long").
    from dataclasses import replace

    from feedpub import feeds

    make_site(posts={"2025-01-01-good.md": GOOD})
    settings_ = make_site.settings()
    catalog = load_catalog(settings_, NOW, jobs=1)
    (entry,) = catalog.load(catalog.published)
    huge = replace(entry, content_html="<p>" + "word " * 2_200_000 + "</p>")
    rendered = feeds.render_feeds([huge], settings_).outputs
    atom_bytes = next(output.data for output in rendered if output.relpath == "atom.xml")
    assert isinstance(atom_bytes, bytes) and len(atom_bytes) > 11_000_000
