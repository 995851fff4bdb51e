"""The API's docs pages load everything from the API itself: they work offline."""

from __future__ import annotations

import re

import httpx
import pytest

# What a page makes the browser fetch: scripts, styles, icons, Redoc's spec, Swagger's spec.
REFERENCES = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|\burl: '([^']+)'""")
PNG = b"\x89PNG\r\n\x1a\n"


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCES.findall(html)]


@pytest.mark.parametrize(
    ("page", "script"),
    [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")],
)
async def test_docs_page_loads_only_from_the_api(
    api: httpx.AsyncClient, page: str, script: str
) -> None:
    response = await api.get(page)
    assert response.status_code == 200
    html = response.text
    assert "://" not in html, "the page names another host (a CDN)"
    urls = references(html)
    assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await api.get(url)
        assert asset.status_code == 200, url
        if url.endswith(".js"):
            assert len(asset.content) > 100_000 and script in asset.text, url
        elif url.endswith(".css"):
            assert ".swagger-ui" in asset.text, url
        elif url.endswith(".png"):
            assert asset.content.startswith(PNG), url
        else:
            assert asset.json()["openapi"].startswith("3."), url


async def test_docs_assets_stay_out_of_the_openapi_schema(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if "docs" in path or "redoc" in path]
