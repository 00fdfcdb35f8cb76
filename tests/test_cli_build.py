from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import feedparser
import pytest
from click.testing import CliRunner

from feedpub.cli import main
from tests.conftest import SiteFactory

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_init_then_build_gives_feeds(tmp_path: Path, cli_env: Any) -> None:
    site = tmp_path / "mysite"
    result = run("init", str(site), "--title", 'Ada\'s "notes"', "--url", "https://ada.example")
    assert result.exit_code == 0, result.output
    assert (site / ".feedpub-secret").stat().st_mode & 0o777 == 0o600
    assert ".feedpub-secret" in (site / ".gitignore").read_text()
    result = run("--site", str(site), "build")
    assert result.exit_code == 0, result.output
    assert "1 published of 1 post (" in result.output
    atom = feedparser.parse((site / "public" / "atom.xml").read_bytes())
    assert atom.bozo == 0
    assert atom.feed.title == 'Ada\'s "notes"'
    assert atom.entries[0].title == "Hello, feeds 👋"
    assert atom.entries[0].link.startswith("https://ada.example/")


def test_init_refuses_to_overwrite_a_site(tmp_path: Path, cli_env: Any) -> None:
    assert run("init", str(tmp_path)).exit_code == 0
    config = (tmp_path / "feedpub.toml").read_text()
    result = run("init", str(tmp_path))
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert (tmp_path / "feedpub.toml").read_text() == config


def test_build_without_a_site_is_one_line_and_exit_2(tmp_path: Path, cli_env: Any) -> None:
    result = run("--site", str(tmp_path), "build")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "feedpub init" in lines[0]


def test_build_with_a_broken_post_exits_1_naming_file_and_line(
    make_site: SiteFactory, cli_env: Any
) -> None:
    site = make_site(posts={
        "2025-01-01-good.md": "---\ntitle: Good\ndate: 2025-01-01\n---\nok\n",
        "2025-01-02-bad.md": "---\ntitle: Bad\ndate: 2025-01-02\ntags: [a, b\n---\nbody\n",
    })
    result = run("--site", str(site), "build", "--now", "2026-01-01T00:00:00+00:00")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "content/posts/2025-01-02-bad.md:" in errors[0]
    assert "Traceback" not in result.output
    assert (site / "public" / "atom.xml").exists()


def test_now_must_carry_an_offset(make_site: SiteFactory, cli_env: Any) -> None:
    site = make_site()
    result = run("--site", str(site), "build", "--now", "2026-01-01T00:00:00")
    assert result.exit_code == 2
    assert "offset" in result.output


def test_the_repository_is_itself_an_example_site(tmp_path: Path, cli_env: Any) -> None:
    site = tmp_path / "example"
    site.mkdir()
    for name in ("feedpub.toml",):
        (site / name).write_bytes((REPO / name).read_bytes())
    for source in (REPO / "content").rglob("*"):
        if source.is_file():
            target = site / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    result = run("--site", str(site), "build", "--now", "2026-01-01T00:00:00+00:00")
    assert result.exit_code == 0, result.output
    atom = feedparser.parse((site / "public" / "atom.xml").read_bytes())
    titles = [entry.title for entry in atom.entries]
    assert "Unfinished thoughts" not in titles
    assert "A post from the future" not in titles
    assert {"Welcome to feedpub 🎉", "用 feedpub 發佈中文電子報 📮"} <= set(titles)


@pytest.mark.slow
def test_the_installed_package_works_outside_the_repository(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(wheel_dir), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = wheel_dir.glob("feedpub-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "feedpub/templates/init/feedpub.toml" in names
    assert "feedpub/templates/feed.xsl" in names
    target = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("FEEDPUB_SITE", None)
    where = subprocess.run(
        [sys.executable, "-c", "import feedpub; print(feedpub.__file__)"],
        cwd=elsewhere, env=env, check=True, capture_output=True, text=True,
    )
    assert where.stdout.startswith(str(target))
    for args in (["init", "site"], ["--site", "site", "build"]):
        done = subprocess.run(
            [sys.executable, "-m", "feedpub", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stderr
    assert (elsewhere / "site" / "public" / "rss.xml").exists()
