"""Private instances of the container clients pyoci runs under: containerd (ctr and CRI),
dockerd and podman (a configuration; podman has no daemon). Each keeps all its state under
one work directory, listens only on unix sockets in it, and is stopped by PID; `stop` also
ends the helper processes it left (shims, conmon) by PID and unmounts what it left mounted.

Run as root. Only the standard library: the tests import this module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

RUNC = shutil.which("runc") or "/usr/sbin/runc"
PAUSE_IMAGE = "localhost/pause:test"
BUSYBOX_IMAGE = "localhost/busybox:test"
READY_TIMEOUT = 60.0  # how long a daemon may take to come up before we give up on it


class Daemon:
    """A started daemon (or client configuration): its work directory and process."""

    def __init__(self, kind: str, workdir: str, proc: subprocess.Popen | None, env: dict,
                 address: str = ""):
        self.kind = kind
        self.workdir = workdir
        self.proc = proc
        self.env = env
        self.address = address


def workdir(kind: str) -> str:
    """A short private directory (unix socket paths are limited to 108 bytes)."""
    return tempfile.mkdtemp(prefix=f"pyoci-{kind}-", dir="/tmp")


def _wait_until(ready, what: str, proc: subprocess.Popen | None, log: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {READY_TIMEOUT}s: {_tail(log)}")
        time.sleep(0.1)


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _spawn(argv: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env, start_new_session=True)


def _ok(argv: list[str], env: dict | None = None) -> bool:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env).returncode == 0


# --- containerd -------------------------------------------------------------------------

def containerd_config(wd: str, runtimes: dict[str, str],
                      shim_runtimes: dict[str, str] | None = None) -> str:
    """config.toml: private root/state/socket, CRI with one runtime handler per binary
    (io.containerd.runc.v2 with BinaryName) and one per shim runtime type in shim_runtimes
    (handler name -> runtime_type, e.g. io.containerd.pyoci.v2), cgroupfs, host-network pods
    only."""
    lines = [
        "version = 2",
        f'root = "{wd}/root"',
        f'state = "{wd}/state"',
        "[grpc]",
        f'  address = "{wd}/containerd.sock"',
        "[ttrpc]",
        f'  address = "{wd}/containerd.sock.ttrpc"',
        "[debug]",
        '  level = "debug"',
        '[plugins."io.containerd.grpc.v1.cri"]',
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        "  restrict_oom_score_adj = true",
        "  disable_apparmor = true",
        "  enable_selinux = false",
        '[plugins."io.containerd.grpc.v1.cri".cni]',
        f'  bin_dir = "{wd}/cni/bin"',
        f'  conf_dir = "{wd}/cni/conf"',
        '[plugins."io.containerd.grpc.v1.cri".containerd]',
        '  default_runtime_name = "runc"',
    ]
    for name, binary in runtimes.items():
        base = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}'
        lines += [base + "]", '  runtime_type = "io.containerd.runc.v2"',
                  base + ".options]", f'  BinaryName = "{binary}"', "  SystemdCgroup = false"]
    for name, runtime_type in (shim_runtimes or {}).items():
        base = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}'
        lines += [base + "]", f'  runtime_type = "{runtime_type}"']
    path = os.path.join(wd, "config.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_containerd(runtimes: dict[str, str], shim_runtimes: dict[str, str] | None = None,
                     env: dict | None = None) -> Daemon:
    """containerd with its own config; env (default: ours) is containerd's environment,
    and so its shims' (their PATH decides which shim and runtime binaries exist)."""
    wd = workdir("containerd")
    containerd_config(wd, runtimes, shim_runtimes)
    env = dict(os.environ) if env is None else env
    d = Daemon("containerd", wd, None, env, os.path.join(wd, "containerd.sock"))
    _run_containerd(d)
    return d


def _run_containerd(d: Daemon) -> None:
    log = os.path.join(d.workdir, "containerd.log")
    argv = [shutil.which("containerd", path=d.env.get("PATH")) or "containerd", "--config",
            os.path.join(d.workdir, "config.toml")]
    d.proc = _spawn(argv, log, d.env)
    try:
        _wait_until(lambda: _ok(["ctr", "--address", d.address, "version"]), "containerd",
                    d.proc, log)
    except BaseException:
        stop(d)
        raise


