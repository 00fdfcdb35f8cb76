"""The app's HTML pages: jinja2 templates in the site's language, the site's overrides first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import HTMLResponse

from feedpub import templating, urls
from feedpub.config import Settings
from feedpub.i18n import Language, site_language
from feedpub.pages import feed_links

PAGE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Tokens live in these pages' URLs: never send them to another site. ``same-origin``
    # (not ``no-referrer``) keeps the Origin header on the page's own form posts.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Pages:
    """Renders ``templates/web/<name>`` into a response; built once per app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.language: Language = site_language(
            settings.site.language, settings.site.tz, config_path=settings.config_path
        )
        self.env = templating.template_environment(settings, self.language, "web")
        self.globals: dict[str, Any] = {
            "site": settings.site,
            "lang": self.language.tag,
            "dir": self.language.direction,
            "feeds": feed_links(settings),
            "subscribe_url": urls.url_for(settings.web.url, "subscribe"),
            "confirm_days": settings.web.confirm_days,
        }

    def gettext(self, message: str) -> str:
        return self.language.gettext(message)

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        return templating.render_template(self.env, name, {**self.globals, **context})

    def response(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> HTMLResponse:
        return HTMLResponse(
            self.render(name, context),
            status_code=status,
            headers={**PAGE_HEADERS, **(headers or {})},
            background=background,
        )
