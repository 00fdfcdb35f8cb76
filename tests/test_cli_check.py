"""``feedpub check`` through the real command line: both formats, exit statuses."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from feedpub.cli import main
from tests.conftest import SiteFactory

CLEAN = '---\ntitle: "Clean"\ndate: 2025-01-01\n---\nA plain paragraph.\n'
WARNED = (
    '---\ntitle: "Warned"\ndate: 2025-01-02\n---\n\n### 一、背景一、背景\n\n'
    "Hello {{ name }}.\n"
)
BROKEN = '---\ntitle: "Broken\ndate: 2025-01-03\n---\nText.\n'
LATER = '---\ntitle: "Later"\ndate: 2030-06-01\n---\nSoon.\n'
NOW = ["--now", "2026-01-01T00:00:00+00:00"]
LINE = re.compile(
    r"^(?P<path>[^:]+):(?P<line>\d+):(?P<column>\d+): "
    r"(?P<severity>error|warning|info) (?P<code>[a-z-]+): (?P<message>.+)$"
)


def run(site: Any, *args: str) -> Result:
    return CliRunner().invoke(main, ["--site", str(site), "check", *args])


def test_a_clean_site_exits_0(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-01-clean.md": CLEAN})
    result = run(site, *NOW)
    assert result.exit_code == 0, result.output
    assert result.output == "0 errors, 0 warnings in 1 post\n"


def test_text_output_one_line_per_finding_then_a_summary(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({
        "2025-01-02-warned.md": WARNED,
        "2025-01-01-clean.md": CLEAN,
        "2030-06-01-later.md": LATER,
    })
    result = run(site, *NOW)
    assert result.exit_code == 0, result.output
    *lines, summary = result.output.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["path"], int(m["line"]), int(m["column"]), m["severity"], m["code"])
            for m in parsed if m] == [
        ("content/posts/2025-01-02-warned.md", 6, 9, "warning", "repeated-text"),
        ("content/posts/2025-01-02-warned.md", 8, 7, "warning", "template-syntax"),
        ("content/posts/2030-06-01-later.md", 3, 1, "info", "future-date"),
    ]
    assert summary == "0 errors, 2 warnings, 1 info in 3 posts"


def test_strict_makes_warnings_fail(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-02-warned.md": WARNED})
    assert run(site, *NOW).exit_code == 0
    strict = run(site, "--strict", *NOW)
    assert strict.exit_code == 1
    assert strict.output.endswith("0 errors, 2 warnings in 1 post\n")


def test_info_alone_does_not_fail_strict(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2030-06-01-later.md": LATER})
    assert run(site, "--strict", *NOW).exit_code == 0
    # Once its date has passed, the post is simply published: nothing to say.
    after = run(site, "--now", "2031-01-01T00:00:00+00:00")
    assert after.output == "0 errors, 0 warnings in 1 post\n"


def test_an_unreadable_post_exits_1_and_names_its_line(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2025-01-03-broken.md": BROKEN, "2025-01-01-clean.md": CLEAN})
    result = run(site, *NOW)
    assert result.exit_code == 1
    first = LINE.match(result.output.splitlines()[0])
    assert first is not None
    assert first["path"] == "content/posts/2025-01-03-broken.md"
    assert (first["severity"], first["code"]) == ("error", "content-error")
    assert 1 <= int(first["line"]) <= 4
    assert result.output.splitlines()[-1] == "1 error, 0 warnings in 2 posts"
    assert "Traceback" not in result.output


def test_json_is_a_list_of_findings(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({
        "2025-01-02-warned.md": WARNED,
        "2025-01-03-broken.md": BROKEN,
        "2025-01-04-中文.md": '---\ntitle: "中文"\ndate: 2025-01-04\n---\n你好世界你好世界\n',
    })
    result = run(site, "--format", "json", *NOW)
    assert result.exit_code == 1
    findings = json.loads(result.output)
    assert [set(f) for f in findings] == [
        {"path", "line", "column", "severity", "code", "message"}
    ] * len(findings)
    assert [(f["path"], f["line"], f["column"], f["code"]) for f in findings] == [
        ("content/posts/2025-01-02-warned.md", 6, 9, "repeated-text"),
        ("content/posts/2025-01-02-warned.md", 8, 7, "template-syntax"),
        ("content/posts/2025-01-03-broken.md", findings[2]["line"], 1, "content-error"),
        ("content/posts/2025-01-04-中文.md", 5, 5, "repeated-text"),
    ]
    assert "你好世界" in findings[3]["message"]


def test_json_with_no_findings_is_an_empty_list(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2025-01-01-clean.md": CLEAN})
    result = run(site, "--format", "json", "--strict", *NOW)
    assert result.exit_code == 0
    assert json.loads(result.output) == []


def test_json_strict_exit_status(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-02-warned.md": WARNED})
    assert run(site, "--format", "json", *NOW).exit_code == 0
    assert run(site, "--format", "json", "--strict", *NOW).exit_code == 1


def test_a_config_error_exits_2_on_one_line(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2025-01-01-clean.md": CLEAN}, config='[site]\ntitle = "T"\nurl = "nope"\n')
    result = run(site, *NOW)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "feedpub.toml:3" in result.output and "site.url" in result.output


def test_bad_usage_exits_2(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-01-clean.md": CLEAN})
    assert run(site, "--format", "xml").exit_code == 2
    bad_now = run(site, "--now", "yesterday")
    assert bad_now.exit_code == 2
    assert "--now" in bad_now.output


# --- --fix, --diff, --select ----------------------------------------------------------

DOUBLED = (
    '---\r\ntitle: "Doubled"\r\ndate: 2025-01-05\r\n---\r\n\r\n'
    "### 一段重要的標題文字一段重要的標題文字\r\n\r\n"
    "See {{ site.url }}/about/ and {% include x.html %}."
)


def test_diff_prints_what_fix_would_change_and_writes_nothing(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2025-01-05-doubled.md": DOUBLED.encode()})
    path = site / "content/posts/2025-01-05-doubled.md"
    result = run(site, "--diff", *NOW)
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == DOUBLED.encode()
    assert result.stdout.startswith(
        "--- a/content/posts/2025-01-05-doubled.md\n+++ b/content/posts/2025-01-05-doubled.md\n"
    )
    # CRLF lines stay CRLF in the diff (Result.stdout shows them as LF).
    assert "-### 一段重要的標題文字一段重要的標題文字\r\n+### 一段重要的標題文字\r\n".encode() in (
        result.stdout_bytes
    )
    assert "+See https://example.com/about/ and {% include x.html %}.\n" in result.stdout
    assert result.stdout.endswith("\\ No newline at end of file\n")
    assert "--fix would make 2 fixes in 1 post" in result.stderr
    assert run(site, "--diff", "--strict", *NOW).exit_code == 1  # the findings still there


def test_fix_writes_then_reports_what_is_left(
    make_site: SiteFactory, cli_env: Callable[..., Any]
) -> None:
    site = make_site({"2025-01-05-doubled.md": DOUBLED.encode(), "2025-01-01-clean.md": CLEAN})
    path = site / "content/posts/2025-01-05-doubled.md"
    result = run(site, "--fix", "--strict", *NOW)
    assert result.exit_code == 1, result.output  # the include is left, and --strict
    assert path.read_bytes() == (
        '---\r\ntitle: "Doubled"\r\ndate: 2025-01-05\r\n---\r\n\r\n'
        "### 一段重要的標題文字\r\n\r\n"
        "See https://example.com/about/ and {% include x.html %}."
    ).encode()
    lines = result.output.splitlines()
    assert lines[0].startswith("content/posts/2025-01-05-doubled.md:6:5: fixed repeated-text: ")
    assert lines[1].startswith("content/posts/2025-01-05-doubled.md:8:5: fixed template-syntax: ")
    assert lines[2] == "made 2 fixes in 1 post"
    left = LINE.match(lines[3])
    assert left is not None and left["code"] == "template-syntax" and "include" in left["message"]
    assert lines[4:] == ["0 errors, 1 warning in 2 posts"]
    again = run(site, "--fix", *NOW)
    assert again.exit_code == 0
    assert again.output.splitlines()[0] == "nothing to fix"
    assert run(site, "--diff", *NOW).stdout == ""


def test_select_fixes_only_that_code(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-05-doubled.md": DOUBLED.encode()})
    result = run(site, "--fix", "--select", "template-syntax", "--format", "json", *NOW)
    assert result.exit_code == 0, result.output
    text = (site / "content/posts/2025-01-05-doubled.md").read_text(encoding="utf-8")
    assert "https://example.com/about/" in text and "一段重要的標題文字一段重要的標題文字" in text
    assert [f["code"] for f in json.loads(result.stdout)] == ["repeated-text", "template-syntax"]
    assert "fixed template-syntax" in result.stderr


def test_fix_options_are_checked(make_site: SiteFactory, cli_env: Callable[..., Any]) -> None:
    site = make_site({"2025-01-05-doubled.md": DOUBLED.encode()})
    for args in (["--fix", "--diff"], ["--select", "repeated-text"],
                 ["--fix", "--select", "missing-alt"], ["--fix", "--select", "nonsense"]):
        result = run(site, *args, *NOW)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert (site / "content/posts/2025-01-05-doubled.md").read_bytes() == DOUBLED.encode()
    both = run(site, "--fix", "--select", "repeated-text,template-syntax", *NOW)
    assert both.exit_code == 0, both.output
