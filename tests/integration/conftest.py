"""Integration tests run the real parts: Open vSwitch (userspace datapath), Mininet,
ryu-manager, redis-server and Linux TCP. They need root; CI runs as root."""
import os

import pytest

from tests.integration.rest_server import rest  # noqa: F401 -- the REST tests' server, a fixture
from topology.lock import lab_lock
from topology.processes import Ovs


@pytest.fixture(scope="session", autouse=True)
def ovs():
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, Open vSwitch); run ./run.sh test as root")
    # The machine's one lab at a time (topology/lock.py): the session waits for any
    # other lab user, and the benchmarks its smoke tests start run under its hold.
    with lab_lock():
        switch = Ovs()
        switch.start()
        yield switch
        switch.stop()


@pytest.fixture
def run_dir():
    # Under /run: short paths (unix socket names are limited to 107 bytes).
    return "/run/ftcp-test"
