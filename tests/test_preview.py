"""`feedpub preview`: the next edition as .html, .txt and .eml; nothing sent or stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.digest import make_editions
from feedpub.store import open_store
from tests.conftest import BASIC_CONFIG, SiteFactory

NOW = "2025-03-01T12:00:00+00:00"


def post(title: str, date: str, body: str = "Some text.", extra: str = "") -> str:
    return f"---\ntitle: \"{title}\"\ndate: {date}\n{extra}---\n{body}\n"


def run(site: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--site", str(site), "preview", *args])


def eml(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_first_run_shows_the_most_recent_posts_and_writes_three_files(
    make_site: SiteFactory, cli_env: Callable[..., Any],
):
    posts = {f"2025-02-{day:02d}-post-{day}.md": post(f"Post {day} 中文", f"2025-02-{day:02d}")
             for day in range(1, 13)}
    posts["2025-04-01-future.md"] = post("Not yet", "2025-04-01")
    site = make_site(posts=posts)
    result = run(site, "--now", NOW)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "nothing pending: showing the 10 most recent posts"
    assert "subject: Test Site: Post 12 中文 (+9 more)" in lines
    assert any(line.startswith("html size: ") and line.endswith("KB (limit 102.0 KB)")
               for line in lines)
    folder = site / ".feedpub-cache" / "preview"
    written = [Path(line.removeprefix("wrote ")) for line in lines if line.startswith("wrote ")]
    assert written == [folder / "weekly.html", folder / "weekly.txt", folder / "weekly.eml",
                       folder / "weekly.web.html"]
    html = written[0].read_text(encoding="utf-8")
    text = written[1].read_text(encoding="utf-8")
    assert "Post 12 中文" in html and "Post 3 中文" in html
    assert "Post 2 中文" not in html and "Not yet" not in html
    assert "subscriber@example.com" in text and "%%FEEDPUB" not in html + text
    message = eml(written[2])
    assert message["Subject"] == "Test Site: Post 12 中文 (+9 more)"
    assert message["To"].addresses[0].addr_spec == "subscriber@example.com"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = message.get_body(("html",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").rstrip("\n") == html.rstrip("\n")
    assert not (site / "feedpub.db").exists(), "preview must not create the database"


def test_out_folder_and_named_newsletter(make_site: SiteFactory, cli_env: Callable[..., Any],
                                         tmp_path: Path):
    config = BASIC_CONFIG + (
        '\n[[newsletter]]\nname = "python"\ntitle = "Python only"\ncategories = ["Python"]\n'
    )
    site = make_site(config=config, posts={
        "2025-02-01-a.md": post("About Python", "2025-02-01", extra="categories: [python]\n"),
        "2025-02-02-b.md": post("About cats", "2025-02-02", extra="categories: [cats]\n"),
    })
    out = tmp_path / "out"
    result = run(site, "--newsletter", "python", "--out", str(out), "--now", NOW)
    assert result.exit_code == 0, result.output
    assert "nothing pending: showing the 1 most recent posts" in result.output
    html = (out / "python.html").read_text(encoding="utf-8")
    assert "About Python" in html and "About cats" not in html
    assert "Python only" in html


def test_unknown_newsletter_is_a_usage_error(make_site: SiteFactory,
                                             cli_env: Callable[..., Any]):
    site = make_site(posts={"2025-02-01-a.md": post("A", "2025-02-01")})
    result = run(site, "--newsletter", "nope", "--now", NOW)
    assert result.exit_code == 2
    assert "no newsletter named 'nope'" in result.output
    assert "Traceback" not in result.output


def test_no_posts_says_so(make_site: SiteFactory, cli_env: Callable[..., Any]):
    site = make_site(posts={"2025-05-01-later.md": post("Later", "2025-05-01")})
    result = run(site, "--now", NOW)
    assert result.exit_code == 1
    assert "nothing to preview" in result.output


def test_a_broken_post_is_reported_and_the_rest_previewed(make_site: SiteFactory,
                                                          cli_env: Callable[..., Any]):
    site = make_site(posts={
        "2025-02-01-good.md": post("Good one", "2025-02-01"),
        "broken.md": "---\ntitle: [unclosed\n---\nbody\n",
    })
    result = run(site, "--now", NOW)
    assert result.exit_code == 1
    assert "broken.md" in result.output
    assert "Good one" in (site / ".feedpub-cache/preview/weekly.html").read_text("utf-8")


def baselined_site_with_a_new_post(make_site: SiteFactory, database_url: str) -> Path:
    """A site whose newsletter has its baseline (an old post), then a new post pending."""
    site = make_site(posts={"2025-02-01-old.md": post("Old post", "2025-02-01")})
    settings = make_site.settings({"FEEDPUB_SECRET": "s", "FEEDPUB_DATABASE_URL": database_url})
    with open_store(database_url) as store:
        make_editions(settings, store, datetime(2025, 2, 2, tzinfo=UTC))  # the baseline
    make_site.write("content/posts/2025-02-20-new.md", post("New post", "2025-02-20"))
    return site


def store_snapshot(database_url: str) -> dict[str, list[Any]]:
    """Every row a preview must leave alone."""
    with open_store(database_url, migrate=False) as store, store.read() as conn:
        return {
            table: [tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]
            for table in ("editions", "announced_entries", "deliveries", "subscribers")
        }


def test_pending_posts_come_from_the_store_which_is_left_unchanged(
    make_site: SiteFactory, cli_env: Callable[..., Any], database_url: str,
):
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    site = baselined_site_with_a_new_post(make_site, database_url)
    before = store_snapshot(database_url)
    result = run(site, "--now", NOW)
    assert result.exit_code == 0, result.output
    assert "pending: 1 posts for the next edition" in result.output
    assert "subject: Test Site: New post" in result.output
    html = (site / ".feedpub-cache/preview/weekly.html").read_text("utf-8")
    assert "New post" in html and "Old post" not in html
    assert store_snapshot(database_url) == before


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_teaches_with_examples(flag: str):
    result = CliRunner().invoke(main, ["preview", flag])
    assert result.exit_code == 0
    assert "feedpub --site mysite preview" in result.output
    assert "--newsletter NAME" in result.output


# --- a test send ---------------------------------------------------------------------


def test_send_to_mails_the_edition_marked_as_a_test_and_records_nothing(
    make_site: SiteFactory, cli_env: Callable[..., Any], database_url: str,
):
    cli_env("FEEDPUB_DATABASE_URL", database_url)
    site = baselined_site_with_a_new_post(make_site, database_url)
    before = store_snapshot(database_url)
    for _ in range(2):  # as many tests as the author likes
        result = run(site, "--send-to", "Ada <ada@example.org>", "--now", NOW)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == (
            "sent a test to Ada <ada@example.org> (nothing recorded)")
    assert store_snapshot(database_url) == before
    sent = sorted((site / "outbox" / "new").iterdir())
    assert len(sent) == 2
    message = eml(sent[0])
    assert message["Subject"] == "[Test] Test Site: New post"
    assert message["To"] == "Ada <ada@example.org>"
    assert message["List-Unsubscribe"]
    preview_file = eml(site / ".feedpub-cache/preview/weekly.eml")
    body = message.get_body(preferencelist=("html",))
    expected = preview_file.get_body(preferencelist=("html",))
    assert body is not None and expected is not None
    # The same message a subscriber gets: only who it is addressed to differs.
    def lines(html: str) -> list[str]:
        return html.replace("ada@example.org", "subscriber@example.com").splitlines()

    assert lines(body.get_content()) == lines(expected.get_content())
    # The next preview still holds the same post: the test changed nothing.
    again = run(site, "--now", NOW)
    assert "pending: 1 posts for the next edition" in again.output


def test_send_to_a_bad_address_or_a_dead_server_says_so(
    make_site: SiteFactory, cli_env: Callable[..., Any],
):
    site = make_site(posts={"2025-02-01-one.md": post("One", "2025-02-01")})
    refused = run(site, "--send-to", "root@localhost", "--now", NOW)
    assert refused.exit_code == 1
    assert "error: test message not sent: 'root@localhost' is a local address" in refused.output
    cli_env("FEEDPUB_MAIL_TRANSPORT", "smtp://127.0.0.1:9?tls=none")
    down = run(site, "--send-to", "ada@example.org", "--now", NOW)
    assert down.exit_code == 1
    assert "error: test message not sent:" in down.output
