"""``--distributed HOSTS``: MLX's host file or a rank count, read before anything starts, and the
clear errors for what cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inference.backends.mlx.distributed.launcher import Host, HostfileError, read_hosts, ring_addresses


def test_a_count_is_that_many_local_ranks_on_free_loopback_ports() -> None:
    hosts = read_hosts("3")
    assert hosts == [Host("127.0.0.1", ("127.0.0.1",))] * 3 and all(h.local for h in hosts)
    addresses = ring_addresses(hosts, port=40000)
    assert len(addresses) == 3 and all(a[0].startswith("127.0.0.1:") for a in addresses)
    assert len({a[0] for a in addresses}) == 3


def test_mlx_host_file_across_machines_gives_one_ring_address_per_rank(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    entries = [{"ssh": "mac-a.local", "ips": ["10.0.0.1"]}, {"ssh": "mac-b.local", "ips": ["10.0.0.2"]}]
    hostfile.write_text(json.dumps(entries))
    hosts = read_hosts(str(hostfile))
    assert [h.ssh for h in hosts] == ["mac-a.local", "mac-b.local"] and not hosts[1].local
    assert ring_addresses(hosts, port=32323) == [["10.0.0.1:32323"], ["10.0.0.2:32324"]]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read the host file"),
        ("not json", "is not JSON"),
        ('[{"ssh": "a", "ips": ["1.2.3.4"]}]', "at least 2 hosts"),
        ('[{"ssh": "a", "ips": ["1.2.3.4"]}, {"ssh": "b"}]', "host 1 (b) in"),
        ('[{"ips": ["1.2.3.4"]}, {"ssh": "b", "ips": ["1.2.3.5"]}]', "host 0 in"),
    ],
)
def test_unusable_host_files_say_what_is_wrong(tmp_path: Path, content: str | None, says: str) -> None:
    hostfile = tmp_path / "hosts.json"
    if content is not None:
        hostfile.write_text(content)
    with pytest.raises(HostfileError, match=says.replace("(", r"\(").replace(")", r"\)")):
        read_hosts(str(hostfile))
    with pytest.raises(HostfileError, match="at least 2 ranks"):
        read_hosts("1")


def test_serve_with_a_missing_host_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1:0", "--models", str(tmp_path),
         "--distributed", str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot read the host file")
