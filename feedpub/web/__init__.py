"""``feedpub serve``: the Starlette app that serves ``public/`` and the subscriber pages.

>>> app = create_app(load_settings("mysite"))      # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

The same steps without HTTP are in :mod:`feedpub.web.actions`.
"""

from __future__ import annotations

from feedpub.web.actions import (
    Choice,
    Confirmation,
    Preferences,
    Selection,
    confirm,
    link,
    read_preferences,
    request_subscription,
    save_preferences,
    send_confirmation,
    subscriber_for,
    unsubscribe,
)
from feedpub.web.app import create_app
from feedpub.web.guards import RateLimit, WebLimits

__all__ = [
    "Choice",
    "Confirmation",
    "Preferences",
    "RateLimit",
    "Selection",
    "WebLimits",
    "confirm",
    "create_app",
    "link",
    "read_preferences",
    "request_subscription",
    "save_preferences",
    "send_confirmation",
    "subscriber_for",
    "unsubscribe",
]
