"""The ``trillm`` command line, driven as a user drives it: subprocesses and a pseudo-terminal."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import trio

from tests.conftest import Server, wait_until
from tests.support.fake_hub import FakeHub, HubRepo, running_hub


def cli_env(server: Server) -> dict[str, str]:
    return {
        **os.environ,
        "TRILLM_HOST": server.url.removeprefix("http://"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


async def trillm(
    server: Server, *args: str, stdin: bytes = b"", cwd: Path | None = None
) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "app.cli", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=cli_env(server),
        cwd=cwd,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_listing_showing_copying_and_removing(server: Server) -> None:
    code, out, _ = await trillm(server, "ls")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(line.startswith("fake:latest ") for line in out.splitlines())
    code, out, _ = await trillm(server, "cp", "fake", "mine/fake:v1")
    assert (code, out) == (0, "copied 'fake' to 'mine/fake:v1'\n")
    code, out, _ = await trillm(server, "show", "mine/fake:v1", "--modelfile")
    assert code == 0 and "FROM " in out
    code, out, _ = await trillm(server, "rm", "mine/fake:v1")
    assert (code, out) == (0, "deleted 'mine/fake:v1'\n")
    code, out, err = await trillm(server, "show", "mine/fake:v1")
    assert code == 1 and err.startswith("Error: model 'mine/fake:v1' not found, try pulling it first")
    assert "Traceback" not in err


async def test_ps_and_stop(server: Server) -> None:
    assert (await trillm(server, "run", "fake", "hi"))[0] == 0
    code, out, _ = await trillm(server, "ps")
    assert code == 0 and out.splitlines()[0].split() == [
        "NAME",
        "ID",
        "SIZE",
        "PROCESSOR",
        "CONTEXT",
        "UNTIL",
    ]
    assert "fake:latest" in out and "from now" in out
    assert (await trillm(server, "stop", "fake"))[0] == 0
    await wait_until(lambda: server.services.engine.statistics().loaded == 0)
    assert "fake:latest" not in (await trillm(server, "ps"))[1]


async def test_run_answers_a_prompt_or_stdin_once(server: Server) -> None:
    code, out, _ = await trillm(server, "run", "fake", "hello", "there")
    assert (code, out) == (0, "Hello, world!\n\n")
    assert "".join(chr(t) for t in server.fake.prompts[-1]).endswith("<user>hello there<assistant>")
    code, out, _ = await trillm(server, "run", "fake", stdin=b"from a pipe\n")
    assert (code, out) == (0, "Hello, world!\n\n")
    code, out, _ = await trillm(server, "run", "--verbose", "fake", "x")
    assert code == 0 and "eval rate:" in out and "time to first token:" in out
    code, _, err = await trillm(server, "run", "failing", "x")
    assert code == 1 and err.startswith("Error: ") and "Traceback" not in err


async def test_run_of_an_embedding_model_prints_the_vector(server: Server) -> None:
    code, out, _ = await trillm(server, "run", "fakeembed", "hello")
    vector = json.loads(out)
    assert code == 0 and len(vector) == 8 and abs(sum(v * v for v in vector) - 1) < 1e-6
    code, piped, _ = await trillm(server, "run", "fakeembed", stdin=b"hello\n")
    assert code == 0 and json.loads(piped) == vector
    code, _, err = await trillm(server, "run", "fakeembed", stdin=b"")
    assert code == 1 and "is an embedding model" in err


async def test_create_from_a_modelfile(server: Server, tmp_path: Path, store: Path) -> None:
    (tmp_path / "Modelfile").write_text(
        'FROM fake\nSYSTEM """You are\nterse."""\nPARAMETER num_predict 2\nPARAMETER stop "!"\n'
    )
    code, _, err = await trillm(server, "create", "terse", "-f", str(tmp_path / "Modelfile"))
    assert code == 0 and "success" in err, err
    code, out, _ = await trillm(server, "show", "terse", "--system")
    assert out == "You are\nterse.\n"
    code, out, _ = await trillm(server, "run", "terse", "hi")
    assert out == "Hello,\n\n"
    # FROM a directory: the files are uploaded as blobs, then the model is created from them.
    model_dir = tmp_path / "weights"
    model_dir.mkdir()
    (model_dir / "fake.json").write_text('{"pieces": ["uploaded"]}')
    (tmp_path / "Modelfile").write_text("FROM ./weights\n")
    code, _, err = await trillm(server, "create", "fromdir", cwd=tmp_path)
    assert code == 0 and "copying file fake.json" in err and "success" in err, err
    assert (await trillm(server, "run", "fromdir", "x"))[1] == "uploaded\n\n"
    (tmp_path / "Modelfile").write_text("FROM fake\nPARAMETER top_k many\n")
    code, _, err = await trillm(server, "create", "bad", cwd=tmp_path)
    assert code == 1 and "top_k" in err


async def test_commands_say_plainly_when_no_server_answers(server: Server) -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "app.cli", "ls", "--host", "127.0.0.1:9"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 1 and "could not connect" in err and "trillm serve" in err
    assert "Traceback" not in err


@pytest.fixture
def hub(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub(repos={"mlx-community/tiny-chat": HubRepo.from_directory(tiny_dir)})
    with running_hub(fake):
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@pytest.mark.mlx
async def test_run_pulls_a_missing_model_first(server: Server, hub: FakeHub) -> None:
    code, out, err = await trillm(server, "run", "hf.co/mlx-community/tiny-chat", "hello")
    assert code == 0, err
    assert "pulling manifest" in err and "success" in err
    assert out.strip()
    code, out, err = await trillm(server, "pull", "nobody/nothing")
    assert code == 1 and "file does not exist" in err and "Traceback" not in err


def interact(url: str, env: dict[str, str]) -> list[str]:
    """A pseudo-terminal session with ``trillm run`` (blocking: runs on a thread)."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "app.cli", "run", "slow"],
        env=env,
        encoding="utf-8",
        timeout=20,
        # Ctrl+C as in a terminal, even when this test runs as a background job of a
        # non-interactive shell (which starts its jobs with SIGINT ignored, inherited here).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    child.expect_exact(">>> ")
    child.sendline("count forever")
    child.expect_exact("tick tick tick")
    child.sendintr()  # Ctrl+C: stops this answer, not the program
    child.expect_exact("(stopped)")
    child.expect_exact(">>> ")
    child.sendline("/set parameter num_predict 3")
    child.expect_exact("Set parameter 'num_predict' to '3'")
    child.sendline('"""first line')
    child.expect_exact("... ")
    child.sendline('second line"""')
    child.expect_exact("tick tick tick \r\n")
    child.expect_exact(">>> ")
    child.sendline("/show info")
    child.expect_exact("architecture")
    seen.append(child.before or "")
    child.sendline("/clear")
    child.expect_exact("Cleared session context")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    seen.append(str(child.exitstatus))
    return seen


async def test_interactive_run_in_a_terminal(server: Server) -> None:
    seen = await trio.to_thread.run_sync(interact, server.url, cli_env(server))
    assert seen[-1] == "0"
    outcomes = [r.outcome for r in server.services.engine.history]
    assert outcomes[:2] == ["done", "cancelled"]  # the model loaded before the first prompt
    prompt = "".join(chr(t) for t in server.fake.prompts[-1])
    # The stopped question was dropped; the multi-line one arrived whole.
    assert prompt == "<user>first line\nsecond line<assistant>"
