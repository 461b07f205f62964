"""`podman container checkpoint` / `restore` with `--runtime pyoci` and `--runtime runc`, in
the lane's guest where CRIU works: a counter container (busybox image built offline) is
checkpointed (podman shows it exited), restored (running again) and its log goes on N+1 after
N. `--network none`: a network namespace of its own with loopback only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from lanekit import PYOCI, REPO
from support.harness import reap_zombies

CRIU = shutil.which("criu") or "/usr/sbin/criu"
RUNTIMES = {"pyoci": PYOCI, "runc": shutil.which("runc")}
IMAGE = "localhost/busybox:test"
COUNTER = "i=0; while :; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done"

pytestmark = pytest.mark.skipif(
    not shutil.which("podman") or not shutil.which("conmon") or not os.path.exists(CRIU)
    or subprocess.run([CRIU, "check"], capture_output=True).returncode != 0,
    reason="needs podman, conmon and a working CRIU (`criu check`)")


@pytest.fixture(scope="module")
def podman_env():
    wd = tempfile.mkdtemp(prefix="pyoci-lane-podman-")
    with open(os.path.join(wd, "containers.conf"), "w") as f:
        f.write(f"""[containers]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{wd}/events.log"
runtime_supports_json = ["crun", "runc", "pyoci"]

[engine.runtimes]
pyoci = ["{PYOCI}"]
""")
    with open(os.path.join(wd, "storage.conf"), "w") as f:
        f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{wd}/storage"\n'
                f'runroot = "{wd}/run"\n')
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(wd, "containers.conf"),
               CONTAINERS_STORAGE_CONF=os.path.join(wd, "storage.conf"),
               XDG_CONFIG_HOME=os.path.join(wd, "config"),
               XDG_DATA_HOME=os.path.join(wd, "data"))
    image = os.path.join(wd, "busybox.tar")
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "clients", "image.py"),
                    image, IMAGE], check=True, capture_output=True)
    r = pm(env, "load", "-i", image)
    assert r.returncode == 0, r.stderr
    yield env
    pm(env, "rm", "--all", "--force", "--time", "0")
    shutil.rmtree(wd, ignore_errors=True)


def pm(env, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["podman", *args], env=env, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=err, timeout=600)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(args, p.returncode, out.read().decode(),
                                        err.read().decode())
    reap_zombies()
    return r


def log_values(env, name: str) -> list[int]:
    r = pm(env, "exec", name, "cat", "/tmp/log")
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


def wait_values(env, name: str, n: int) -> list[int]:
    end = time.monotonic() + 120           # only guards against a hang
    while True:
        v = log_values(env, name)
        if len(v) >= n:
            return v
        assert time.monotonic() < end, f"{name}: {len(v)} values logged, not {n}"
        time.sleep(0.2)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_podman_checkpoint_restore(podman_env, name):
    runtime = RUNTIMES[name]
    if not runtime:
        pytest.skip(f"{name} is not installed")
    env, cname = podman_env, f"cr-{name}"
    r = pm(env, "run", "-d", "--network", "none", "--name", cname, "--runtime", runtime,
           IMAGE, "sh", "-c", COUNTER)
    assert r.returncode == 0, r.stderr
    try:
        wait_values(env, cname, 5)
        r = pm(env, "container", "checkpoint", cname)
        assert r.returncode == 0, r.stderr
        r = pm(env, "inspect", "--format", "{{.State.Status}} {{.State.Checkpointed}}",
               cname)
        assert r.stdout.split() == ["exited", "true"], r.stdout
        r = pm(env, "container", "restore", cname)
        assert r.returncode == 0, r.stderr
        r = pm(env, "inspect", "--format", "{{.State.Status}} {{.OCIRuntime}}", cname)
        assert r.stdout.split() == ["running", runtime]
        first = log_values(env, cname)
        v = wait_values(env, cname, len(first) + 5)
        assert v == list(range(1, len(v) + 1))         # N+1 after N: no restart at 1
    finally:
        pm(env, "rm", "--force", "--time", "0", cname)
