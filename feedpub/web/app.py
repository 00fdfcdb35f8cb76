"""The Starlette app behind ``feedpub serve``: public/ files, and the subscriber pages.

Handlers only read the request, call :mod:`feedpub.web.actions` (in a worker
thread: the store is synchronous) and render a page.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_plus

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from feedpub import urls
from feedpub.audience import FetchCounter
from feedpub.config import Settings
from feedpub.errors import FeedpubError, StoreError
from feedpub.pages import HONEYPOT_FIELD
from feedpub.store import (
    InvalidAddress,
    Mode,
    Status,
    Store,
    Subscription,
    open_store,
    parse_address,
)
from feedpub.tokens import Purpose, TokenError
from feedpub.web import actions
from feedpub.web.admin import admin_routes
from feedpub.web.categories import SiteCategories
from feedpub.web.guards import (
    BodyLimit,
    FormTokens,
    WebLimits,
    make_buckets,
    origin_of,
    posted_from,
    same_origin,
)
from feedpub.web.pages import Pages
from feedpub.web.public import PublicFile, PublicFiles, is_feed_file, prefers_html
from feedpub.web.webhooks import Webhooks

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
"""Hidden from people (and from screen readers); bots fill in every field they see."""
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
FORM_LIMITS: dict[str, Any] = {"max_files": 0, "max_fields": 200}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewsletterField:
    """One newsletter as the subscribe and preferences forms show it."""

    name: str
    title: str
    description: str
    checked: bool
    mode: str


@dataclass(frozen=True)
class CategoryField:
    name: str
    checked: bool
    id: str


def _strings(form: FormData, key: str) -> list[str]:
    return [value for value in form.getlist(key) if isinstance(value, str)]


def _string(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


class WebApp:
    """The state one app instance shares between requests."""

    def __init__(self, settings: Settings, *, store: Store, clock: Clock,
                 limits: WebLimits) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.limits = limits
        self.pages = Pages(settings)
        self.files = PublicFiles(settings.public_dir)
        self.categories = SiteCategories(settings)
        self.form_tokens = FormTokens(settings.require_secret(), limits.form_max_age)
        self.per_client, self.per_address = make_buckets(store, limits)
        self.trusted_origin = origin_of(settings.web.url) or ""
        self.embed_origins = frozenset(settings.web.embed_origins)
        # The subscribe form is also on the site's pages (feedpub build) and, where the
        # owner allows it, on other sites' pages (feedpub embed).
        self.form_origins = frozenset(
            origin for origin in (self.trusted_origin, origin_of(settings.site.url))
            if origin
        ) | self.embed_origins
        self.readers = FetchCounter(store, settings.require_secret())

    # --- helpers -------------------------------------------------------------

    def _(self, message: str) -> str:
        return self.pages.gettext(message)

    def message_page(self, title: str, paragraphs: Sequence[str], *, status: int,
                     headers: dict[str, str] | None = None) -> Response:
        return self.pages.response("message.html", {"title": title, "paragraphs": paragraphs},
                                   status=status, headers=headers)

    def bad_link(self, error: TokenError) -> Response:
        return self.pages.response(
            "bad_link.html", {"title": self._("This link does not work"), "reason": error.message},
            status=400,
        )

    def cross_site(self) -> Response:
        return self.message_page(
            self._("This form was sent from another site"),
            [self._("For your safety, forms on this site are accepted only from its own "
                    "pages. Open the page again and send the form from there.")],
            status=403,
        )

    def newsletter_fields(self, chosen: dict[str, str]) -> list[NewsletterField]:
        return [
            NewsletterField(
                name=n.name, title=n.title, description=n.description,
                checked=n.name in chosen, mode=chosen.get(n.name, Mode.DIGEST.value),
            )
            for n in self.settings.newsletters
        ]

    def category_fields(self, names: Sequence[str], chosen: Sequence[str]) -> list[CategoryField]:
        return [CategoryField(name=name, checked=name in chosen, id=f"category-{index}")
                for index, name in enumerate(names)]

    def selection_from(self, form: FormData, allowed_categories: Sequence[str]
                       ) -> actions.Selection:
        names = set(_strings(form, "newsletter"))
        choices = []
        for newsletter in self.settings.newsletters:
            if newsletter.name in names:
                mode = _string(form, f"mode-{newsletter.name}")
                choices.append(actions.Choice(
                    newsletter.name, Mode(mode) if mode in set(Mode) else Mode.DIGEST,
                ))
        return actions.Selection(
            choices=tuple(choices),
            categories=actions.known_categories(_strings(form, "category"), allowed_categories),
        )

    # --- subscribe -------------------------------------------------------------

    def subscribe_form(self, now: datetime, categories: Sequence[str], *, email: str = "",
                       selection: actions.Selection | None = None,
                       errors: dict[str, str] | None = None, status: int = 200) -> Response:
        if selection is None:
            chosen = {self.settings.newsletters[0].name: Mode.DIGEST.value}
            chosen_categories: Sequence[str] = ()
        else:
            chosen = {c.newsletter: c.mode.value for c in selection.choices}
            chosen_categories = selection.categories
        return self.pages.response("subscribe.html", {
            "title": self._("Subscribe"),
            "email": email,
            "newsletters": self.newsletter_fields(chosen),
            "categories": self.category_fields(categories, chosen_categories),
            "errors": errors or {},
            "form_token": self.form_tokens.issue(now),
            "honeypot": HONEYPOT_FIELD,
        }, status=status)

    def check_inbox(self, background: BackgroundTask | None = None) -> Response:
        """The one answer to every accepted sign-up, whoever the address belongs to."""
        return self.pages.response("check_inbox.html", {"title": self._("Check your inbox")},
                                   background=background)

    async def home(self, request: Request) -> Response:
        found, _ = self.files.locate("")
        if found is not None:
            loaded = self.files.load(found)
            if loaded is not None:
                return self.files.response(loaded, request.headers)
        return await self.subscribe_get(request)

    async def subscribe_get(self, request: Request) -> Response:
        now = self.clock()
        categories = await run_in_threadpool(self.categories.names, now)
        return self.subscribe_form(now, categories)

    async def subscribe_post(self, request: Request) -> Response:
        response = await self._subscribe_post(request)
        return self.allow_embedding(request, response)

    async def subscribe_preflight(self, request: Request) -> Response:
        """CORS preflight, for an embedded form that posts with ``fetch``."""
        response = self.allow_embedding(request, Response(status_code=204))
        if "access-control-allow-origin" in response.headers:
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "86400"
        return response

    def allow_embedding(self, request: Request, response: Response) -> Response:
        """Let the pages of ``web.embed_origins`` read the answer to their form."""
        origin = posted_from(request.headers, self.embed_origins)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.append("Vary", "Origin")
        return response

    async def _subscribe_post(self, request: Request) -> Response:
        now = self.clock()
        if not same_origin(request.headers, trusted_origins=self.form_origins):
            return self.cross_site()
        client = request.client.host if request.client else "unknown"
        wait = await run_in_threadpool(self.per_client.take, client, now)
        if wait is not None:
            return self.message_page(
                self._("Too many requests"),
                [self._("Please wait a few minutes, then try again.")],
                status=429, headers={"Retry-After": str(int(wait.total_seconds()))},
            )
        async with request.form(**FORM_LIMITS) as form:
            if _string(form, HONEYPOT_FIELD):
                return self.check_inbox()
            categories = await run_in_threadpool(self.categories.names, now)
            email = _string(form, "email").strip()
            selection = self.selection_from(form, categories)
            errors: dict[str, str] = {}
            # A form printed on a page (the site's, or another site's that the owner
            # allows) carries no fresh token; the browser's Origin vouches for it instead.
            embedded = _string(form, "embedded") == "1" and posted_from(
                request.headers, self.form_origins
            ) is not None
            if not embedded and not self.form_tokens.valid(_string(form, "form_token"), now):
                errors["form"] = self._("This form was open for too long. Please send it again.")
            if not email:
                errors["email"] = self._("Enter your email address.")
            if not selection.choices:
                errors["newsletter"] = self._("Choose at least one newsletter.")
            address_key = ""
            if email and "email" not in errors:
                try:
                    address_key = parse_address(email).key
                except InvalidAddress:
                    errors["email"] = self._(
                        "This is not an email address. Check it and try again."
                    )
            if errors:
                return self.subscribe_form(now, categories, email=email, selection=selection,
                                           errors=errors, status=400)
        if await run_in_threadpool(self.per_address.take, address_key, now) is not None:
            return self.check_inbox()
        confirmation = await run_in_threadpool(
            actions.request_subscription, self.store, self.settings, email, selection, now=now,
        )
        if confirmation is None:
            return self.check_inbox()
        return self.check_inbox(BackgroundTask(self.send_confirmation, confirmation, now))

    def send_confirmation(self, confirmation: actions.Confirmation, now: datetime) -> None:
        """Runs after the answer is sent, so its timing tells nobody whether mail went out."""
        try:
            actions.send_confirmation(self.settings, confirmation, now=now)
        except FeedpubError as exc:
            log.error("could not send the confirmation email to subscriber %d: %s",
                      confirmation.subscriber_id, exc)

    # --- confirm, unsubscribe, preferences ---------------------------------------

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            subscriber = await run_in_threadpool(
                actions.confirm, self.store, self.settings, token, now=self.clock(),
            )
        except TokenError as error:
            return self.bad_link(error)
        preferences = actions.link(self.settings, Purpose.PREFERENCES, subscriber,
                                   now=self.clock())
        return self.pages.response("confirmed.html", {
            "title": self._("You are subscribed"),
            "email": subscriber.email,
            "preferences_url": preferences,
        })

    async def unsubscribe_get(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            subscriber = await run_in_threadpool(
                actions.subscriber_for, self.store, self.settings, Purpose.UNSUBSCRIBE, token,
                now=self.clock(),
            )
        except TokenError as error:
            return self.bad_link(error)
        return self.pages.response("unsubscribe.html", {
            "title": self._("Unsubscribe"),
            "email": subscriber.email,
            "already": subscriber.status in (Status.UNSUBSCRIBED, Status.BOUNCED),
        })

    async def unsubscribe_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        body = await request.body()
        async with request.form(**FORM_LIMITS) as form:
            one_click = _string(form, "List-Unsubscribe") == "One-Click" or (
                ONE_CLICK_BODY in unquote_plus(body.decode("latin-1"))
            )
        try:
            subscriber = await run_in_threadpool(
                actions.unsubscribe, self.store, self.settings, token, now=self.clock(),
                one_click=one_click,
            )
        except TokenError as error:
            if one_click:
                return PlainTextResponse(f"{error.message}\n", status_code=400)
            return self.bad_link(error)
        if one_click:
            return PlainTextResponse("Unsubscribed.\n", headers={"Cache-Control": "no-store"})
        return self.pages.response("unsubscribed.html", {
            "title": self._("You are unsubscribed"),
            "email": subscriber.email,
        })

    def preferences_page(self, preferences: actions.Preferences, categories: Sequence[str],
                         *, saved: bool = False, errors: dict[str, str] | None = None,
                         status: int = 200,
                         selection: actions.Selection | None = None) -> Response:
        subscriptions: Sequence[Subscription] = preferences.subscriptions
        if selection is None:
            chosen = {s.newsletter: s.mode.value for s in subscriptions}
            chosen_categories = sorted({c for s in subscriptions for c in s.categories})
        else:
            chosen = {c.newsletter: c.mode.value for c in selection.choices}
            chosen_categories = list(selection.categories)
        offered = sorted(set(categories) | set(chosen_categories), key=str.casefold)
        return self.pages.response("preferences.html", {
            "title": self._("Your subscription"),
            "email": preferences.subscriber.email,
            "active": preferences.subscriber.status == Status.ACTIVE,
            "newsletters": self.newsletter_fields(chosen),
            "categories": self.category_fields(offered, chosen_categories),
            "saved": saved,
            "errors": errors or {},
            "unsubscribe_url": actions.link(self.settings, Purpose.UNSUBSCRIBE,
                                            preferences.subscriber, now=self.clock()),
        }, status=status)

    async def preferences_get(self, request: Request) -> Response:
        token = request.path_params["token"]
        now = self.clock()
        try:
            preferences = await run_in_threadpool(
                actions.read_preferences, self.store, self.settings, token, now=now,
            )
        except TokenError as error:
            return self.bad_link(error)
        categories = await run_in_threadpool(self.categories.names, now)
        return self.preferences_page(preferences, categories)

    async def preferences_post(self, request: Request) -> Response:
        if not same_origin(request.headers, trusted_origins={self.trusted_origin}):
            return self.cross_site()
        token = request.path_params["token"]
        now = self.clock()
        categories = await run_in_threadpool(self.categories.names, now)
        try:
            current = await run_in_threadpool(
                actions.read_preferences, self.store, self.settings, token, now=now,
            )
        except TokenError as error:
            return self.bad_link(error)
        allowed = sorted(set(categories) | {c for s in current.subscriptions
                                            for c in s.categories})
        async with request.form(**FORM_LIMITS) as form:
            selection = self.selection_from(form, allowed)
        if not selection.choices:
            return self.preferences_page(current, categories, selection=selection, status=400,
                                         errors={"newsletter": self._(
                                             "Choose at least one newsletter, or unsubscribe.")})
        try:
            saved = await run_in_threadpool(
                actions.save_preferences, self.store, self.settings, token, selection, now=now,
            )
        except TokenError as error:
            return self.bad_link(error)
        return self.preferences_page(saved, categories, saved=True)

    # --- the rest ----------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        def ping() -> None:
            with self.store.read() as conn:
                conn.execute(sa.text("SELECT 1"))

        headers = {"Cache-Control": "no-store"}
        try:
            await run_in_threadpool(ping)
        except (sa.exc.SQLAlchemyError, StoreError) as exc:
            log.error("health check: the store is unreachable: %s", exc)
            return PlainTextResponse("store unreachable\n", status_code=503, headers=headers)
        return PlainTextResponse("ok\n", headers=headers)

    async def public_file(self, request: Request) -> Response:
        path = request.path_params["path"]
        found, needs_slash = self.files.locate(path)
        if needs_slash:
            last = path.rstrip("/").rpartition("/")[2]
            return RedirectResponse(quote(last) + "/", status_code=301)
        loaded = self.files.load(found) if found is not None else None
        if loaded is None:
            not_found, _ = self.files.locate(urls.path_for("not_found"))
            page = self.files.load(not_found) if not_found is not None else None
            if page is not None:  # the site's own 404 page, from `feedpub build`
                body = page.body if page.body is not None else Path(page.path).read_bytes()
                return Response(body, status_code=404, media_type="text/html; charset=utf-8")
            return self.message_page(
                self._("Page not found"),
                [self._("There is nothing at this address.")],
                status=404,
            )
        if is_feed_file(path) and prefers_html(request.headers.get("accept", "")):
            # A person opened the feed's link: a page about it, not raw XML (browsers
            # are removing XSLT). Readers get the feed at the same URL (Vary: Accept).
            return await run_in_threadpool(self.feed_page, path, loaded, request)
        response = self.files.response(loaded, request.headers)
        if request.method == "GET" and response.status_code in (200, 304):
            self.readers.record(self.clock(), request.scope["path"],
                                request.client.host if request.client else "",
                                request.headers.get("user-agent", ""))
        return response

    def feed_page(self, path: str, file: PublicFile, request: Request) -> Response:
        """The page a browser is shown for a feed: what a feed is, the address to copy,
        the subscribe button and the latest posts, read from the feed file itself."""
        from feedpub.feeds import read_feed_summary

        validators = {"ETag": file.page_etag, "Last-Modified": file.last_modified,
                      "Cache-Control": self.files.cache_control, "Vary": "Accept"}
        if file.not_modified(request.headers, page=True):
            return Response(status_code=304, headers=validators)
        data = file.body if file.body is not None else Path(file.path).read_bytes()
        try:
            summary = read_feed_summary(data, limit=self.settings.feed.limit)
        except FeedpubError as exc:
            log.error("cannot show %s as a page: %s", path, exc)
            return self.files.response(file, request.headers)
        return self.pages.response("feed.html", {
            "title": summary.title or self.settings.site.title,
            "feed_url": self.settings.site.url + quote(path),
            "items": summary.items,
            "newsletters": self.settings.newsletters,
            "format_date": self.pages.language.date,
        }, headers=validators)

    async def flush_readers(self, *, final: bool = False) -> None:
        """Writes the counted feed fetches every FLUSH_SECONDS (and at shutdown):
        a database that is down costs a log line, never a request."""
        while True:
            if not final:
                for _ in range(int(FetchCounter.FLUSH_SECONDS)):
                    await asyncio.sleep(1)
                    if self.readers.due:
                        break
            try:
                await run_in_threadpool(self.readers.flush)
            except (FeedpubError, sa.exc.SQLAlchemyError) as exc:
                log.error("could not write the feed readers counted: %s", exc)
            if final:
                return


def create_app(
    settings: Settings,
    *,
    now: Clock | None = None,
    store: Store | None = None,
    limits: WebLimits | None = None,
) -> Starlette:
    """The web app for ``settings``: ``uvicorn.run(create_app(settings))``.

    ``now`` replaces the clock (tests); ``store`` is an open store to use
    (else the app opens ``database.url`` now, migrating it, and closes it on
    shutdown); ``limits`` sets the rate limits. Raises ConfigError without a
    secret, StoreError when the database cannot be opened.
    """
    settings.require_secret()
    owned = store is None
    web = WebApp(
        settings,
        store=open_store(settings.database.url) if store is None else store,
        clock=now or utc_now,
        limits=limits or WebLimits(),
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        flusher = asyncio.create_task(web.flush_readers())
        try:
            yield
        finally:
            flusher.cancel()
            with suppress(asyncio.CancelledError):
                await flusher
            await web.flush_readers(final=True)
            if owned:
                web.store.close()

    hooks = Webhooks(settings, web.store, web.clock, os.environ)
    path = urls.starlette_path
    routes = [
        Route(path("home"), web.home, methods=["GET"]),
        Route(path("subscribe"), web.subscribe_get, methods=["GET"]),
        Route(path("subscribe"), web.subscribe_post, methods=["POST"]),
        Route(path("subscribe"), web.subscribe_preflight, methods=["OPTIONS"]),
        Route(path("confirm"), web.confirm, methods=["GET"]),
        Route(path("unsubscribe"), web.unsubscribe_get, methods=["GET"]),
        Route(path("unsubscribe"), web.unsubscribe_post, methods=["POST"]),
        Route(path("preferences"), web.preferences_get, methods=["GET"]),
        Route(path("preferences"), web.preferences_post, methods=["POST"]),
        Route(path("healthz"), web.healthz, methods=["GET"]),
        *(Route(path(f"webhook_{name}"), getattr(hooks, name), methods=["POST"])
          for name in ("ses", "postmark", "mailgun", "sendgrid")),
        *admin_routes(settings, web.store, web.clock),
        # Everything else is a file of public/ (feeds, edition pages).
        Route("/{path:path}", web.public_file, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(BodyLimit)])
    app.state.web = web
    return app

