"""Auth on every route, CORS exactly as Open WebUI's browser connection needs it."""

from __future__ import annotations

import re

import pytest

from daemon.http.endpoints import Access
from daemon.keys import ENDPOINTS
from tests.conftest import KEY, Api, ApiFactory

ORIGIN = "https://owui.example"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path.replace("{process_id}", "20260101-000000-abcdef"))


async def test_every_non_public_endpoint_needs_the_key(api_with: ApiFactory) -> None:
    api = await api_with(info="hello")
    protected = [e for e in api.client.server.app[ENDPOINTS] if e.access is Access.BEARER]
    assert len(protected) >= 8
    for endpoint in protected:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            async with api.request(endpoint.method, _concrete(endpoint.path), auth=False, headers=headers) as r:
                assert r.status == 401, endpoint.path
                assert await r.json() == {"detail": "Invalid API key"}


async def test_the_key_is_accepted_with_stray_whitespace(api: Api) -> None:
    await api.json("GET", "/execute", auth=False, headers={"Authorization": f"Bearer  {KEY}  "})
    await api.json("GET", "/execute", auth=False, status=401, headers={"Authorization": "Bearer \u00e9t\u00e9"})


@pytest.mark.parametrize("path", ["/health", "/api/config", "/openapi.json", "/docs", "/static/js/docs.js"])
async def test_public_paths_need_no_key(api: Api, path: str) -> None:
    async with api.request("GET", path, auth=False) as response:
        assert response.status == 200


async def test_service_endpoints(api: Api) -> None:
    assert await api.json("GET", "/health", auth=False) == {"status": "ok"}
    assert await api.json("GET", "/api/config", auth=False) == {
        "features": {"terminal": True, "notebooks": True, "system": True, "git": True}}
    prompt = (await api.json("GET", "/system"))["prompt"]
    assert prompt.startswith("You have access to a computer running ") and "Python " in prompt
    await api.json("GET", "/info", status=404)
    await api.json("GET", "/api/v1/policies", status=404)
    await api.json("GET", "/api/v1/policies", status=404, auth=False)


async def test_info_and_system_prompt_follow_the_configuration(api_with: ApiFactory) -> None:
    api = await api_with(info="GPU box", system_prompt="On {{os}} as {{ user }}; {{unknown}}")
    assert await api.json("GET", "/info") == {"info": "GPU box"}
    assert (await api.json("GET", "/system"))["prompt"].startswith("On Linux as ")
    assert (await api.json("GET", "/system"))["prompt"].endswith("; {{unknown}}")
    quiet = await api_with(enable_system_prompt=False)
    assert (await quiet.json("GET", "/api/config", auth=False))["features"]["system"] is False
    await quiet.json("GET", "/system", status=404)


@pytest.mark.parametrize("path", ["/execute", "/files/list", "/proxy/3000/x", "/no/such/path"])
async def test_preflight_is_answered_without_auth_on_every_path(api: Api, path: str) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type, x-session-id",
               "Access-Control-Request-Private-Network": "true"}
    async with api.request("OPTIONS", path, auth=False, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert response.headers["Access-Control-Allow-Headers"] == headers["Access-Control-Request-Headers"]
        assert response.headers["Access-Control-Allow-Private-Network"] == "true"
        assert response.headers["Access-Control-Max-Age"] == "600"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/execute", 200), ("GET", "/execute", 401), ("GET", "/execute/x/status", 404),
    ("POST", "/execute?wait=abc", 422),
])
async def test_every_response_carries_the_origin_even_errors(api: Api, method: str, path: str, status: int) -> None:
    async with api.request(method, path, auth=status != 401, headers={"Origin": ORIGIN}, json={"command": "true"}) as r:
        assert r.status == status
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Expose-Headers"] == "Content-Disposition"
        assert "Origin" in r.headers["Vary"]


async def test_streamed_responses_carry_the_origin(api: Api) -> None:
    async with api.request("POST", "/execute?stream=true", headers={"Origin": ORIGIN}, json={"command": "true"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        await r.read()


async def test_a_restricted_origin_list_refuses_others(api_with: ApiFactory) -> None:
    api = await api_with(cors_allowed_origins=(ORIGIN,))
    preflight = {"Access-Control-Request-Method": "GET"}
    evil = {"Origin": "https://evil.example", **preflight}
    async with api.request("OPTIONS", "/execute", auth=False, headers=evil) as r:
        assert r.status == 400 and await r.text() == "Disallowed CORS origin"
    async with api.request("GET", "/execute", headers={"Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    async with api.request("OPTIONS", "/execute", auth=False, headers={"Origin": ORIGIN, **preflight}) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
