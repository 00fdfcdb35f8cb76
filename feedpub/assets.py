"""The files a site publishes beside its pages, and where a link to one resolves.

One resolver serves the build (feeds, pages, email) and ``check``, so ``check``
warns exactly when a published link would be broken:

- ``static/<path>`` is published at ``<path>``;
- a file beside a page bundle's ``index.md`` is published beside the bundle's
  permalink, so ``![](chart.png)`` works in the editor and on the page alike;
- any other non-Markdown file under ``content/`` (``content/images/…``, a file
  beside a flat post) is published at its path below ``content/``.

A relative link to a file (``../images/chart.png``, ``chart.png``) is read from
the post's file, as every editor and GitHub read it, and points at the place
that file is published. A link to a page (no file suffix, or ``.html``) and a
root-relative link (``/img/x.png``) resolve against the post's permalink and the
site, as a browser would resolve them.

Only files inside the site are ever published: a symlink that leads out of it
is left out, and a hidden file (``.DS_Store``, ``.git``) too.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from feedpub.content import POST_SUFFIXES

PAGE_SUFFIXES = frozenset({"", ".html", ".htm", ".php", ".asp", ".aspx", ".xml", ".json"})
"""Link targets that name a page rather than a file: resolved against the permalink."""
BUNDLE_INDEXES = frozenset(f"index{suffix}" for suffix in POST_SUFFIXES)


@dataclass(frozen=True)
class SiteLayout:
    """Where a site keeps what it publishes (the parts of Settings the resolver needs,
    small enough to send to every build worker)."""

    site_dir: Path
    site_url: str

    @property
    def content_dir(self) -> Path:
        return self.site_dir / "content"

    @property
    def static_dir(self) -> Path:
        return self.site_dir / "static"


@dataclass(frozen=True)
class Asset:
    source: Path
    relpath: str
    """Where it is published below ``public/`` (POSIX, no leading ``/``)."""


def is_file_link(path: str) -> bool:
    """Whether a link's path names a file (``x.png``), not a page (``about/``, ``x.html``)."""
    return not path.endswith("/") and PurePosixPath(path).suffix.lower() not in PAGE_SUFFIXES


def link_source(layout: SiteLayout, post_relpath: str, target: str) -> Path | None:
    """The file inside the site that a relative file link in a post names, read from the
    post's folder; None when ``target`` is not such a link (a URL, a page, a
    root-relative path, a fragment) or leaves the site."""
    if not target or target.startswith(("#", "?", "/")) or "{{" in target or "{%" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path or not is_file_link(path):
        return None
    folder = posixpath.dirname(post_relpath)
    relpath = posixpath.normpath(posixpath.join(folder, path))
    if relpath.startswith("../") or relpath == "..":
        return None
    return layout.site_dir / relpath


def root_sources(layout: SiteLayout, target: str) -> list[Path]:
    """Where a root-relative file link (``/img/x.png``) may come from: ``static/`` or
    ``content/``. Empty when ``target`` is not such a link."""
    if not target.startswith("/") or target.startswith("//"):
        return []
    path = unquote(urlsplit(target).path)
    if not is_file_link(path):
        return []
    inner = posixpath.normpath(path.lstrip("/"))
    if inner.startswith(".."):
        return []
    return [layout.static_dir / inner, layout.content_dir / inner]


def published_relpath(layout: SiteLayout, source: Path, bundles: dict[Path, str]) -> str | None:
    """Where ``source`` is published below ``public/``; None when it is not published.

    ``bundles`` maps each page bundle's folder to its post's permalink path (below
    the site URL, no leading ``/``).
    """
    for folder, page_path in bundles.items():
        if source.is_relative_to(folder):
            inner = source.relative_to(folder).as_posix()
            return None if inner in BUNDLE_INDEXES else page_path + inner
    for root in (layout.static_dir, layout.content_dir):
        if source.is_relative_to(root):
            return source.relative_to(root).as_posix()
    return None


def resolve_link(
    layout: SiteLayout, post_relpath: str, bundle_page: str | None, target: str
) -> str | None:
    """The absolute URL a relative file link in a post points at, once published; None
    when the link resolves against the permalink as it is (pages, URLs, fragments).

    ``bundle_page`` is the post's permalink path when the post is a page bundle
    (its own files are published beside it, so links to them need no change).
    """
    source = link_source(layout, post_relpath, target)
    if source is None:
        return None
    post_folder = (layout.site_dir / post_relpath).parent
    if bundle_page is not None and source.is_relative_to(post_folder):
        return None
    relpath = published_relpath(layout, source, {})
    if relpath is None:
        return None
    suffix = target[len(urlsplit(target).path):]  # ?query and #fragment, kept
    return layout.site_url + quote(relpath) + suffix


def is_bundle(post_relpath: str) -> bool:
    return PurePosixPath(post_relpath).name in BUNDLE_INDEXES


def find_assets(layout: SiteLayout, posts_dir: Path, bundles: dict[Path, str]) -> list[Asset]:
    """Every file to publish beside the pages: ``static/``, non-Markdown files under
    ``content/`` (those of the page bundles in ``bundles`` beside their pages; those of
    other bundles, drafts and future posts, not at all). Sorted by where they go."""
    all_bundles = {path.parent
                   for path in _files(posts_dir, lambda _, name: name in BUNDLE_INDEXES)}
    # Strings, not Paths: content/posts may hold 10,000 posts to pass over.
    posts_folder = str(posts_dir) + os.sep

    def not_a_post(folder: str, name: str) -> bool:
        return not (name.lower().endswith(POST_SUFFIXES)
                    and (folder + os.sep).startswith(posts_folder))

    assets: dict[str, Asset] = {}
    for root in (layout.content_dir, layout.static_dir):
        for path in _files(root, not_a_post):
            folder = next((b for b in all_bundles if path.is_relative_to(b)), None)
            if folder is not None and folder not in bundles:
                continue  # a bundle that is not published (a draft, a future post)
            relpath = published_relpath(layout, path, bundles)
            if relpath is not None:
                assets.setdefault(relpath, Asset(path, relpath))
    return [assets[relpath] for relpath in sorted(assets)]


def _files(root: Path, wanted: Callable[[str, str], bool] = lambda folder, name: True,
           ) -> Iterator[Path]:
    """Every regular file below ``root``, not hidden, not behind a link that leaves the
    folder, whose (folder, name) is ``wanted``."""
    if not root.is_dir():
        return
    real_root = root.resolve()
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith("~") or not wanted(folder, name):
                continue
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                continue
            if path.is_file():
                yield path


def bundle_folders(layout: SiteLayout, pages: Iterable[tuple[str, str]]) -> dict[Path, str]:
    """(post source relpath, permalink path) of published posts -> their bundle folders."""
    return {
        (layout.site_dir / source).parent: page_path
        for source, page_path in pages
        if is_bundle(source)
    }
