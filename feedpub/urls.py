"""The route table: every path feedpub serves or writes, and every link built to one.

A route is named once here. The web app mounts its handlers on these paths,
and every link in a page, an email or a feed is made by :func:`url_for` or one
of the helpers below, so a path cannot be spelt two ways.

Paths are relative to a base URL that ends in ``/``: ``site.url`` for what
``build`` writes into ``public/`` (feeds, edition pages), ``web.url`` for what
``feedpub serve`` answers (subscribe, confirm, unsubscribe, preferences).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

ROUTES: Final[dict[str, str]] = {
    # Served by `feedpub serve` at web.url.
    "home": "",
    "subscribe": "subscribe",
    "confirm": "confirm/{token}",
    "unsubscribe": "unsubscribe/{token}",
    "preferences": "preferences/{token}",
    "healthz": "healthz",
    # Written into public/ by `feedpub build` and `digest send`, at site.url.
    "atom": "atom.xml",
    "rss": "rss.xml",
    "json": "feed.json",
    "feed_stylesheet": "feed.xsl",
    "category_atom": "categories/{category}/atom.xml",
    "category_rss": "categories/{category}/rss.xml",
    "edition": "editions/{newsletter}/{edition}.html",
}
"""Route name -> path below the base URL, with ``{parameter}`` slots."""

CATEGORIES_DIR: Final = "categories"
"""The folder of ``public/`` that holds the category feeds."""

_PARAMETER = re.compile(r"\{(\w+)\}")


def path_for(name: str, **parameters: str) -> str:
    """The path of route ``name`` with each slot filled, percent-encoded, no leading ``/``.

    Raises KeyError for an unknown route or a missing parameter, ValueError for a
    parameter the route does not take.
    """
    template = ROUTES[name]
    slots = set(_PARAMETER.findall(template))
    extra = set(parameters) - slots
    if extra:
        raise ValueError(f"route {name!r} takes no parameter {sorted(extra)[0]!r}")
    return _PARAMETER.sub(lambda match: quote(parameters[match.group(1)], safe=""), template)


def url_for(base: str, name: str, **parameters: str) -> str:
    """``base`` (which ends in ``/``) joined with :func:`path_for`."""
    return base + path_for(name, **parameters)


def starlette_path(name: str) -> str:
    """The route's path as Starlette mounts it: a leading ``/``, the same ``{slots}``."""
    return "/" + ROUTES[name]


def subscriber_url(web_url: str, purpose: str, token: str) -> str:
    """The signed link of a subscriber: ``purpose`` is ``confirm``, ``unsubscribe`` or
    ``preferences`` (a :class:`feedpub.tokens.Purpose` value)."""
    if purpose not in ("confirm", "unsubscribe", "preferences"):
        raise ValueError(f"no subscriber link for {purpose!r}")
    return url_for(web_url, purpose, token=token)


def feed_url(site_url: str, feed_format: str) -> str:
    """Where the site's ``atom``, ``rss`` or ``json`` feed is served."""
    return url_for(site_url, feed_format)


def category_feed_url(site_url: str, category_slug: str, feed_format: str) -> str:
    """Where a category's ``atom`` or ``rss`` feed is served."""
    return url_for(site_url, f"category_{feed_format}", category=category_slug)


def edition_path(newsletter: str, edition_id: str) -> str:
    """Where the "view in browser" page of an edition lives below ``public/``."""
    return path_for("edition", newsletter=newsletter, edition=edition_id)
