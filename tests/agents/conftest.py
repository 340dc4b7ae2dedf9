"""Fixtures of the agent tests: a network namespace joined to the root one by a veth pair."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.sensors.helpers import sh


@pytest.fixture
def veth_netns() -> Iterator[dict[str, str]]:
    """A network namespace joined to the root one by a veth pair; always removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    ns, root_if, ns_if = f"sl-xdp-{tag}", f"slx{tag}a", f"slx{tag}b"
    net = int(tag, 16) % 250 + 1
    root_ip, ns_ip = f"10.201.{net}.1", f"10.201.{net}.2"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{root_ip}/30", "dev", root_if)
        sh("ip", "link", "set", root_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "-n", ns, "link", "set", ns_if, "up")
        # a permanent neighbour entry: no ARP exchange to wait for (or to hold packets)
        mac = Path(f"/sys/class/net/{root_if}/address").read_text().strip()
        sh(
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            root_ip,
            "lladdr",
            mac,
            "dev",
            ns_if,
            "nud",
            "permanent",
        )
        yield {"ns": ns, "root_if": root_if, "root_ip": root_ip, "ns_ip": ns_ip}
    finally:
        subprocess.run(["ip", "link", "del", root_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert not Path(f"/sys/class/net/{root_if}").exists()
