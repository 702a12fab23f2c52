"""The API reference works with no internet: `/docs` and `/redoc` load every asset from the service itself; and the
OpenAPI document carries the package's one version number."""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from api.app import PYPROJECT, app, package_version

BASE = "http://testserver"
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Links(HTMLParser):
    """Every `src` and `href` of a page, and every URL its inline scripts name in quotes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            for quote in ("'", '"'):
                parts = data.split(quote)[1::2]
                self.urls += [p for p in parts if p.startswith(("http://", "https://", "//", "/"))]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE) as test_client:
        yield test_client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_reference_page_loads_only_local_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    parser = _Links()
    parser.feed(response.text)
    urls = {urljoin(BASE + page, url) for url in parser.urls}
    assert urls, "the page names no asset"
    foreign = sorted(url for url in urls if urlsplit(url).netloc != "testserver")
    assert foreign == [], f"{page} loads from another host"
    assets = {url for url in urls if "/docs-assets/" in url}
    assert assets, f"{page} loads no local asset"
    for url in sorted(urls):
        path = urlsplit(url).path
        asset = client.get(path)
        assert asset.status_code == 200, path
        assert asset.content, path
        expected = next((kind for suffix, kind in CONTENT_TYPES.items() if path.endswith(suffix)), None)
        if expected is not None:
            assert expected in asset.headers["content-type"], (path, asset.headers["content-type"])


def test_the_pages_name_the_scripts_they_need(client: TestClient) -> None:
    assert "/docs-assets/swagger-ui-bundle.js" in client.get("/docs").text
    assert "/docs-assets/swagger-ui.css" in client.get("/docs").text
    assert "/docs-assets/redoc.standalone.js" in client.get("/redoc").text


def test_oauth2_redirect_page_is_served(client: TestClient) -> None:
    response = client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_openapi_version_is_the_package_version(client: TestClient) -> None:
    with PYPROJECT.open("rb") as file:
        declared = tomllib.load(file)["project"]["version"]
    assert importlib.metadata.version("pocketflows-sync") == declared
    assert package_version() == declared
    assert client.get("/openapi.json").json()["info"]["version"] == declared


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with PYPROJECT.open("rb") as file:
        assert package_version() == tomllib.load(file)["project"]["version"]
