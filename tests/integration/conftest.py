"""Integration tests run the real parts: Open vSwitch (userspace datapath), Mininet,
ryu-manager, redis-server and Linux TCP. They need root; CI runs as root."""
import os

import pytest

from topology.processes import Ovs


@pytest.fixture(scope="session", autouse=True)
def ovs():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, Open vSwitch); run ./run.sh test as root")
    switch = Ovs()
    switch.start()
    yield switch
    switch.stop()


@pytest.fixture
def run_dir():
    # Under /run: short paths (unix socket names are limited to 107 bytes).
    return "/run/ftcp-test"
