"""Fixtures for the full-kernel lane (tests that run inside `lane/run`'s QEMU guest).

Everything here skips unless /sys/fs/cgroup is a cgroup2 mount offering the memory controller,
i.e. unless we run in the lane's guest (or on another pure cgroup v2 host). Tests are
parametrised over the runtimes present: runc and crun as controls, pyoci as the subject.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lanekit import (CGROUP_ROOT, HERE, IN_LANE, PARENT, SYSTEMD_PID1,  # noqa: E402
                     make_runtime, remove_cgroup_tree)


def pytest_collection_modifyitems(config, items):
    for item in items:               # everything here is a lane test (`-m lane` selects it)
        if str(item.fspath).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.lane)
    if IN_LANE:
        return
    skip = pytest.mark.skip(reason="needs a pure cgroup v2 host with the memory controller "
                                   "(run it in the lane: lane/run -- .venv/bin/python -m "
                                   "pytest tests/lane)")
    for item in items:
        if str(item.fspath).startswith(HERE + os.sep):
            item.add_marker(skip)


@pytest.fixture
def crun():
    rt = make_runtime("crun")
    yield rt
    rt.cleanup()


@pytest.fixture(params=["runc", "crun", "pyoci"])
def lane_runtime(request):
    """Each available runtime with the cgroupfs driver; cleans up its containers."""
    rt = make_runtime(request.param)
    yield rt
    rt.cleanup()
    remove_cgroup_tree(os.path.join(CGROUP_ROOT, PARENT))


@pytest.fixture(params=["runc", "crun", "pyoci"])
def systemd_runtime(request):
    """Each available runtime with the systemd cgroup driver (needs lane/run --systemd)."""
    if not SYSTEMD_PID1:
        pytest.skip("systemd is not PID 1 (use lane/run --systemd)")
    rt = make_runtime(request.param, systemd=True)
    yield rt
    rt.cleanup()


@pytest.fixture
def cid():
    return "lane-" + uuid.uuid4().hex[:10]


# crun 1.8.1 refuses any ociVersion but 1.0.x ("unknown version specified"); the configs
# these tests write use nothing newer, so crun gets them labelled 1.0.2.
OCI_VERSION = {"crun": "1.0.2"}


def runtime_param(request) -> str | None:
    params = getattr(request.node, "callspec", None)
    params = params.params if params else {}
    return params.get("lane_runtime") or params.get("systemd_runtime")


@pytest.fixture
def config(config, request):
    """tests/conftest.py's default config, with an ociVersion the runtime accepts."""
    config["ociVersion"] = OCI_VERSION.get(runtime_param(request), config["ociVersion"])
    return config


@pytest.fixture
def lane_config(config, cid):
    """The default config, with a cgroupfs path under PARENT named after the container."""
    config["linux"]["cgroupsPath"] = f"/{PARENT}/{cid}"
    return config


@pytest.fixture
def loop_device(tmp_path):
    """A loop block device backed by a file on the guest's tmpfs; yields (major, minor)."""
    losetup = shutil.which("losetup")
    if not losetup or not os.path.exists("/dev/loop-control"):
        pytest.skip("io.max needs a block device: no losetup or loop driver here")
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(16 << 20)
    r = subprocess.run([losetup, "--find", "--show", str(backing)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"io.max needs a block device: losetup failed: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        st = os.stat(dev)
        yield os.major(st.st_rdev), os.minor(st.st_rdev)
    finally:
        subprocess.run([losetup, "--detach", dev], check=False)
