"""process.apparmorProfile: the container process (and `exec`) are confined by a profile that
denies reading a file (runs inside the lane's guest, whose kernel has AppArmor)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lanekit import create

PROFILE = "pyoci-lane-deny-secret"
SECRET = "/etc/lane-secret"
POLICY = f"""abi <abi/3.0>,
profile {PROFILE} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  mount,
  umount,
  pivot_root,
  signal,
  ptrace,
  unix,
  deny {SECRET} r,
}}
"""
PROBE = (f"cat /proc/self/attr/current; "
         f"if cat {SECRET} >/dev/null; then echo READ-OK; else echo READ-DENIED; fi")


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """Load the profile with apparmor_parser; unload it afterwards."""
    parser = shutil.which("apparmor_parser")
    if not parser or not apparmor_enabled():
        pytest.skip("AppArmor is not enabled or apparmor_parser is missing")
    path = tmp_path_factory.mktemp("apparmor") / PROFILE
    path.write_text(POLICY)
    subprocess.run([parser, "--replace", "--skip-cache", str(path)], check=True,
                   capture_output=True)
    yield PROFILE
    subprocess.run([parser, "--remove", str(path)], check=False, capture_output=True)


def secret_bundle(bundle_factory, config, args, profile):
    config["process"]["args"] = args
    config["process"]["apparmorProfile"] = profile
    bundle = bundle_factory(config)
    with open(os.path.join(bundle, "rootfs", SECRET.lstrip("/")), "w") as f:
        f.write("secret\n")
    return bundle


def test_profile_confines_process(lane_runtime, lane_config, bundle_factory, cid, profile):
    rt = lane_runtime
    bundle = secret_bundle(bundle_factory, lane_config, ["sh", "-c", PROBE], profile)
    r = rt("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    current, verdict = r.stdout.strip().splitlines()
    assert current == f"{profile} (enforce)"
    assert verdict == "READ-DENIED"
    assert "Permission denied" in r.stderr


def test_exec_gets_profile(lane_runtime, lane_config, bundle_factory, cid, profile, tmp_path):
    rt = lane_runtime
    bundle = secret_bundle(bundle_factory, lane_config, ["sleep", "1000"], profile)
    create(rt, bundle, cid, str(tmp_path))
    rt("start", cid, check=True)
    r = rt("exec", cid, "sh", "-c", PROBE)
    assert r.returncode == 0, r.stderr
    current, verdict = r.stdout.strip().splitlines()
    assert current == f"{profile} (enforce)"
    assert verdict == "READ-DENIED"


def test_unconfined_control(lane_runtime, lane_config, bundle_factory, cid):
    """Without apparmorProfile the same probe reads the file: the denial above is the
    profile's doing."""
    rt = lane_runtime
    lane_config["process"]["args"] = ["sh", "-c", PROBE]
    bundle = bundle_factory(lane_config)
    with open(os.path.join(bundle, "rootfs", SECRET.lstrip("/")), "w") as f:
        f.write("secret\n")
    r = rt("run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "READ-OK"
