"""Safe defaults: the DNS-rebinding Host guard and the CORS allow-list."""

from __future__ import annotations

import pytest

from app.edge.security import host_is_local
from tests.conftest import Server


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost:11434", True),
        ("127.0.0.1:11434", True),
        ("[::1]:11434", True),
        ("192.168.1.20", True),
        ("myapp.localhost", True),
        ("box.local:8080", True),
        ("evil.example", False),
        ("evil.example:11434", False),
        ("8.8.8.8", False),
    ],
)
def test_host_classification(host: str, local: bool) -> None:
    assert host_is_local(host) is local


async def test_foreign_host_is_refused_on_loopback(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/api/version", headers={"Host": "evil.example"})
        assert r.status_code == 403 and "error" in r.json()
        r = await client.get("/api/version", headers={"Host": "localhost:11434"})
        assert r.status_code == 200 and r.json()["version"]


async def test_cors_allows_local_origins_only(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = await client.get("/api/tags", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        r = await client.options(
            "/api/chat",
            headers={"Origin": "vscode-webview://abc", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "vscode-webview://abc"
        assert "POST" in r.headers["access-control-allow-methods"]


async def test_head_probes(server: Server) -> None:
    async with server.client() as client:
        assert (await client.head("/")).status_code == 200
        assert (await client.head("/api/version")).status_code == 200
