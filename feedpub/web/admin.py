"""The operator's dashboard at ``/admin``: the publication at a glance, behind a login.

Off (no route mounted) until ``[admin] password_hash`` or
``FEEDPUB_ADMIN_PASSWORD_HASH`` is set. A login is a signed cookie (own salt,
HttpOnly, SameSite=Strict, Secure over https) that lasts ``session_hours`` and
ends when the password changes. Every post carries the session's CSRF token and
must come from our own origin; login attempts are rate-limited per client and
per account; every change (and each login) is written to the ``admin_audit``
table. Nothing is read from the store before the session is checked, so a
request that is not logged in learns nothing about subscribers, not even from
how long the answer took.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

from feedpub import admin_queries, templating, urls
from feedpub.admin_password import verify_password
from feedpub.config import Settings
from feedpub.i18n import Language, site_language
from feedpub.store import Store
from feedpub.store.schema import Source, Status
from feedpub.store.subscriber_csv import export_subscribers
from feedpub.store.subscribers import forget_subscriber, get_subscriber, unsubscribe_subscriber
from feedpub.web.guards import RateLimit, TokenBuckets, origin_of, same_origin

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
COOKIE = "feedpub_admin"
LOGIN_PER_CLIENT = RateLimit(burst=5, interval=timedelta(minutes=1))
"""Login attempts from one client address."""
LOGIN_PER_ACCOUNT = RateLimit(burst=10, interval=timedelta(minutes=5))
"""Login attempts for one user name, from anywhere: slows a spread-out guessing."""
LOGIN_FORM_MAX_AGE = timedelta(hours=1)
QUEUE_REFRESH_SECONDS = 5
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "admin"
STATIC_FILES: Mapping[str, str] = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
}
ACTIONS = ("unsubscribe", "forget")
PANELS = ("audience", "editions", "queue", "upcoming")
ADMIN_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    """Sent back with every form of this session."""
    issued: int
    """Seconds since the epoch, by the app's clock."""


