"""Forming the group at start-up: rank 0 (the HTTP server) and the followers.

``trillm serve --distributed HOSTS`` starts the followers itself (:mod:`inference.backends.mlx.distributed.launcher`);
under ``mlx.launch ... -- trillm serve`` MLX's environment (``MLX_RANK``, ``MLX_HOSTFILE``) says
which rank this process is and where the others are. Either way rank 0 waits here until every rank
has joined, so a missing rank is an error at start-up, not on the first request.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from inference.backends.mlx import blas_shim
from inference.backends.mlx.distributed.group import Ranks
from inference.backends.mlx.distributed.launcher import (
    Followers,
    HostfileError,
    read_hosts,
    ring_addresses,
    ring_file_from_environment,
    start_followers,
    write_ring_file,
)
from inference.backends.mlx.distributed.link import Link

log = logging.getLogger("trillm.distributed")

JOIN_SECONDS = 120.0


def launched_rank() -> int | None:
    """This process's rank when a launcher (``mlx.launch``, MPI) started it, else ``None``."""
    for name in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return None


def launched_names(size: int) -> list[str]:
    """Each rank's address from the ring host file ``mlx.launch`` wrote, else ``rank N``."""
    try:
        addresses = json.loads(Path(os.environ["MLX_HOSTFILE"]).read_text())
        names = [str(entry[0]).rsplit(":", 1)[0] for entry in addresses]
    except (KeyError, OSError, ValueError, IndexError, TypeError):
        names = []
    return names if len(names) == size else [f"rank {rank}" for rank in range(size)]


def start_group(
    spec: str | None, *, pipeline: bool, port: int, openblas: bool, timeout: float = 60.0
) -> Ranks:
    """Rank 0: start (or find) the other ranks and wait until all have joined."""
    blas_shim.install(openblas)  # before MLX is imported, as every MLX process here does
    followers: Followers | None = None
    if spec is not None:
        hosts = read_hosts(spec)
        addresses = ring_addresses(hosts, port)
        ring_file = write_ring_file(addresses)
        os.environ["MLX_RANK"] = "0"
        os.environ["MLX_HOSTFILE"] = str(ring_file)
        followers = start_followers(hosts, addresses, ring_file)
        names = [host.ssh for host in hosts]
    try:
        group = _join(followers)
    except BaseException:
        if followers is not None:
            followers.terminate()
        raise
    if spec is None:
        names = launched_names(int(group.size()))
    if int(group.rank()) != 0:
        raise HostfileError("this process is not rank 0 of its group")
    log.info(
        "distributed group of %d ranks formed (%s parallel)",
        group.size(),
        "pipeline" if pipeline else "tensor",
    )
    return Ranks(Link(group), names, pipeline=pipeline, followers=followers, step_timeout=timeout)


def run_follower(store: Path, *, openblas: bool) -> int:
    """Ranks 1..: join the group, then follow rank 0 until it stops or is lost."""
    from inference.backends.mlx.backend import release_mlx_streams
    from inference.backends.mlx.distributed.follower import Follower

    blas_shim.install(openblas)
    ring_file_from_environment()
    try:
        group = _join(None)
    except HostfileError as error:
        log.error("%s", error)
        return 1
    blas_shim.verify()
    log.info("rank %d of %d joined the group", group.rank(), group.size())
    try:
        return Follower(Link(group), store).run()
    finally:
        release_mlx_streams()


def _join(followers: Followers | None) -> Any:
    """``mx.distributed.init`` (which waits for every rank), failing early when a rank this
    server started exits first."""
    import mlx.core as mx

    backend = "ring" if "MLX_HOSTFILE" in os.environ else "any"
    outcome: dict[str, Any] = {}

    def join() -> None:
        try:
            outcome["group"] = mx.distributed.init(strict=True, backend=backend)
        except Exception as error:  # reported by the waiting thread
            outcome["error"] = error

    joining = threading.Thread(target=join, name="join-group", daemon=True)
    joining.start()
    deadline = time.monotonic() + JOIN_SECONDS
    while joining.is_alive():
        joining.join(0.2)
        gone = followers.exited() if followers is not None else None
        if gone is not None:
            raise HostfileError(f"rank {gone[0]} exited with code {gone[1]} before the group formed")
        if time.monotonic() > deadline:
            raise HostfileError(f"the other ranks did not join within {JOIN_SECONDS:.0f} s")
    if "error" in outcome:
        raise HostfileError(f"the distributed group could not form: {outcome['error']}")
    return outcome["group"]
