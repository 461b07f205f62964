"""Regressions for the pyoci bugs the conformance suite found (conformance/REPORT.md): each
test names the check it stands for. Real containers; every error must leave nothing behind."""

from __future__ import annotations

import os
import time

import pytest

from support.harness import reap_zombies

pytestmark = pytest.mark.integration


def wait_stopped(rt, cid: str) -> None:
    deadline = time.monotonic() + 30
    while rt.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, f"{cid} did not stop"
        reap_zombies()
        time.sleep(0.02)


def rejected_at_create(rt, b: str, cid: str, field: str) -> None:
    r = rt("create", "-b", b, cid)
    assert r.returncode == 1, r.stderr
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert rt("state", cid).returncode == 1
    assert not os.path.exists(os.path.join(rt.root, cid))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_exec_cpu_affinity_final_pins_the_program(pyoci, bundle_factory, config):
    """exec_cpu_affinity: execCPUAffinity.final was looked up in process, not in the object."""
    config["process"]["args"] = ["grep", "Cpus_allowed_list", "/proc/self/status"]
    config["process"]["execCPUAffinity"] = {"initial": "0", "final": "1"}
    b = bundle_factory(config)
    r = pyoci("run", "aff", cwd=b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Cpus_allowed_list:", "1"]


def test_failing_start_container_hook_fails_start(pyoci, bundle_factory, config):
    """start_container_hook_fails: start reported success although the hook failed."""
    config["process"]["args"] = ["touch", "/ran"]
    config["root"]["readonly"] = False
    config["hooks"] = {"startContainer": [{"path": "/bin/false", "args": ["false"]}]}
    b = bundle_factory(config)
    pyoci("create", "-b", b, "sc", check=True)
    r = pyoci("start", "sc")
    assert r.returncode == 1
    assert "startContainer" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    wait_stopped(pyoci, "sc")
    assert not os.path.exists(os.path.join(b, "rootfs", "ran"))
    pyoci("delete", "sc", check=True)
    assert not os.path.exists(os.path.join(pyoci.root, "sc"))


def test_passing_start_container_hook_starts(pyoci, bundle_factory, config):
    config["process"]["args"] = ["touch", "/ran"]
    config["root"]["readonly"] = False
    config["hooks"] = {"startContainer": [{"path": "/bin/true", "args": ["true"]}]}
    b = bundle_factory(config)
    pyoci("create", "-b", b, "sc2", check=True)
    pyoci("start", "sc2", check=True)
    wait_stopped(pyoci, "sc2")
    assert os.path.exists(os.path.join(b, "rootfs", "ran"))
    pyoci("delete", "sc2", check=True)


def test_empty_annotation_key_is_rejected(pyoci, bundle_factory, config):
    """annotations_empty_key"""
    config["annotations"] = {"": "x"}
    rejected_at_create(pyoci, bundle_factory(config), "ak", "annotations")


def test_weight_device_without_weights_is_rejected(pyoci, bundle_factory, config):
    """blkio_weight_device_empty"""
    config["linux"].setdefault("resources", {})["blockIO"] = {
        "weightDevice": [{"major": 8, "minor": 0, "weight": 10}, {"major": 8, "minor": 16}]}
    rejected_at_create(pyoci, bundle_factory(config), "wd",
                       "linux.resources.blockIO.weightDevice[1]")


def test_device_over_a_different_file_is_rejected(pyoci, bundle_factory, config):
    """device_path_conflict"""
    config["linux"]["devices"] = [{"path": "/etc/hostname", "type": "c", "major": 1,
                                   "minor": 3}]
    b = bundle_factory(config)
    os.makedirs(os.path.join(b, "rootfs", "etc"), exist_ok=True)
    with open(os.path.join(b, "rootfs", "etc", "hostname"), "w") as f:
        f.write("x\n")
    rejected_at_create(pyoci, b, "dv", "linux.devices[0].path")


def test_relative_mount_destination_is_relative_to_root(runtime, bundle_factory, config):
    """mount_destination_relative: v1.2.0+ accepts it (deprecated), relative to "/"."""
    config["process"]["args"] = ["grep", " /mnt/rel ", "/proc/self/mountinfo"]
    config["mounts"].append({"destination": "mnt/rel", "type": "tmpfs", "source": "tmpfs"})
    b = bundle_factory(config)
    r = runtime("run", "rel", cwd=b)
    assert r.returncode == 0, r.stderr
    assert "tmpfs" in r.stdout