class Sessions:
    """Signed session cookies; a session ends after ``lifetime`` or when the password
    changes (its hash is part of what is signed)."""

    def __init__(self, secret: str, password_hash: str, lifetime: timedelta) -> None:
        self._serializer = URLSafeSerializer(secret, salt="feedpub.admin-session")
        self._password = hashlib.sha256(password_hash.encode()).hexdigest()[:16]
        self.lifetime = lifetime

    def issue(self, user: str, now: datetime) -> tuple[str, Session]:
        session = Session(user, secrets.token_urlsafe(24), int(now.timestamp()))
        value = self._serializer.dumps([session.user, session.csrf, session.issued,
                                        self._password])
        return value, session

    def read(self, value: str | None, now: datetime) -> Session | None:
        if not value:
            return None
        try:
            data = self._serializer.loads(value)
        except BadSignature:
            return None
        if not (isinstance(data, list) and len(data) == 4):
            return None
        user, csrf, issued, password = data
        if not (isinstance(user, str) and isinstance(csrf, str) and isinstance(issued, int)):
            return None
        age = now.timestamp() - issued
        if password != self._password or not -60 <= age <= self.lifetime.total_seconds():
            return None
        return Session(user, csrf, issued)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form_string(form: Any, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


class AdminApp:
    """The dashboard's handlers; built by :func:`admin_routes` when a password is set."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        password_hash = settings.admin.password_hash
        if not password_hash:
            raise ValueError("the dashboard needs [admin] password_hash")
        secret = settings.require_secret()
        self.settings = settings
        self.store = store
        self.clock = clock
        self.user = settings.admin.user
        self.password_hash = password_hash
        self.sessions = Sessions(secret, password_hash,
                                 timedelta(hours=settings.admin.session_hours))
        self.login_forms = URLSafeSerializer(secret, salt="feedpub.admin-login-form")
        self.per_client = TokenBuckets(LOGIN_PER_CLIENT)
        self.per_account = TokenBuckets(LOGIN_PER_ACCOUNT)
        self.trusted_origins = {origin for origin in (origin_of(settings.web.url),) if origin}
        self.language: Language = site_language(settings.site.language, settings.site.tz,
                                                config_path=settings.config_path)
        self.env = templating.template_environment(settings, self.language, "admin")
        self.env.filters["when"] = self._when
        self.env.filters["number"] = self._number
        self.env.filters["percent"] = self._percent
        self.env.filters["duration"] = self._duration
        self.env.globals.update({
            "site": settings.site,
            "lang": self.language.tag,
            "dir": self.language.direction,
            "path": lambda route, **slots: "/" + urls.path_for(route, **slots),
            "static": lambda name: "/" + urls.path_for("admin_static", name=name),
        })

    # --- the site's language --------------------------------------------------------

    def _(self, message: str) -> str:
        return self.language.gettext(message)

    def _when(self, value: str | datetime | None) -> str:
        from babel.dates import format_datetime

        if value is None:
            return "–"
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_datetime(moment, format="short", tzinfo=self.language.timezone,
                               locale=self.language.locale)

    def _number(self, value: float) -> str:
        from babel.numbers import format_decimal

        return format_decimal(value, locale=self.language.locale)

    def _percent(self, value: float) -> str:
        from babel.numbers import format_percent

        return format_percent(value, format="#,##0.00%", locale=self.language.locale)

    def _duration(self, seconds: int | None) -> str:
        from babel.dates import format_timedelta

        if seconds is None:
            return "–"
        return format_timedelta(timedelta(seconds=seconds), threshold=1.5,
                                locale=self.language.locale)

    def page(self, name: str, context: Mapping[str, Any], *, status: int = 200,
             session: Session | None = None,
             headers: Mapping[str, str] | None = None) -> HTMLResponse:
        body = templating.render_template(self.env, name, {
            "session": session, "csrf": session.csrf if session else "", **context,
        })
        return HTMLResponse(body, status_code=status, headers={**ADMIN_HEADERS, **(headers or {})})

    def refused(self, status: int, title: str, text: str,
                session: Session | None = None) -> HTMLResponse:
        return self.page("message.html", {"title": title, "text": text}, status=status,
                         session=session)

    # --- who is asking ---------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE), self.clock())

    def to_login(self) -> Response:
        # Only the path: a query (a search for an address) never goes back to a stranger.
        return RedirectResponse("/" + urls.path_for("admin_login"), status_code=303,
                                headers={"Cache-Control": "no-store"})

    def change_allowed(self, request: Request, session: Session, form: Any) -> bool:
        """A change needs the session's CSRF token, posted from one of our own pages."""
        token = _form_string(form, "csrf")
        return bool(token) and hmac.compare_digest(token, session.csrf) and same_origin(
            request.headers, trusted_origins=self.trusted_origins)

    def audit(self, request: Request, actor: str, action: str, *,
              subscriber_id: int | None = None, detail: str = "") -> None:
        with self.store.write() as conn:
            admin_queries.record_audit(conn, at=self.clock(), actor=actor, action=action,
                                       subscriber_id=subscriber_id, client=_client(request),
                                       detail=detail)

    # --- logging in and out ---------------------------------------------------------

    def login_page(self, *, error: str = "", status: int = 200,
                   headers: Mapping[str, str] | None = None) -> HTMLResponse:
        return self.page("login.html", {
            "title": self._("Log in"), "error": error,
            "form_token": self.login_forms.dumps(int(self.clock().timestamp())),
        }, status=status, headers=headers)

    async def login_get(self, request: Request) -> Response:
        if self.session_of(request) is not None:
            return RedirectResponse("/" + urls.path_for("admin"), status_code=303)
        return self.login_page()

    async def login_post(self, request: Request) -> Response:
        now = self.clock()
        if not same_origin(request.headers, trusted_origins=self.trusted_origins):
            return self.refused(403, self._("This form was sent from another site"),
                                self._("Open the login page again and log in from there."))
        async with request.form(max_files=0, max_fields=10) as form:
            user = _form_string(form, "user").strip()
            password = _form_string(form, "password")
            form_token = _form_string(form, "form_token")
        for buckets, key in ((self.per_client, _client(request)),
                             (self.per_account, user.casefold()[:64])):
            wait = buckets.take(key, now)
            if wait is not None:
                return self.login_page(
                    error=self._("Too many attempts. Please wait a few minutes, then try again."),
                    status=429, headers={"Retry-After": str(int(wait.total_seconds()))})
        if not self._fresh_login_form(form_token, now):
            return self.login_page(
                error=self._("This form was open for too long. Please log in again."),
                status=400)
        right_user = hmac.compare_digest(user.encode(), self.user.encode())
        # The hash is checked even for a wrong name, so both take as long.
        right = await run_in_threadpool(
            verify_password, self.password_hash if right_user else None, password)
        if not (right and right_user):
            await run_in_threadpool(self.audit, request, user[:64] or "?", "login-refused")
            return self.login_page(error=self._("Wrong name or password."), status=401)
        value, _session = self.sessions.issue(self.user, now)
        await run_in_threadpool(self.audit, request, self.user, "login")
        response = RedirectResponse("/" + urls.path_for("admin"), status_code=303,
                                    headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE, value, max_age=int(self.sessions.lifetime.total_seconds()),
            path="/admin", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def _fresh_login_form(self, token: str, now: datetime) -> bool:
        try:
            issued = self.login_forms.loads(token)
        except BadSignature:
            return False
        if not isinstance(issued, int) or isinstance(issued, bool):
            return False
        return -60 <= now.timestamp() - issued <= LOGIN_FORM_MAX_AGE.total_seconds()

    async def logout(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        async with request.form(max_files=0, max_fields=10) as form:
            if not self.change_allowed(request, session, form):
                return self.csrf_refused(session)
        await run_in_threadpool(self.audit, request, session.user, "logout")
        response = self.to_login()
        response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    def csrf_refused(self, session: Session | None) -> HTMLResponse:
        return self.refused(403, self._("This form cannot be accepted"),
                            self._("It was not sent from this dashboard, or it is too old. "
                                   "Open the page again and send it from there."), session)

    # --- the dashboard ---------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        range_name = request.query_params.get("range", "30d")
        if range_name not in admin_queries.RANGES:
            range_name = "30d"
        now = self.clock()

        def read() -> dict[str, Any]:
            with self.store.read() as conn:
                data = {
                    "audience": admin_queries.audience(conn, now, range_name),
                    "editions": admin_queries.edition_list(conn, self.settings),
                    "queue": admin_queries.queue_now(conn, now),
                }
            data["upcoming"] = admin_queries.upcoming(self.settings, self.store, now)
            return data

        data = await run_in_threadpool(read)
        return self.page("dashboard.html", {
            "title": self._("Dashboard"), "range": range_name,
            "ranges": list(admin_queries.RANGES), "series_labels": self.series_labels(),
            "refresh_seconds": QUEUE_REFRESH_SECONDS, **data,
        }, session=session)

    def series_labels(self) -> dict[str, str]:
        labels = {
            Status.PENDING.value: self._("Pending"),
            Status.ACTIVE.value: self._("Active"),
            Status.UNSUBSCRIBED.value: self._("Unsubscribed"),
            Status.BOUNCED.value: self._("Bounced"),
            admin_queries.OTHER_READERS: self._("Other feed readers"),
        }
        return labels

    async def panel(self, request: Request) -> Response:
        """The JSON behind each panel; 401 without a login (and nothing read)."""
        session = self.session_of(request)
        if session is None:
            return JSONResponse({"error": "not logged in"}, status_code=401,
                                headers={"Cache-Control": "no-store"})
        name = request.path_params["panel"]
        if name not in PANELS:
            return JSONResponse({"error": "no such panel"}, status_code=404)
        now = self.clock()
        range_name = request.query_params.get("range", "30d")
        if name == "audience" and range_name not in admin_queries.RANGES:
            return JSONResponse({"error": "range is 30d, 1y or all"}, status_code=400)

        def read() -> Any:
            if name == "upcoming":
                return admin_queries.upcoming(self.settings, self.store, now)
            with self.store.read() as conn:
                if name == "audience":
                    return admin_queries.audience(conn, now, range_name)
                if name == "editions":
                    return admin_queries.edition_list(conn, self.settings)
                return admin_queries.queue_now(conn, now)

        return JSONResponse(await run_in_threadpool(read), headers=dict(ADMIN_HEADERS))

    # --- subscribers -------------------------------------------------------------------

    async def subscribers(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        query = request.query_params.get("q", "")[:320]

        def read() -> list[dict[str, Any]]:
            with self.store.read() as conn:
                return admin_queries.search_subscribers(conn, query)

        found = await run_in_threadpool(read) if query.strip() else []
        return self.page("subscribers.html", {
            "title": self._("Subscribers"), "query": query, "found": found,
        }, session=session)

    def _subscriber_id(self, request: Request) -> int | None:
        text = request.path_params["subscriber"]
        return int(text) if text.isdigit() and len(text) < 12 else None

    async def subscriber(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        subscriber_id = self._subscriber_id(request)

        def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            with self.store.read() as conn:
                if subscriber_id is None:
                    return None, []
                return (admin_queries.subscriber_history(conn, subscriber_id),
                        admin_queries.audit_log(conn, subscriber_id=subscriber_id))

        person, audit = await run_in_threadpool(read)
        if person is None:
            return self.refused(404, self._("No such subscriber"),
                                self._("Nobody has this number."), session)
        return self.page("subscriber.html", {
            "title": self._("Subscriber"), "person": person, "audit": audit,
            "done": request.query_params.get("done", ""),
        }, session=session)

    async def confirm_action(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        subscriber_id, action = self._subscriber_id(request), request.path_params["action"]
        if subscriber_id is None or action not in ACTIONS:
            return self.refused(404, self._("Page not found"),
                                self._("There is nothing at this address."), session)

        def read() -> Any:
            with self.store.read() as conn:
                return get_subscriber(conn, subscriber_id)

        person = await run_in_threadpool(read)
        if person is None:
            return self.refused(404, self._("No such subscriber"),
                                self._("Nobody has this number."), session)
        return self.page("confirm.html", {
            "title": self._("Unsubscribe?") if action == "unsubscribe" else self._("Forget?"),
            "action": action, "person": person,
        }, session=session)

    async def do_action(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        async with request.form(max_files=0, max_fields=10) as form:
            if not self.change_allowed(request, session, form):
                return self.csrf_refused(session)
        subscriber_id, action = self._subscriber_id(request), request.path_params["action"]
        if subscriber_id is None or action not in ACTIONS:
            return self.refused(404, self._("Page not found"),
                                self._("There is nothing at this address."), session)
        now, client = self.clock(), _client(request)

        def change() -> bool:
            with self.store.write() as conn:
                if get_subscriber(conn, subscriber_id) is None:
                    return False
                if action == "unsubscribe":
                    unsubscribe_subscriber(conn, subscriber_id, now=now, source=Source.ADMIN,
                                           detail=f"by {session.user} from /admin")
                else:
                    forget_subscriber(conn, subscriber_id, now=now, source=Source.ADMIN)
                admin_queries.record_audit(conn, at=now, actor=session.user, action=action,
                                           subscriber_id=subscriber_id, client=client)
                return True

        if not await run_in_threadpool(change):
            return self.refused(404, self._("No such subscriber"),
                                self._("Nobody has this number."), session)
        target = "/" + urls.path_for("admin_subscriber", subscriber=str(subscriber_id))
        return RedirectResponse(f"{target}?done={action}", status_code=303)

    async def export(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None:
            return self.to_login()
        now, client = self.clock(), _client(request)

        def write() -> str:
            out = io.StringIO()
            with self.store.read() as conn:
                rows = export_subscribers(conn, out)
            with self.store.write() as conn:
                admin_queries.record_audit(conn, at=now, actor=session.user, action="export",
                                           client=client, detail=f"{rows} rows")
            return out.getvalue()

        body = await run_in_threadpool(write)
        stamp = now.strftime("%Y%m%d-%H%M")
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            **ADMIN_HEADERS,
            "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"',
        })

    # --- the chart library and the dashboard's own script ----------------------------

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers={
            "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff",
        })


def admin_routes(settings: Settings, store: Store, clock: Clock) -> list[BaseRoute]:
    """The dashboard's routes; none until an admin password is set."""
    if not settings.admin.enabled:
        return []
    admin = AdminApp(settings, store, clock)
    path = urls.starlette_path
    return [
        Route(path("admin"), admin.dashboard, methods=["GET"]),
        Route("/admin", lambda _request: RedirectResponse("/admin/", status_code=308),
              methods=["GET"]),
        Route(path("admin_login"), admin.login_get, methods=["GET"]),
        Route(path("admin_login"), admin.login_post, methods=["POST"]),
        Route(path("admin_logout"), admin.logout, methods=["POST"]),
        Route(path("admin_api"), admin.panel, methods=["GET"]),
        Route(path("admin_subscribers"), admin.subscribers, methods=["GET"]),
        Route(path("admin_export"), admin.export, methods=["GET"]),
        Route(path("admin_subscriber"), admin.subscriber, methods=["GET"]),
        Route(path("admin_subscriber_action"), admin.confirm_action, methods=["GET"]),
        Route(path("admin_subscriber_action"), admin.do_action, methods=["POST"]),
        Route(path("admin_static"), admin.static, methods=["GET"]),
    ]

