"""An Ollama user's habits with the ``trillm`` command and the examples, as a user meets them:
subprocesses, pipes and a pseudo-terminal against the real server on the fake backend."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pexpect
import trio

from tests.conftest import Server
from tests.http.test_cli import cli_env, trillm
from tests.support.server_process import serve_command

ROOT = Path(__file__).resolve().parents[2]


def _prompt(server: Server) -> str:
    return "".join(chr(t) for t in server.fake.prompts[-1])


async def test_serving_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await trio.run_process(
            serve_command(tmp_path, port),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err == (
        f"Error: listen tcp 127.0.0.1:{port}: address already in use — is another server (Ollama?) "
        "running? Set TRILLM_HOST to use another port\n"
    )


async def test_piped_text_comes_before_the_prompt_argument(server: Server) -> None:
    code, out, _ = await trillm(server, "run", "fake", "summarise this", stdin=b"a long document")
    assert (code, out) == (0, "Hello, world!\n\n")
    assert _prompt(server).endswith("<user>a long document summarise this<assistant>")


async def test_flags_after_the_model_name_and_one_clock_for_timings(server: Server) -> None:
    code, out, _ = await trillm(server, "run", "fake", "--verbose", "hello", "there")
    assert code == 0 and _prompt(server).endswith("<user>hello there<assistant>")
    timings = dict(re.findall(r"^([a-z ]+):\s+([\d.]+)s$", out, re.MULTILINE))
    assert float(timings["time to first token"]) <= float(timings["total duration"])


async def test_not_found_says_to_pull_and_names_the_closest(server: Server) -> None:
    code, _, err = await trillm(server, "show", "fakejsn")
    assert code == 1
    assert err.startswith(
        "Error: model 'fakejsn' not found, try pulling it first; the closest local models are"
    )
    assert "fakejson" in err


async def test_a_closed_pipe_ends_quietly(server: Server) -> None:
    def run() -> tuple[int, bytes]:
        child = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "ls"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(server),
        )
        assert child.stdout is not None
        child.stdout.close()  # as `| head -0` would: the reader is gone before the first line
        _, err = child.communicate(timeout=30)
        return child.returncode, err

    code, err = await trio.to_thread.run_sync(run)
    assert code == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err


async def test_a_go_template_is_refused_at_create(server: Server, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text(
        'FROM fake\nTEMPLATE """{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"""\n'
    )
    code, _, err = await trillm(server, "create", "gotemplate", "-f", str(tmp_path / "Modelfile"))
    assert code == 1 and "TEMPLATE looks like a Go template" in err, err
    async with server.client() as http:
        broken = await http.post("/api/create", json={"model": "x", "from": "fake", "template": "{% for %}"})
        assert broken.status_code == 400 and "not a valid Jinja template" in broken.json()["error"]
        jinja = "{% for message in messages %}{{ message.content }}{% endfor %}"
        fine = await http.post(
            "/api/create", json={"model": "x", "from": "fake", "template": jinja, "stream": False}
        )
        assert fine.status_code == 200, fine.text


def session(url: str, env: dict[str, str], model: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "app.cli", "run", model],
        env=env,
        encoding="utf-8",
        timeout=20,
        cwd=str(ROOT),
        # Ctrl+C as in a terminal, even under a shell that started this test with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interact_with_commands(url: str, env: dict[str, str]) -> str:
    child = session(url, env, "fake")
    child.expect_exact(">>> ")
    child.sendline("/set parameter temprature 0.5")
    child.expect_exact("Unknown parameter 'temprature'")
    child.sendline("/set system Be brief.")
    child.expect_exact("Set system message.")
    child.sendline("/show system")
    child.expect_exact("Be brief.")
    child.sendline("/show license")
    child.expect_exact("No license was specified for this model.")
    child.sendline("/set parameter num_predict 2")
    child.sendline("/save brief")
    child.expect_exact("Created new model 'brief'")
    child.sendline("/load fakejson")
    child.expect_exact(">>> ")
    child.sendline("/load nosuchmodel")
    child.expect_exact("Error: model 'nosuchmodel' not found")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    return str(child.before)


async def test_interactive_commands_of_ollama_run(server: Server) -> None:
    await trio.to_thread.run_sync(interact_with_commands, server.url, cli_env(server))
    async with server.client() as http:
        shown = (await http.post("/api/show", json={"model": "brief"})).json()
    assert shown["system"] == "Be brief." and "num_predict" in shown["parameters"]


def load_error_first(url: str, env: dict[str, str]) -> tuple[str, int | None]:
    child = session(url, env, "unloadable")
    index = child.expect_exact(["weights are corrupt", ">>> "])
    child.expect(pexpect.EOF)
    child.close()
    return ("error first" if index == 0 else "prompt first"), child.exitstatus


async def test_interactive_run_loads_first_so_a_load_error_comes_before_the_prompt(server: Server) -> None:
    seen, status = await trio.to_thread.run_sync(load_error_first, server.url, cli_env(server))
    assert (seen, status) == ("error first", 1)


async def test_examples_find_the_server_from_the_environment(server: Server) -> None:
    env = {**os.environ, "TRILLM_HOST": server.url.removeprefix("http://")}  # no scheme, as Ollama's
    done = await trio.run_process(
        [sys.executable, str(ROOT / "examples" / "tokens_per_second.py"), "fake", "--tokens", "4"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    streaming = next(line for line in out.splitlines() if line.startswith("streaming"))
    assert "n/a" in streaming  # four chunks are too few for a client rate
    assert "chunks" in out and "ask for more --tokens" in out
    gone = await trio.run_process(
        [sys.executable, str(ROOT / "examples" / "tokens_per_second.py"), "fake"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "TRILLM_HOST": "127.0.0.1:9"},
    )
    err = gone.stderr.decode()
    assert gone.returncode == 1 and err.count("\n") == 1 and "no server answers at http://127.0.0.1:9" in err


async def test_version_bare_help_and_the_environment_in_serve_help() -> None:
    async def cli(*args: str) -> tuple[int, str]:
        done = await trio.run_process(
            [sys.executable, "-m", "app.cli", *args], capture_stdout=True, capture_stderr=True, check=False
        )
        return done.returncode, done.stdout.decode()

    from app import __version__

    for flag in ("--version", "-v"):
        assert await cli(flag) == (0, f"trillm version is {__version__}\n")
    code, out = await cli()
    assert code == 0 and "serve" in out and "run" in out and "pull" in out
    code, out = await cli("serve", "--help")
    assert code == 0 and "TRILLM_CONTEXT_LENGTH" in out and "32768" in out and "OLLAMA_HOST" in out


def interrupt_once(url: str, env: dict[str, str]) -> str:
    child = session(url, env, "slow")
    child.expect_exact(">>> ")
    child.sendline("go on")
    child.expect_exact("tick tick")
    child.sendintr()
    child.expect_exact("(stopped)")
    seen = str(child.before)
    child.expect_exact(">>> ")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    return seen


async def test_ctrl_c_during_an_answer_is_echoed_once(server: Server) -> None:
    seen = await trio.to_thread.run_sync(interrupt_once, server.url, cli_env(server))
    assert seen.count("^C") <= 1, seen  # the terminal's own echo; trillm adds none
