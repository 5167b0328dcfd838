"""Cluster node ports sit below the kernel's ephemeral range, bus ports included: a node
killed and restarted on its port must find it free, and a client reconnecting to a port of
the ephemeral range can connect to itself and hold it (a CI failure: "Address already in
use" at a restart)."""

from __future__ import annotations

from streams.devtools.embedded_cluster import _ephemeral_low, _pick_port


def test_node_and_bus_ports_are_below_the_ephemeral_range() -> None:
    low = _ephemeral_low()
    assert low > 22_000  # the kernel's default 32,768 here; the test needs room below it
    for _ in range(50):
        port = _pick_port()
        assert port >= 1024 and port + 10_000 < low, port
