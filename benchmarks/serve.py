"""How many conditional GETs per second `feedpub serve` answers, on loopback.

Feed readers poll a feed every few minutes with ``If-None-Match`` (or
``If-Modified-Since``); almost every poll should end in a 304. This builds a
site of ``--posts`` posts in a temporary folder, starts the real command
(``python -m feedpub serve``: one uvicorn process) on a free port, checks that
the validators do answer 304, then loads it with Debian's ``wrk`` (``apt-get
install wrk``) or, where wrk is missing, a bounded Python load generator
(httpx on threads, which measures the client as much as the server).

    python benchmarks/serve.py
    python benchmarks/serve.py --duration 20 --connections 64 --python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

CONFIG = """\
[site]
title = "Benchmark"
url = "https://example.com/"

[web]
url = "http://127.0.0.1:{port}/"

[[newsletter]]
name = "weekly"
"""
BODY = "\n\n".join(
    f"Paragraph {n} with [a link](https://example.com/{n}/), **bold** words, 中文 and 🎉."
    for n in range(12)
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_site(folder: Path, port: int, posts: int) -> None:
    (folder / "content" / "posts").mkdir(parents=True)
    (folder / "feedpub.toml").write_text(CONFIG.format(port=port), encoding="utf-8")
    start = datetime(2026, 1, 1, 9, tzinfo=UTC)
    for number in range(posts):
        date = start + timedelta(days=number)
        (folder / "content" / "posts" / f"{date:%Y-%m-%d}-post-{number}.md").write_text(
            f"---\ntitle: Post {number}\ncategories: [c{number % 3}]\n---\n{BODY}\n",
            encoding="utf-8",
        )


@contextmanager
def running_server(site: Path, port: int) -> Iterator[str]:
    env = {**os.environ, "FEEDPUB_SECRET": "benchmark-secret"}
    command = [sys.executable, "-m", "feedpub", "--site", str(site)]
    subprocess.run([*command, "build"], env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("feedpub serve did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wrk(url: str, headers: dict[str, str], duration: int, connections: int,
        threads: int) -> dict[str, float]:
    arguments = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        arguments += ["-H", f"{name}: {value}"]
    output = subprocess.run([*arguments, url], check=True, capture_output=True,
                            text=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if rate is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_second": float(rate.group(1)),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "bad_responses": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def python_load(url: str, headers: dict[str, str], duration: int, connections: int,
                expected: int) -> dict[str, float]:
    """``connections`` threads, each with its own keep-alive connection, for ``duration`` s."""
    stop = time.monotonic() + duration
    counts = [0] * connections
    bad = [0] * connections

    def worker(index: int) -> None:
        with httpx.Client(headers=headers, timeout=10) as client:
            while time.monotonic() < stop:
                if client.get(url).status_code != expected:
                    bad[index] += 1
                counts[index] += 1

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    return {"requests_per_second": sum(counts) / elapsed, "bad_responses": float(sum(bad))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=40)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--python", action="store_true",
                        help="use the Python load generator even when wrk is installed")
    options = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not options.python
    if not use_wrk:
        options.connections = min(options.connections, 16)

    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        site = Path(folder) / "site"
        make_site(site, port, options.posts)
        with running_server(site, port) as base:
            feed = base + "/atom.xml"
            identity = httpx.get(feed, headers={"Accept-Encoding": "identity"})
            packed = httpx.get(feed, headers={"Accept-Encoding": "gzip"})
            cases = {
                "If-None-Match (gzip)": (
                    {"If-None-Match": packed.headers["etag"], "Accept-Encoding": "gzip"}, 304),
                "If-Modified-Since": (
                    {"If-Modified-Since": identity.headers["last-modified"],
                     "Accept-Encoding": "gzip"}, 304),
                "full GET, gzip (for comparison)": ({"Accept-Encoding": "gzip"}, 200),
            }
            results: dict[str, dict[str, float]] = {}
            for name, (headers, expected) in cases.items():
                check = httpx.get(feed, headers=headers)
                if check.status_code != expected:
                    raise SystemExit(f"{name}: got {check.status_code}, expected {expected}")
                if use_wrk:
                    results[name] = wrk(feed, headers, options.duration, options.connections,
                                        options.threads)
                else:
                    results[name] = python_load(feed, headers, options.duration,
                                                options.connections, expected)
                print(f"{name:34} {results[name]['requests_per_second']:9.0f} req/s",
                      file=sys.stderr)
    print(json.dumps({
        "load_generator": "wrk" if use_wrk else "python-httpx-threads",
        "cpus": os.cpu_count(),
        "connections": options.connections,
        "duration_s": options.duration,
        "feed_bytes": len(identity.content),
        "feed_gzip_bytes": int(packed.headers["content-length"]),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
