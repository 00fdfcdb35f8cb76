"""Time `feedpub build` (cold, nothing changed, one post changed) next to its references.

    python benchmarks/build.py                     # 10,000 posts, 2 rounds
    python benchmarks/build.py -n 1000 --rounds 3 --no-pelican
    python benchmarks/build.py --no-bare --no-pelican    # feedpub with pages off and on, Hugo
    python benchmarks/build.py --markdown-table    # also print the README's table rows

The same corpus (``benchmarks/corpus.py``) is written once for each tool. Each
round then runs, one after the other so that a busy machine weighs on all of
them alike:

- ``bare``: python-frontmatter + Python-Markdown (tables, footnotes, fenced
  code, codehilite, toc, sane_lists) + feedgen in one process: read and
  render every post, write Atom and RSS of the newest 20;
- ``feedpub cold``: ``python -m feedpub build`` with no cache and no public/;
- ``feedpub unchanged``: the same command again;
- ``feedpub one changed``: after appending a sentence to one post (most are in no
  feed); ``feedpub newest changed``: to the newest post, which every feed shows;
- ``hugo``: ``hugo`` (the Debian package) on the Hugo flavour of the corpus,
  minimal layouts, RSS on, when ``hugo`` is on PATH;
- ``pelican``: Pelican with Atom and RSS feeds, from the virtualenv named by
  ``--pelican`` (default /tmp/pelican-venv), when it exists.

Every run is a separate process tree. Its wall time includes interpreter
start-up; its memory is the peak, over the run, of the sum of RSS and of PSS
of the process and all its descendants (the forkserver and the render
workers), read from /proc every 25 ms. PSS divides pages shared between
processes among them, so its sum is what the tree really occupies; the RSS
sum counts shared pages once per process and is an upper bound.

A last step times, in one process, what a rebuild with nothing changed does:
listing the posts, checking each against the cache, loading the entries the
feeds show, writing the feeds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

NOW = "2030-01-01T00:00:00+00:00"
PYTHON = sys.executable


# --- measuring a process tree ---------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = [task.name for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(child) for child in text.split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending += _children(current)
    return pids


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; zeros once it has gone."""
    rss = pss = 0
    try:
        with Path(f"/proc/{pid}/smaps_rollup").open() as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


@dataclass
class Run:
    seconds: float
    rss_mib: float
    pss_mib: float
    processes: int
    returncode: int
    stderr: str = ""


