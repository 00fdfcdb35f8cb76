"""`feedpub audience import` on an access log written by a real nginx (Debian's) that
served a site's feeds on 127.0.0.1 to clients sending the aggregators' User-Agents."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from feedpub.cli import main
from tests.conftest import SiteFactory, free_port
from tests.test_audience import AGGREGATORS, CHROME, FEEDLY, MINIFLUX, NOT_READERS, READERS

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)

CONFIG = """\
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log combined;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    types {{ application/atom+xml xml; application/feed+json json; }}
    server {{
        listen 127.0.0.1:{port};
        root {public};
    }}
}}
"""


@pytest.fixture
def nginx(make_site: SiteFactory, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, the access log, the site) of nginx serving the site's public/."""
    site = make_site(files={
        "public/atom.xml": "<feed>atom</feed>\n",
        "public/rss.xml": "<rss>rss</rss>\n",
        "public/feed.json": "{}\n",
        "public/categories/python/atom.xml": "<feed>python</feed>\n",
        "public/index.html": "<p>home</p>\n",
    })
    root = tmp_path / "nginx"
    (root / "tmp").mkdir(parents=True)
    port = free_port()
    # As root, nginx's workers would switch to "nobody", who cannot read pytest's folders.
    user = "user root root;" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(CONFIG.format(
        user=user, root=root, port=port, public=site / "public"), encoding="utf-8")
    assert NGINX is not None
    process = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/index.html", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    errors = (root / "error.log").read_text() if (root / "error.log").exists() \
                        else ""
                    pytest.fail(f"nginx did not start: {errors}")
                time.sleep(0.05)
        yield base, root / "access.log", site
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: logs written and closed
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_an_nginx_access_log_is_imported_and_importing_it_again_changes_nothing(
    nginx: tuple[str, Path, Path], database_url: str, cli_env: Callable[..., Any],
) -> None:
    base, access_log, site = nginx
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    with httpx.Client(base_url=base) as client:
        def get(path: str, agent: str, **headers: str) -> httpx.Response:
            return client.get(path, headers={"User-Agent": agent, **headers})

        for agent, _service, _count in AGGREGATORS:
            assert get("/atom.xml", agent).status_code == 200
        # Feedly's count rises later in the day: the latest is kept, not the sum.
        assert get("/atom.xml", FEEDLY.replace("462", "470")).status_code == 200
        assert get("/rss.xml", AGGREGATORS[3][0]).status_code == 200
        # Readers, one of them polling with a conditional GET that nginx answers 304.
        first = get("/atom.xml", MINIFLUX)
        again = get("/atom.xml", MINIFLUX, **{"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert get("/feed.json", READERS[2]).status_code == 200
        assert get("/categories/python/atom.xml", READERS[1]).status_code == 200
        # Agents with a quote and a backslash, which nginx writes escaped.
        odd = 'Odd "Feed" Reader \\ 1.0'
        assert get("/atom.xml", odd).status_code == 200
        # Not readers, or not fetches.
        assert get("/atom.xml", CHROME).status_code == 200
        assert get("/atom.xml", NOT_READERS[2][0]).status_code == 200
        assert get("/missing/atom.xml", READERS[3]).status_code == 404
        assert client.head("/atom.xml", headers={"User-Agent": READERS[4]}).status_code == 200
    written = access_log.read_text(encoding="latin-1")
    assert "Feedly/1.0" in written and "\\x22Feed\\x22" in written  # nginx's own escaping

    runner = CliRunner()
    imported = runner.invoke(main, ["--site", str(site), "audience", "import",
                                    str(access_log)])
    assert imported.exit_code == 0, imported.output
    lines = len(written.splitlines())
    assert imported.output.startswith(f"{lines} lines: {len(AGGREGATORS) + 2 + 5} feed fetches")
    assert "2 by bots and browsers, 0 lines not in the combined format" in imported.output

    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 86400))

    def audience() -> dict[str, Any]:
        result = runner.invoke(main, ["--site", str(site), "status", "--json", "--now", now])
        assert result.exit_code == 0, result.output
        found: dict[str, Any] = json.loads(result.output)["audience"]
        return found

    first_import = audience()
    readers = first_import["feed_readers"]
    expected = {service: count for _agent, service, count in AGGREGATORS}
    expected["Feedly"] = 470
    # Inoreader's two agents fetched atom.xml within a second: the larger count is
    # kept for it, and rss.xml has a count of its own.
    expected["Inoreader"] = 114 + 114
    assert readers["services"] == expected
    # Miniflux (its 304 too), NetNewsWire, Tiny Tiny RSS and the odd one, all from 127.0.0.1.
    assert readers["other_readers"] == 4
    assert readers["complete"] is True
    assert readers["total"] == sum(expected.values()) + 4
    assert {feed["path"] for feed in readers["feeds"]} == {
        "/atom.xml", "/rss.xml", "/feed.json", "/categories/python/atom.xml"}

    # The same log again, and rotated and compressed as logrotate leaves it.
    again = runner.invoke(main, ["--site", str(site), "audience", "import", str(access_log)])
    assert again.exit_code == 0, again.output
    rotated = access_log.with_name("access.log.2.gz")
    rotated.write_bytes(gzip.compress(access_log.read_bytes()))
    again = runner.invoke(main, ["--site", str(site), "audience", "import", str(rotated)])
    assert again.exit_code == 0, again.output
    assert audience() == first_import
