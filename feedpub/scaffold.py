"""``feedpub init``: a new site folder with a config, a first post and a secret."""

from __future__ import annotations

import secrets
from datetime import datetime
from importlib.resources import files
from pathlib import Path

from feedpub.config import CONFIG_NAME, SECRET_FILE_NAME
from feedpub.errors import ConfigError


def _template(name: str) -> str:
    return files("feedpub").joinpath("templates", "init", name).read_text(encoding="utf-8")


def init_site(
    directory: Path, *, now: datetime, title: str = "My feedpub site",
    url: str = "https://example.com/", pages: bool = True,
) -> list[Path]:
    """Create the site; refuse to touch a folder that already has a config.

    ``pages``: feedpub writes the site's web pages (else another tool does)."""
    config = directory / CONFIG_NAME
    if config.exists():
        raise ConfigError(
            "already exists: this folder is a site; edit it, or pick another folder",
            path=config,
        )
    url = url if url.endswith("/") else url + "/"
    posts = directory / "content" / "posts"
    posts.mkdir(parents=True, exist_ok=True)
    (directory / "templates").mkdir(exist_ok=True)
    first_post = posts / f"{now:%Y-%m-%d}-hello-feeds.md"
    secret = directory / SECRET_FILE_NAME
    gitignore = directory / ".gitignore"
    written = [config, first_post, secret]
    quoted_title = title.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(
        _template("feedpub.toml").format(title=quoted_title, url=url,
                                         pages="true" if pages else "false"),
        encoding="utf-8",
    )
    (directory / "static").mkdir(exist_ok=True)
    if not first_post.exists():
        first_post.write_text(
            _template("first-post.md").replace("{date}", now.isoformat(timespec="seconds")),
            encoding="utf-8",
        )
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        secret.chmod(0o600)
    if not gitignore.exists():
        gitignore.write_text(_template("gitignore"), encoding="utf-8")
        written.append(gitignore)
    return written