def measure(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``command``; its wall time and the peak memory of its whole process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = {"rss": 0, "pss": 0, "processes": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            pids = _tree(process.pid)
            sizes = [_memory_kib(pid) for pid in pids]
            peak["rss"] = max(peak["rss"], sum(s[0] for s in sizes))
            peak["pss"] = max(peak["pss"], sum(s[1] for s in sizes))
            peak["processes"] = max(peak["processes"], len(pids))
            done.wait(0.025)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    poller.join()
    return Run(seconds, peak["rss"] / 1024, peak["pss"] / 1024, peak["processes"],
               process.returncode, stderr)  # fmt: skip


# --- the bare reference pipeline -------------------------------------------------


def bare_pipeline(posts_dir: Path, out: Path) -> None:
    """python-frontmatter + Python-Markdown + feedgen, one process, every post rendered."""
    import frontmatter  # type: ignore[import-not-found, unused-ignore]
    import markdown
    from feedgen.feed import FeedGenerator  # type: ignore[import-untyped, unused-ignore]

    md = markdown.Markdown(
        extensions=["tables", "footnotes", "fenced_code", "codehilite", "toc", "sane_lists"],
        extension_configs={"codehilite": {"noclasses": True, "guess_lang": False}},
    )
    rendered: list[tuple[datetime, str, str, str]] = []
    for path in sorted(posts_dir.glob("*.md")):
        post = frontmatter.load(path)
        md.reset()
        moment = post["date"]
        if not isinstance(moment, datetime):
            moment = datetime.strptime(str(moment), "%Y-%m-%d %H:%M:%S %z")
        rendered.append((moment, str(post["title"]), path.stem, md.convert(post.content)))
    rendered.sort(key=lambda item: item[0], reverse=True)
    feed = FeedGenerator()
    feed.id("https://example.com/blog/")
    feed.title("Benchmark")
    feed.link(href="https://example.com/blog/", rel="alternate")
    feed.description("Benchmark")
    for moment, title, slug, html in reversed(rendered[:20]):
        entry = feed.add_entry()
        entry.id(f"https://example.com/blog/{slug}/")
        entry.title(title)
        entry.link(href=f"https://example.com/blog/{slug}/")
        entry.published(moment)
        entry.updated(moment)
        entry.content(html, type="html")
    out.mkdir(parents=True, exist_ok=True)
    feed.atom_file(str(out / "atom.xml"))
    feed.rss_file(str(out / "rss.xml"))


# --- what a rebuild does, step by step ---------------------------------------------


def rebuild_breakdown(site: Path) -> None:
    """Print the seconds of each step of a rebuild that finds nothing changed."""
    from feedpub import content
    from feedpub.build import feed_selection, write_feeds
    from feedpub.catalog import load_catalog
    from feedpub.config import load_settings

    now = datetime.fromisoformat(NOW)
    began = time.perf_counter()
    settings = load_settings(site, env={})
    files = content.find_post_names(settings.posts_dir)
    listed = time.perf_counter()
    catalog = load_catalog(settings, now)
    scanned = time.perf_counter()
    shown = catalog.load(feed_selection(catalog.published, settings.feed.limit))
    loaded = time.perf_counter()
    write_feeds(shown, settings)
    written = time.perf_counter()
    print(f"list {len(files)} files: {listed - began:.3f} s; "
          f"scan (stat + cache lookup, nothing rendered: {catalog.rendered}): "
          f"{scanned - listed:.3f} s; load {len(shown)} shown entries: {loaded - scanned:.3f} s; "
          f"write feeds: {written - loaded:.3f} s")  # fmt: skip


# --- the run ---------------------------------------------------------------------


@dataclass
class Step:
    name: str
    command: list[str]
    cwd: Path
    before: Callable[[], None] = lambda: None
    runs: list[Run] = field(default_factory=list)


def machine() -> str:
    model = "unknown CPU"
    with Path("/proc/cpuinfo").open() as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with Path("/proc/meminfo").open() as handle:
        total_kib = int(handle.readline().split()[1])
    return (f"{os.cpu_count()} cores ({model}), {total_kib / 1024 / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {date.today().isoformat()}")  # fmt: skip


def _reset(*paths: Path) -> Callable[[], None]:
    def remove() -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    return remove


def _touch_one(posts_dir: Path, counter: list[int], *, newest: bool = False
               ) -> Callable[[], None]:
    """Appends a sentence to one post: the newest (which every feed shows), or one picked
    by a stride through the others (most of which no feed shows)."""
    def change() -> None:
        counter[0] += 1
        paths = sorted(posts_dir.glob("*.md"))
        path = paths[-1] if newest else paths[counter[0] * 7919 % len(paths)]
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"\nEdited {counter[0]} times. 又改了一次 ✍️\n")

    return change


def plan(work: Path, posts: int, args: argparse.Namespace) -> list[Step]:
    feedpub_site = work / "feedpub"
    feedpub_command = [PYTHON, "-P", "-m", "feedpub", "--site", str(feedpub_site), "build",
                       "--now", NOW, "--quiet"]  # fmt: skip
    if args.jobs:
        feedpub_command += ["--jobs", str(args.jobs)]
    pages_site = work / "feedpub-pages"
    pages_command = [*feedpub_command[:5], str(pages_site), *feedpub_command[6:]]
    steps = [] if args.no_bare else [
        Step("bare pipeline (1 process)",
             [PYTHON, __file__, "--bare", str(feedpub_site / "content" / "posts"),
              str(work / "bare-out")], work),
    ]
    steps += [
        Step("feedpub cold", feedpub_command, work,
             _reset(feedpub_site / ".feedpub-cache", feedpub_site / "public")),
        Step("feedpub unchanged", feedpub_command, work),
        Step("feedpub one changed", feedpub_command, work,
             _touch_one(feedpub_site / "content" / "posts", [0])),
        Step("feedpub newest changed", feedpub_command, work,
             _touch_one(feedpub_site / "content" / "posts", [0], newest=True)),
    ]  # fmt: skip
    if not args.no_pages:
        steps += [
            Step("feedpub pages cold", pages_command, work,
                 _reset(pages_site / ".feedpub-cache", pages_site / "public")),
            Step("feedpub pages unchanged", pages_command, work),
            Step("feedpub pages one changed", pages_command, work,
                 _touch_one(pages_site / "content" / "posts", [0])),
            Step("feedpub pages newest changed", pages_command, work,
                 _touch_one(pages_site / "content" / "posts", [0], newest=True)),
            Step("feedpub pages check cold", [*pages_command[:6], "check", "--now", NOW],
                 work, _reset(pages_site / ".feedpub-cache")),
        ]  # fmt: skip
    if not args.no_hugo and shutil.which("hugo"):
        hugo_site = work / "hugo"
        steps.append(Step("hugo", ["hugo", "--quiet", "-d", str(hugo_site / "public"),
                                   "--cacheDir", str(work / "hugo-cache")], hugo_site,
                          _reset(hugo_site / "public", hugo_site / "resources")))  # fmt: skip
    pelican = Path(args.pelican) / "bin" / "pelican"
    if not args.no_pelican and pelican.exists():
        pelican_site = work / "pelican"
        steps.append(Step("pelican", [str(pelican), "content", "-s", "pelicanconf.py", "-o",
                                      "output", "-q"], pelican_site,
                          _reset(pelican_site / "output")))  # fmt: skip
    return steps


def write_pages_site(work: Path, say: Callable[[str], None]) -> None:
    """The feedpub corpus again, with ``[pages]`` on: the same posts, the whole site."""
    source, target = work / "feedpub", work / "feedpub-pages"
    if (target / ".complete").exists() and (target / ".complete").read_text() == (
        source / ".complete"
    ).read_text():
        return
    say("copying the feedpub corpus for the pages steps")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".feedpub-cache", "public"))
    config = target / "feedpub.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        "[pages]\nenabled = false", "[pages]\nenabled = true"), encoding="utf-8")


