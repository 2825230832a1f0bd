"""Starting a distributed group from a host file, and watching the ranks this server started.

``trillm serve --distributed HOSTS`` takes MLX's host file (what ``mlx.distributed_config``
writes and ``mlx.launch --hostfile`` reads: a JSON list of ``{"ssh": NAME, "ips": [IP, ...]}``,
one per rank, rank 0 first: this machine) or a number of ranks to run on this machine. Rank 0 is
this process; every other rank runs ``trillm serve --follower`` with MLX's ring backend settings
in its environment (``MLX_RANK``, and the ring's addresses), started directly on this machine or
through ``ssh`` on another, as ``mlx.launch`` does.

Unlike ``mlx.launch``, which stops every rank when one fails, the server keeps running: the
lost rank's models answer 503 (:mod:`inference.backends.mlx.distributed.group`) and the others still serve.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("trillm.distributed")

HOSTS_VARIABLE = "TRILLM_RING_HOSTS"  # the ring's addresses, for a rank started over ssh
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class HostfileError(ValueError):
    """The host file (or rank count) given to ``--distributed`` cannot be used."""


@dataclass(frozen=True)
class Host:
    ssh: str
    ips: tuple[str, ...]

    @property
    def local(self) -> bool:
        return self.ssh in LOOPBACK or self.ssh == socket.gethostname() or set(self.ips) <= LOOPBACK


def read_hosts(spec: str) -> list[Host]:
    """The ranks ``--distributed`` names: a count of local ranks, or MLX's JSON host file."""
    if spec.isdigit():
        count = int(spec)
        if count < 2:
            raise HostfileError("--distributed needs at least 2 ranks")
        return [Host("127.0.0.1", ("127.0.0.1",))] * count
    path = Path(spec)
    try:
        entries = json.loads(path.read_text())
    except OSError as error:
        raise HostfileError(f"cannot read the host file {spec}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise HostfileError(f"the host file {spec} is not JSON: {error}") from error
    if not isinstance(entries, list) or len(entries) < 2:
        raise HostfileError(f"the host file {spec} must list at least 2 hosts, rank 0 (this machine) first")
    hosts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("ssh"), str):
            raise HostfileError(f'host {index} in {spec} needs an "ssh" name')
        ips = entry.get("ips") or []
        if not ips or not all(isinstance(ip, str) for ip in ips):
            raise HostfileError(
                f'host {index} ({entry["ssh"]}) in {spec} needs "ips": the ring connects by address'
            )
        hosts.append(Host(entry["ssh"], tuple(ips)))
    return hosts


def ring_addresses(hosts: list[Host], port: int) -> list[list[str]]:
    """MLX's ring host file: one ``ip:port`` per rank (one connection each)."""
    if all(host.local for host in hosts):
        return [[f"127.0.0.1:{free_port()}"] for _ in hosts]
    return [[f"{host.ips[0]}:{port + rank}"] for rank, host in enumerate(hosts)]


def free_port() -> int:
    """A loopback port free now (for local ranks, and the servers tests and benchmarks start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_ring_file(addresses: list[list[str]]) -> Path:
    handle, name = tempfile.mkstemp(prefix="trillm-ring-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(addresses, out)
    return Path(name)


class Followers:
    """The processes of ranks 1.. that this server started; ``on_exit(rank, code)`` is called
    (from a watcher thread) when one ends."""

    def __init__(self, processes: dict[int, subprocess.Popen[bytes]]) -> None:
        self.processes = processes
        self.on_exit: Callable[[int, int | None], None] | None = None
        self._exits: list[tuple[int, int | None]] = []
        self._changed = threading.Condition()
        self._stopping = False
        for rank, process in processes.items():
            threading.Thread(
                target=self._watch, args=(rank, process), daemon=True, name=f"rank-{rank}"
            ).start()

    def _watch(self, rank: int, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        with self._changed:
            self._exits.append((rank, code))
            self._changed.notify_all()
        if not self._stopping and self.on_exit is not None:
            self.on_exit(rank, code)

    def exited(self) -> tuple[int, int | None] | None:
        with self._changed:
            return self._exits[0] if self._exits else None

    def wait_for_exit(self, seconds: float) -> tuple[int, int | None] | None:
        """The first rank to end, waiting up to ``seconds`` for one to."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._exits), timeout=seconds)
            return self._exits[0] if self._exits else None

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for every rank to end by itself."""
        self._stopping = True
        deadline = time.monotonic() + seconds
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def terminate(self) -> None:
        self._stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()

    def kill(self) -> None:
        """The group is lost: end every rank at once (one frozen or cut off ignores SIGTERM)."""
        self._stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()


def start_followers(hosts: list[Host], addresses: list[list[str]], ring_file: Path) -> Followers:
    """Start ranks 1.. (``trillm serve --follower``), each with its rank and the ring's addresses."""
    processes: dict[int, subprocess.Popen[bytes]] = {}
    command = [sys.executable, "-m", "app.cli", "serve", "--follower"]
    for rank, host in enumerate(hosts):
        if rank == 0:
            continue
        if host.local:
            env = {**os.environ, "MLX_RANK": str(rank), "MLX_HOSTFILE": str(ring_file)}
            processes[rank] = subprocess.Popen(command, env=env, cwd=os.getcwd())
        else:
            settings = {"MLX_RANK": str(rank), HOSTS_VARIABLE: json.dumps(addresses)}
            for name in ("TRILLM_MODELS", "TRILLM_MLX_OPENBLAS"):
                if name in os.environ:
                    settings[name] = os.environ[name]
            assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in settings.items())
            remote = f"cd {shlex.quote(os.getcwd())} && env {assignments} {shlex.join(command)}"
            processes[rank] = subprocess.Popen(["ssh", host.ssh, remote])
        log.info("started rank %d on %s (pid %d)", rank, host.ssh, processes[rank].pid)
    return Followers(processes)


def ring_file_from_environment() -> None:
    """A rank started over ssh gets the ring's addresses in :data:`HOSTS_VARIABLE`: MLX reads
    them from a file."""
    addresses = os.environ.get(HOSTS_VARIABLE)
    if addresses and "MLX_HOSTFILE" not in os.environ:
        os.environ["MLX_HOSTFILE"] = str(write_ring_file(json.loads(addresses)))
