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
    # Bounce and complaint webhooks of the relays (feedpub/web/webhooks.py).
    "webhook_ses": "webhooks/ses",
    "webhook_postmark": "webhooks/postmark",
    "webhook_mailgun": "webhooks/mailgun",
    "webhook_sendgrid": "webhooks/sendgrid",
    # The operator's dashboard (feedpub/web/admin.py), mounted once a password is set.
    "admin": "admin/",
    "admin_login": "admin/login",
    "admin_logout": "admin/logout",
    "admin_api": "admin/api/{panel}",
    "admin_subscribers": "admin/subscribers",
    "admin_export": "admin/subscribers.csv",
    "admin_subscriber": "admin/subscribers/{subscriber}",
    "admin_subscriber_action": "admin/subscribers/{subscriber}/{action}",
    "admin_static": "admin/static/{name}",
    # Written into public/ by `feedpub build` and `digest send`, at site.url.
    "atom": "atom.xml",
    "rss": "rss.xml",
    "json": "feed.json",
    "feed_stylesheet": "feed.xsl",
    "category_atom": "categories/{category}/atom.xml",
    "category_rss": "categories/{category}/rss.xml",
    "edition": "editions/{newsletter}/{edition}.html",
    # Pages, written by `feedpub build` when [pages] is enabled.
    "archive": "archive/",
    "year": "archive/{year}/",
    "category_page": "categories/{category}/",
    "newsletter_page": "editions/{newsletter}/",
    "feeds_page": "feeds/",
    "stylesheet": "style.css",
    "sitemap": "sitemap.xml",
    "robots": "robots.txt",
    "not_found": "404.html",
    # Email's pictures of formulas (feedpub/mathml.py), named by a hash of the TeX.
    "math_image": "math/{name}.png",
}
"""Route name -> path below the base URL, with ``{parameter}`` slots."""

CATEGORIES_DIR: Final = "categories"
"""The folder of ``public/`` that holds the category feeds."""

_PARAMETER = re.compile(r"\{(\w+)\}")


def path_for(route: str, /, **parameters: str) -> str:
    """The path of ``route`` with each slot filled, percent-encoded, no leading ``/``.

    Raises KeyError for an unknown route or a missing parameter, ValueError for a
    parameter the route does not take.
    """
    template = ROUTES[route]
    slots = set(_PARAMETER.findall(template))
    extra = set(parameters) - slots
    if extra:
        raise ValueError(f"route {route!r} takes no parameter {sorted(extra)[0]!r}")
    return _PARAMETER.sub(lambda match: quote(parameters[match.group(1)], safe=""), template)


def url_for(base: str, route: str, /, **parameters: str) -> str:
    """``base`` (which ends in ``/``) joined with :func:`path_for`."""
    return base + path_for(route, **parameters)


def starlette_path(route: str) -> str:
    """The route's path as Starlette mounts it: a leading ``/``, the same ``{slots}``."""
    return "/" + ROUTES[route]


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


def quote_path(relpath: str) -> str:
    """A path below ``public/`` as it goes into a URL: each segment percent-encoded."""
    return quote(relpath, safe="/")
