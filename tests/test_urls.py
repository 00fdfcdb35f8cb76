"""The route table: one definition of every path, shared by the app and every link."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from feedpub import urls
from feedpub.web import create_app
from tests.conftest import SiteFactory


def test_parameters_are_percent_encoded_whole() -> None:
    assert urls.path_for("confirm", token="a/b c") == "confirm/a%2Fb%20c"
    assert urls.category_feed_url("https://example.com/", "中文-分类", "rss") == (
        "https://example.com/categories/%E4%B8%AD%E6%96%87-%E5%88%86%E7%B1%BB/rss.xml"
    )
    assert urls.edition_path("weekly", "2025-01-06-0900") == "editions/weekly/2025-01-06-0900.html"


def test_a_missing_or_unknown_parameter_is_refused() -> None:
    with pytest.raises(KeyError):
        urls.path_for("confirm")
    with pytest.raises(ValueError, match="takes no parameter 'token'"):
        urls.path_for("subscribe", token="x")
    with pytest.raises(ValueError, match="no subscriber link"):
        urls.subscriber_url("https://example.com/", "healthz", "x")


def test_subscriber_links_land_on_the_routes_the_app_mounts(make_site: SiteFactory) -> None:
    make_site()
    app = create_app(make_site.settings(env={"FEEDPUB_SECRET": "s" * 32}))
    mounted = {route.path for route in app.routes if isinstance(route, Route)}
    for purpose in ("confirm", "unsubscribe", "preferences"):
        link = urls.subscriber_url("https://example.com/", purpose, "TOKEN")
        path = "/" + link.removeprefix("https://example.com/").replace("TOKEN", "{token}")
        assert path in mounted
    assert urls.starlette_path("subscribe") in mounted