def write_corpora(work: Path, posts: int, steps: list[Step], say: Callable[[str], None]) -> None:
    flavours = {"feedpub"} | {name for name in ("hugo", "pelican")
                              if any(step.name == name for step in steps)}  # fmt: skip
    for flavour in sorted(flavours):
        target = work / flavour
        if (target / ".complete").exists() and (target / ".complete").read_text() == str(posts):
            continue
        say(f"writing {posts} posts for {flavour}")
        shutil.rmtree(target, ignore_errors=True)
        corpus.write_site(target, posts, flavour)
        (target / ".complete").write_text(str(posts))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-n", "--posts", type=int, nargs="+", default=[10_000],
                        help="corpus sizes to run, e.g. -n 1000 5000 10000")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every step")
    parser.add_argument("--jobs", type=int, default=None, help="feedpub render processes")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the corpora (kept, reused on the next run)")
    parser.add_argument("--pelican", default="/tmp/pelican-venv",
                        help="virtualenv with Pelican installed")  # fmt: skip
    parser.add_argument("--no-hugo", action="store_true")
    parser.add_argument("--no-pelican", action="store_true")
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare pipeline (90 s a round at 10,000 posts)")
    parser.add_argument("--no-pages", action="store_true", help="skip the steps with pages on")
    parser.add_argument("--pelican-rounds", type=int, default=1,
                        help="Pelican is slow; run it in this many rounds only")  # fmt: skip
    parser.add_argument("--markdown-table", action="store_true",
                        help="print rows for benchmarks/README.md")  # fmt: skip
    parser.add_argument("--bare", nargs=2, type=Path, metavar=("POSTS", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--breakdown", type=Path, metavar="SITE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_pipeline(*args.bare)
        return
    if args.breakdown:
        rebuild_breakdown(args.breakdown)
        return

    interactive = sys.stderr.isatty()

    def say(message: str) -> None:
        if interactive:
            print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)

    print(machine())
    rows: list[str] = []
    for posts in args.posts:
        work = args.work / str(posts) if args.work else Path(tempfile.mkdtemp(prefix="fpbench-"))
        work.mkdir(parents=True, exist_ok=True)
        steps = plan(work, posts, args)
        write_corpora(work, posts, steps, say)
        if not args.no_pages:
            write_pages_site(work, say)
        for round_number in range(1, args.rounds + 1):
            for step in steps:
                if step.name == "pelican" and round_number > args.pelican_rounds:
                    continue
                say(f"{posts} posts, round {round_number}/{args.rounds}: {step.name}…")
                step.before()
                run = measure(step.command, step.cwd)
                if run.returncode != 0:
                    say("")
                    print(f"{step.name} failed ({run.returncode}):\n{run.stderr[-2000:]}",
                          file=sys.stderr)  # fmt: skip
                step.runs.append(run)
        say("")
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"\n{posts} posts ({args.rounds} rounds; median wall, peak memory of the "
              f"process tree; load average at the end {load})")  # fmt: skip
        medians = {step.name: statistics.median(r.seconds for r in step.runs)
                   for step in steps if step.runs}
        for step in steps:
            if not step.runs:
                continue
            wall = statistics.median(r.seconds for r in step.runs)
            rss = max(r.rss_mib for r in step.runs)
            pss = max(r.pss_mib for r in step.runs)
            spread = ", ".join(f"{r.seconds:.1f}" for r in step.runs)
            # Each feedpub step against the cold build of its own kind (pages off or on).
            cold = medians.get("feedpub pages cold" if "pages" in step.name else "feedpub cold")
            share = (f"{wall / cold * 100:5.1f}% of cold"
                     if step.name.startswith("feedpub") and cold else "")
            print(f"  {step.name:28s} {wall:7.2f} s  (runs: {spread})  RSS {rss:6.0f} MiB  "
                  f"PSS {pss:6.0f} MiB  processes {max(r.processes for r in step.runs)}  {share}")
            rows.append(f"| {posts:,} | {step.name} | {wall:.2f} s | {spread} | {rss:.0f} MiB | "
                        f"{pss:.0f} MiB |")  # fmt: skip
        breakdown = subprocess.run(
            [PYTHON, __file__, "--breakdown", str(work / "feedpub")],
            capture_output=True, text=True, check=True,
        )
        print(f"  rebuild, step by step: {breakdown.stdout.strip()}")
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.markdown_table:
        print("\n| posts | what | median wall | runs (s) | peak RSS, all processes | "
              "peak PSS, all processes |\n| ---: | --- | ---: | --- | ---: | ---: |")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
