"""Access control, limits, metrics and faults: the server under hostile or broken conditions."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import trio

from app.config import Settings
from app.edge.security import InsecureBind, check_exposure
from tests.conftest import Server, running_server, wait_until, write_fake

KEY = "s3cret-key"


@pytest.fixture
async def keyed(settings: Settings) -> AsyncIterator[Server]:
    async with running_server(replace(settings, api_key=KEY)) as server:
        yield server


async def test_every_route_needs_the_key_when_one_is_set(keyed: Server) -> None:
    chat = {"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": False}
    async with httpx.AsyncClient(base_url=keyed.url) as client:
        for method, path in (
            ("GET", "/api/tags"),
            ("POST", "/api/chat"),
            ("GET", "/v1/models"),
        ):
            response = await client.request(method, path, json=chat if method == "POST" else None)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in (await client.get("/api/tags")).json()["error"]
        # Liveness stays open, as on vLLM and llama-server: it tells nothing but that we run.
        assert (await client.get("/")).status_code == 200
        assert (await client.head("/")).status_code == 200
        assert (await client.get("/v1/models")).json()["error"]["type"] == "authentication_error"
        wrong = await client.get("/api/tags", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get("/api/tags", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        assert (await client.get("/api/tags", headers={"X-Api-Key": KEY})).status_code == 200
        preflight = await client.options(
            "/api/chat", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 204  # browsers send preflights without credentials
    reply = await ollama.AsyncClient(host=keyed.url, headers={"Authorization": f"Bearer {KEY}"}).chat(
        model="fake", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.message.content == "Hello, world!"
    oai = openai.AsyncOpenAI(base_url=f"{keyed.url}/v1", api_key=KEY)
    assert (await oai.models.list()).data
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=f"{keyed.url}/v1", api_key="wrong").models.list()


def test_an_exposed_bind_needs_a_key_or_an_explicit_opt_out() -> None:
    with pytest.raises(InsecureBind, match="TRILLM_API_KEY"):
        check_exposure(Settings(host="0.0.0.0"))
    check_exposure(Settings(host="0.0.0.0", api_key=KEY))
    check_exposure(Settings(host="0.0.0.0", allow_insecure_bind=True))
    check_exposure(Settings(host="127.0.0.1"))


async def test_serve_refuses_an_exposed_bind_without_a_key(tmp_path: Path) -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0:0", "--models", str(tmp_path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 1 and b"TRILLM_ALLOW_INSECURE_BIND" in done.stderr


async def test_management_routes_can_be_turned_off(settings: Settings) -> None:
    async with running_server(replace(settings, management=False)) as server:
        async with server.client() as client:
            for method, path, body in (
                ("POST", "/api/pull", {"model": "a/b"}),
                ("POST", "/api/create", {"model": "x", "from": "fake"}),
                ("POST", "/api/copy", {"source": "fake", "destination": "y"}),
                ("DELETE", "/api/delete", {"model": "fake"}),
                ("POST", "/api/blobs/sha256:" + "0" * 64, None),
            ):
                response = await client.request(method, path, json=body)
                assert response.status_code == 403 and "disabled" in response.json()["error"], path
            chat = {"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": False}
            assert (await client.post("/api/chat", json=chat)).status_code == 200


async def test_header_limits(server: Server) -> None:
    async with server.client() as client:
        many = {f"x-h{i}": "v" for i in range(150)}
        response = await client.get("/api/version", headers=many)
        assert response.status_code == 431 and "too many request headers" in response.json()["error"]
        huge = await client.get("/api/version", headers={"x-big": "a" * 64 * 1024})
        assert huge.status_code == 431
        assert (await client.get("/api/version")).status_code == 200


def _raw_exchange(port: int, payload: bytes, wait: float) -> bytes:
    """Send ``payload`` and read until the server closes (or ``wait`` seconds pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received + b"<still open>"
        return received


def _late_body_then_next_request(port: int, method: str) -> bytes:
    """On one connection: headers of a request the server answers without its body, the body
    a moment later, then a plain request; what came back within three seconds."""
    body = b'{"source": "a", "destination": "b"}'
    head = f"{method} /api/copy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(head.encode())
        time.sleep(0.1)
        sock.sendall(body)
        time.sleep(0.1)
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        try:
            while b'"version"' not in received and (chunk := sock.recv(65536)):
                received += chunk
        except TimeoutError:
            pass
        return received


async def test_a_body_that_arrives_after_its_answer_leaves_the_connection_usable(server: Server) -> None:
    """A preflight and a 405 are answered without reading the body; when that body arrives late,
    the connection still serves the next request (Hypercorn used to stall it: found by
    schemathesis, which then waited for an answer until its timeout)."""
    port = int(server.url.rsplit(":", 1)[1])
    for method, status in (("OPTIONS", b"204"), ("GET", b"405")):
        got = await trio.to_thread.run_sync(_late_body_then_next_request, port, method)
        assert got.startswith(b"HTTP/1.1 " + status), got[:100]
        assert b'"version"' in got, (method, got)


async def test_slow_clients_are_cut_off(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trillm")
    async with running_server(replace(settings, header_timeout=0.5, body_timeout=0.5)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        start = trio.current_time()
        # Headers that never finish: the connection is closed after the header timeout.
        got = await trio.to_thread.run_sync(
            _raw_exchange, port, b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n", 5.0
        )
        assert b"<still open>" not in got and trio.current_time() - start < 4
        # A body that stops arriving gets 408.
        head = b'POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"model"'
        got = await trio.to_thread.run_sync(_raw_exchange, port, head, 5.0)
        assert got.startswith(b"HTTP/1.1 408") and b"did not arrive" in got
        async with server.client() as client:
            assert (await client.get("/api/version")).status_code == 200
    # Each timeout that fired was logged.
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("header timeout (0.5s): closed 127.0.0.1:") for m in messages), messages
    assert any(m.startswith("request body timeout") for m in messages), messages


async def test_faults_end_cleanly_and_the_server_keeps_serving(server: Server, store: Path) -> None:
    write_fake(store, "oom", pieces=["a", "b", "c"], loop=True, fail_at=2, fail_with="memory")
    write_fake(store, "oomload", load_error="cannot allocate 9 GB", fail_with="memory")
    canary = {"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": False}
    async with server.client() as client:
        for model, status in (("oom", 503), ("failing", 500), ("oomload", 503), ("unloadable", 500)):
            body = {"model": model, "messages": [{"role": "user", "content": "x"}]}
            response = await client.post("/api/chat", json=body | {"stream": False})
            assert response.status_code == status, (model, response.text)
            assert "error" in response.json()
            async with client.stream("POST", "/api/chat", json=body) as stream:
                lines = [json.loads(line) async for line in stream.aiter_lines()]
            assert "error" in lines[-1] and not any(line.get("done") for line in lines)
            with trio.fail_after(1):
                assert (await client.post("/api/chat", json=canary)).json()["message"][
                    "content"
                ] == "Hello, world!"


async def test_metrics(settings: Settings) -> None:
    async with running_server(replace(settings, metrics=True)) as server:
        async with server.client() as client:
            chat = {"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream": False}
            for _ in range(3):
                assert (await client.post("/api/chat", json=chat)).status_code == 200
            await client.post("/api/chat", json=chat | {"model": "failing"})
            async with client.stream("POST", "/api/chat", json=chat | {"model": "slow", "stream": True}) as r:
                async for _ in r.aiter_lines():
                    break
            await wait_until(lambda: server.services.engine.statistics().active == 0)
            text = (await client.get("/metrics")).text
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert samples['trillm:request_success_total{finished_reason="stop",model_name="fake:latest"}'] == 3
        assert samples['trillm:generation_tokens_total{model_name="fake:latest"}'] == 15
        assert samples['trillm:request_failed_total{model_name="failing:latest"}'] == 1
        assert samples['trillm:request_cancelled_total{model_name="slow:latest"}'] == 1
        assert samples['trillm:time_to_first_token_seconds_count{model_name="fake:latest"}'] == 3
        assert samples['trillm:inter_token_latency_seconds_count{model_name="fake:latest"}'] == 12
        assert samples["trillm:num_requests_running"] == 0 and samples["trillm:num_requests_waiting"] == 0
        assert samples["trillm:model_loads_total"] == 3 and samples["trillm:models_loaded"] == 3


async def test_metrics_are_off_by_default(server: Server) -> None:
    async with server.client() as client:
        assert (await client.get("/metrics")).status_code == 404


@pytest.mark.mlx
async def test_sigterm_with_twenty_live_streams_ends_each_one_and_exits_cleanly(
    store: Path, tmp_path: Path
) -> None:
    """``trillm serve`` (a real process) gets SIGTERM while 20 streams are live, 4 decoding on MLX
    and 16 queued: it stops accepting, ends every stream with its final line within the grace,
    and exits 0."""
    import os
    import signal
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "TRILLM_HOST": f"127.0.0.1:{port}",
        "TRILLM_MODELS": str(store),
        "TRILLM_OLLAMA_MODELS": "",
        "TRILLM_SHUTDOWN_GRACE": "3",
    }
    command = [sys.executable, "-m", "app.cli", "serve"]
    log_file = (tmp_path / "serve.log").open("w")
    process = await trio.lowlevel.open_process(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    endings: list[str] = []
    streaming: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with trio.fail_after(60):
                while True:
                    try:
                        await client.get("/")
                        break
                    except httpx.TransportError:
                        await trio.sleep(0.1)

            async def listen(index: int) -> None:
                body = {"model": "random", "prompt": f"go {index}", "options": {"num_predict": 100000}}
                async with httpx.AsyncClient(base_url=url, timeout=60) as own:
                    async with own.stream("POST", "/api/generate", json=body) as response:
                        last = ""
                        async for line in response.aiter_lines():
                            if line.strip():
                                last = line
                                if index not in streaming:
                                    streaming.append(index)
                        endings.append(last)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for index in range(20):
                        nursery.start_soon(listen, index)
                    await wait_until(lambda: len(streaming) >= 4, 30)
                    process.send_signal(signal.SIGTERM)
                    code = await process.wait()
        log_file.close()
        assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
        assert len(endings) == 20  # no stream was left hanging
        for last in endings:
            final = json.loads(last)
            assert final.get("done") is True or final.get("error") == "the server is shutting down", final
        async with httpx.AsyncClient(base_url=url, timeout=2) as late:
            with pytest.raises(httpx.TransportError):
                await late.get("/")  # the listener is gone
    finally:
        log_file.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