def restart_containerd(d: Daemon) -> None:
    """Stop containerd alone (its shims and containers go on running) and start it again
    on the same state."""
    d.proc.terminate()
    try:
        d.proc.wait(30)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
    _run_containerd(d)


def ctr(d: Daemon, *args: str, namespace: str = "default") -> list[str]:
    return ["ctr", "--address", d.address, "--namespace", namespace, *args]


# --- dockerd ----------------------------------------------------------------------------

def start_dockerd(runtimes: dict[str, str]) -> Daemon:
    """dockerd with its own managed containerd, overlay2, cgroupfs, no bridge/iptables."""
    wd = workdir("dockerd")
    cfgfile = os.path.join(wd, "daemon.json")
    with open(cfgfile, "w") as f:
        f.write("{}\n")
    sock = os.path.join(wd, "docker.sock")
    argv = ["dockerd", "--config-file", cfgfile, "--data-root", f"{wd}/data",
            "--exec-root", f"{wd}/exec", "--pidfile", f"{wd}/docker.pid",
            "--host", f"unix://{sock}", "--bridge", "none", "--iptables=false",
            "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false",
            "--storage-driver", "overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--debug"]
    for name, binary in runtimes.items():
        if name != "runc":
            argv += ["--add-runtime", f"{name}={binary}"]
    log = os.path.join(wd, "dockerd.log")
    env = dict(os.environ, DOCKER_CONFIG=os.path.join(wd, "client"))
    proc = _spawn(argv, log, env)
    d = Daemon("dockerd", wd, proc, env, sock)
    try:
        _wait_until(lambda: _ok(docker(d, "version"), env), "dockerd", proc, log)
    except BaseException:
        stop(d)
        raise
    return d


def docker(d: Daemon, *args: str) -> list[str]:
    return ["/usr/bin/docker", "--host", f"unix://{d.address}", *args]


# --- podman -----------------------------------------------------------------------------

def setup_podman(runtimes: dict[str, str]) -> Daemon:
    """containers.conf and storage.conf under a work directory; the returned env points
    podman at them. pyoci is listed in runtime_supports_json so podman passes it
    --log-format=json; default ulimits fit a host without CAP_SYS_RESOURCE."""
    wd = workdir("podman")
    rt_lines = "".join(f'{n} = ["{b}"]\n' for n, b in runtimes.items())
    supports_json = ", ".join(f'"{n}"' for n in ["crun", "runc", "kata", "runsc", "krun",
                                                  *runtimes])
    with open(os.path.join(wd, "containers.conf"), "w") as f:
        f.write(f"""[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{wd}/events.log"
tmp_dir = "{wd}/tmp"
volume_path = "{wd}/volumes"
static_dir = "{wd}/storage/libpod"
runtime_supports_json = [{supports_json}]
conmon_path = ["/usr/bin/conmon"]

[engine.runtimes]
{rt_lines}""")
    with open(os.path.join(wd, "storage.conf"), "w") as f:
        f.write(f"""[storage]
driver = "overlay"
graphroot = "{wd}/storage"
runroot = "{wd}/run"
""")
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(wd, "containers.conf"),
               CONTAINERS_STORAGE_CONF=os.path.join(wd, "storage.conf"),
               XDG_CONFIG_HOME=os.path.join(wd, "config"),
               XDG_DATA_HOME=os.path.join(wd, "data"))
    return Daemon("podman", wd, None, env)


def podman(d: Daemon, *args: str) -> list[str]:
    return ["podman", *args]


# --- stopping -----------------------------------------------------------------------------

def _pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions text (our work directory: shims, conmon)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def _kill_wait(pids: list[int], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        wpid, _ = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _unmount_under(path: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in reversed(points):
        mp = mp.encode().decode("unicode_escape")
        if mp == path or mp.startswith(path + "/"):
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def stop(d: Daemon) -> None:
    """Stop the daemon by PID, then its leftovers (shims, conmon) by PID, unmount everything
    under its work directory and remove it."""
    if d.proc is not None and d.proc.poll() is None:
        d.proc.terminate()
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
    _kill_wait(_pids_mentioning(d.workdir))
    _unmount_under(d.workdir)
    shutil.rmtree(d.workdir, ignore_errors=True)
