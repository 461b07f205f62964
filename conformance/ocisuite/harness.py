"""Drive a runtime binary against generated bundles: private --root, bounded waits, cleanup."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
CONFORMANCE = os.path.dirname(HERE)
REPO = os.path.dirname(CONFORMANCE)
BUILD = os.path.join(CONFORMANCE, "build")
CHECKER_SRC = os.path.join(CONFORMANCE, "checker.c")
CHECKER_IN_CONTAINER = "/bin/ocicheck"
HOOK_HELPER = os.path.join(HERE, "hook.py")
COMMAND_TIMEOUT = 60.0
WAIT_TIMEOUT = 30.0
CGROUP_PREFIX = "ocict-"

# The ociVersion a runtime's configs are labelled with, where a released runtime refuses the
# target version although it implements what the checks use: crun 1.8.1 accepts only 1.0.x
# ("unknown version specified"). `--oci-version NAME=VERSION` overrides; the report records it.
OCI_VERSIONS = {"crun": "1.0.2"}

if os.path.join(REPO, "tests") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "tests"))
from support.procs import reap_zombies  # noqa: E402
from support.procs import set_subreaper as set_subreaper  # noqa: E402 - the CLIs call it here
from support.rootfs import base_config, build_rootfs  # noqa: E402


class CheckFailed(Exception):
    """The runtime did not do what the spec requires."""


class CheckSkipped(Exception):
    """The check cannot run on this host (the message says why)."""


def build_checker(force: bool = False) -> str:
    """Compile checker.c with gcc -static into conformance/build/ocicheck (if out of date)."""
    os.makedirs(BUILD, exist_ok=True)
    out = os.path.join(BUILD, "ocicheck")
    if (not force and os.path.exists(out)
            and os.path.getmtime(out) >= os.path.getmtime(CHECKER_SRC)):
        return out
    cc = os.environ.get("CC", "gcc")
    tmp = out + ".tmp"
    r = subprocess.run([cc, "-static", "-O2", "-Wall", "-o", tmp, CHECKER_SRC],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"building the checker failed: {r.stderr.strip()}")
    os.replace(tmp, out)
    return out


def prepare_rootfs() -> str:
    """A cached busybox rootfs with the checker at /bin/ocicheck; returns its path."""
    checker = build_checker()
    rootfs = build_rootfs(os.path.join(BUILD, "rootfs"))
    dest = os.path.join(rootfs, CHECKER_IN_CONTAINER.lstrip("/"))
    if not os.path.exists(dest) or os.path.getmtime(dest) < os.path.getmtime(checker):
        shutil.copy2(checker, dest)
    return rootfs


def resolve_runtime(spec: str) -> str:
    """pyoci | runc | crun | /path -> an absolute path to the binary."""
    if os.sep in spec:
        path = os.path.abspath(spec)
    elif spec == "pyoci" and os.path.exists(os.path.join(REPO, ".venv", "bin", "pyoci")):
        path = os.path.join(REPO, ".venv", "bin", "pyoci")
    else:
        path = shutil.which(spec) or ""
    if not path or not os.access(path, os.X_OK):
        raise FileNotFoundError(f"runtime {spec!r} not found or not executable")
    return path


def runtime_version(path: str) -> str:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True,
                           timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


@dataclass
class Result:
    argv: list[str]
    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self) -> str:
        msg = (self.err.strip() or self.out.strip()).splitlines()
        return (f"`{' '.join(self.argv[3:])}` exited {self.rc}"
                + (f": {msg[-1][:200]}" if msg else ""))


class Runtime:
    """One runtime binary used with a private --root directory."""

    def __init__(self, binary: str, root: str, workdir: str):
        self.binary = binary
        self.root = root
        self.workdir = workdir
        self.name = os.path.basename(binary)

    def run(self, *args: str, timeout: float | None = None, stdout: str | None = None,
            stdin: str | None = None) -> Result:
        """Run `binary --root ROOT args...`; stdio goes to files so container processes that
        inherit them never block us. A timeout is reported as rc -1 (never hangs)."""
        argv = [self.binary, "--root", self.root, *args]
        timeout = timeout or COMMAND_TIMEOUT
        fd, errpath = tempfile.mkstemp(dir=self.workdir, suffix=".err")
        os.close(fd)
        outpath = stdout or errpath[:-4] + ".out"
        with open(outpath, "wb") as out, open(errpath, "wb") as err, \
                open(stdin or os.devnull, "rb") as inp:
            proc = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
                rc = -1
        reap_zombies()
        with open(errpath, errors="replace") as f:
            errtext = f.read()
        if rc == -1:
            errtext += f"\n(timed out after {timeout:.0f}s)"
        outtext = ""
        if stdout is None:
            with open(outpath, errors="replace") as f:
                outtext = f.read()
            os.unlink(outpath)
        os.unlink(errpath)
        return Result(argv, rc, outtext, errtext)

    def create(self, cid: str, bundle: str, stdout: str | None = None,
               pid_file: str | None = None) -> Result:
        args = ["create", "--bundle", bundle]
        if pid_file:
            args += ["--pid-file", pid_file]
        return self.run(*args, cid, stdout=stdout)

    def start(self, cid: str) -> Result:
        return self.run("start", cid)

    def kill(self, cid: str, sig: str = "KILL") -> Result:
        return self.run("kill", cid, sig)

    def delete(self, cid: str, force: bool = False) -> Result:
        return self.run("delete", *(["--force"] if force else []), cid)

    def state(self, cid: str) -> dict | None:
        """The state JSON, or None when the runtime says there is no such container."""
        r = self.run("state", cid)
        if not r.ok:
            return None
        try:
            return json.loads(r.out)
        except ValueError as e:
            raise CheckFailed(f"state {cid}: output is not JSON ({e}): {r.out[:200]!r}") from None

    def entries(self) -> list[str]:
        """Names the runtime keeps under its --root (its own record of containers)."""
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def cleanup(self) -> list[str]:
        """Force-delete everything under our --root; returns ids that needed it."""
        left = self.entries()
        for cid in left:
            if os.path.isdir(os.path.join(self.root, cid)):
                self.run("kill", cid, "KILL", timeout=30)
                self.run("delete", "--force", cid, timeout=30)
        reap_zombies()
        return left


# --- cgroups (v1 hierarchies and the unified mount), relative to our own cgroup -------------

def own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path (from /proc/self/cgroup)."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else ["unified"]):
                out[c.replace("name=", "")] = path
    return out


def cgroup_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (mount point, mount root) from /proc/self/mountinfo."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            parts, rparts = left.split(), right.split()
            if rparts[0] == "cgroup2":
                out["unified"] = (parts[4], parts[3])
            elif rparts[0] == "cgroup":
                for opt in rparts[2].split(","):
                    if opt not in ("rw", "ro") and "=" not in opt or opt.startswith("name="):
                        out[opt.replace("name=", "")] = (parts[4], parts[3])
    return out


def cgroup_dir(controller: str, cgroups_path: str) -> str | None:
    """Host directory of cgroupsPath in one v1 controller, the way runc resolves it: an
    absolute path is relative to the hierarchy's root, a relative one to our own cgroup."""
    mounts = cgroup_mounts()
    if controller not in mounts:
        return None
    mnt, root = mounts[controller]
    if cgroups_path.startswith("/"):
        inner = cgroups_path
    else:
        inner = os.path.join(own_cgroups().get(controller, "/"), cgroups_path)
    rel = os.path.relpath(inner, root) if inner.startswith(root) else inner.lstrip("/")
    return os.path.normpath(os.path.join(mnt, rel))


def leftover_cgroups(cgroups_path: str) -> list[str]:
    """Host cgroup directories still present for cgroupsPath in any hierarchy."""
    out = []
    for ctrl in cgroup_mounts():
        d = cgroup_dir(ctrl, cgroups_path)
        if d and os.path.isdir(d):
            out.append(d)
    return out


def remove_cgroups(cgroups_path: str) -> None:
    for d in leftover_cgroups(cgroups_path):
        for sub, _, _ in sorted(os.walk(d), key=lambda t: -len(t[0])):
            try:
                os.rmdir(sub)
            except OSError:
                pass


# --- per-check context ----------------------------------------------------------------------

class Ctx:
    """Everything one check needs: a private --root, a temp dir, ids, bundles; cleanup()
    removes containers, cgroups and files even after a failure."""

    def __init__(self, binary: str, rootfs_cache: str, check_name: str, tmp_base: str | None = None,
                 oci_version: str | None = None):
        self.oci_version = oci_version
        self.workdir = tempfile.mkdtemp(prefix=f"oci-{check_name[:20]}-", dir=tmp_base)
        os.chmod(self.workdir, 0o755)  # container root may be a mapped, unprivileged uid
        self.rt = Runtime(binary, os.path.join(self.workdir, "root"), self.workdir)
        os.makedirs(self.rt.root)
        self.rootfs_cache = rootfs_cache
        self.check_name = check_name
        self.ids: list[str] = []
        self.cleanups: list = []
        self.notes: list[str] = []

    # ids, configs and bundles
    def new_id(self) -> str:
        cid = f"oct{len(self.ids)}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def cgroups_path(self, cid: str) -> str:
        return CGROUP_PREFIX + cid

    def config(self, cid: str, args: list[str] | None = None, probes: list[str] = ()) -> dict:
        """runc-spec-like config running the checker (or args), with a per-container
        relative cgroupsPath so leftovers can be found."""
        cfg = base_config(args or [CHECKER_IN_CONTAINER, *probes])
        if self.oci_version:
            cfg["ociVersion"] = self.oci_version
        cfg["linux"]["cgroupsPath"] = self.cgroups_path(cid)
        return cfg

    def bundle(self, cid: str, cfg: dict | None, name: str | None = None,
               config_name: str = "config.json") -> str:
        b = os.path.join(self.workdir, name or f"bundle-{cid}")
        os.makedirs(b, exist_ok=True)
        rootfs = os.path.join(b, "rootfs")
        if not os.path.exists(rootfs):
            r = subprocess.run(["cp", "-a", self.rootfs_cache, rootfs], capture_output=True,
                               text=True, timeout=COMMAND_TIMEOUT)
            if r.returncode != 0:
                raise RuntimeError(f"copying rootfs failed: {r.stderr}")
        if cfg is not None:
            write_json(os.path.join(b, config_name), cfg)
        return b

    def out_path(self, cid: str) -> str:
        return os.path.join(self.workdir, f"{cid}.stdout")

    # lifecycle helpers
    def create(self, cid: str, cfg: dict | None = None, bundle: str | None = None,
               must: bool = True) -> Result:
        bundle = bundle or self.bundle(cid, cfg)
        r = self.rt.create(cid, bundle, stdout=self.out_path(cid))
        if must and not r.ok:
            raise CheckFailed(f"create failed: {r.describe()}")
        return r

    def start(self, cid: str) -> Result:
        r = self.rt.start(cid)
        if not r.ok:
            raise CheckFailed(f"start failed: {r.describe()}")
        return r

    def state(self, cid: str) -> dict:
        st = self.rt.state(cid)
        if st is None:
            raise CheckFailed(f"state {cid} failed for an existing container")
        return st

    def wait_status(self, cid: str, want: str = "stopped", timeout: float = WAIT_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        st: dict | None = None
        while time.monotonic() < deadline:
            reap_zombies()
            st = self.rt.state(cid)
            if st is None:
                raise CheckFailed(f"container {cid} vanished while waiting for {want}")
            if st.get("status") == want:
                return st
            time.sleep(0.05)
        raise CheckFailed(f"container {cid} still {st and st.get('status')!r} after "
                          f"{timeout:.0f}s waiting for {want!r}")

    def output(self, cid: str) -> str:
        try:
            with open(self.out_path(cid), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def run_to_end(self, cid: str, cfg: dict | None = None, bundle: str | None = None) -> str:
        """create, start, wait until stopped, delete; returns the container's stdout."""
        self.create(cid, cfg, bundle)
        self.start(cid)
        self.wait_status(cid, "stopped")
        out = self.output(cid)
        r = self.rt.delete(cid)
        if not r.ok:
            raise CheckFailed(f"delete of a stopped container failed: {r.describe()}")
        return out

    def probe(self, cfg: dict, cid: str | None = None) -> dict:
        """Run the checker in a container made from cfg; returns its JSON report."""
        cid = cid or self.new_id()
        out = self.run_to_end(cid, cfg)
        try:
            return json.loads(out)
        except ValueError:
            raise CheckFailed(f"the in-container checker printed no JSON: {out[:300]!r}") from None

    def nothing_created(self, cid: str) -> list[str]:
        """What exists for cid although its creation should have been refused."""
        problems = []
        if self.rt.state(cid) is not None:
            problems.append("`state` knows the container")
        if cid in self.rt.entries():
            problems.append(f"{cid} is left under --root")
        left = leftover_cgroups(self.cgroups_path(cid))
        if left:
            problems.append("cgroups left: " + ", ".join(left))
        return problems

    def expect_rejected(self, cid: str, cfg: dict | None = None, bundle: str | None = None,
                        what: str = "the config") -> Result:
        """create must fail and leave nothing behind (or, if the runtime defers the error to
        start, start must fail and the user program must not have run)."""
        r = self.create(cid, cfg, bundle, must=False)
        if r.ok:
            self.rt.delete(cid, force=True)
            raise CheckFailed(f"create accepted {what}")
        problems = self.nothing_created(cid)
        if problems:
            raise CheckFailed(f"create failed for {what} but left state: " + "; ".join(problems))
        return r

    def on_cleanup(self, fn) -> None:
        self.cleanups.append(fn)

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:
                pass
        self.rt.cleanup()
        for cid in self.ids:
            remove_cgroups(self.cgroups_path(cid))
        reap_zombies()
        shutil.rmtree(self.workdir, ignore_errors=True)


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def read_jsonl(path: str) -> list[dict]:
    """Records written by the hook helper (one JSON object per line)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def host_ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def mountinfo_entries(lines: list[str]) -> list[dict]:
    """Parse mountinfo lines into dicts: mountpoint, root, options, optional, fstype, source,
    super."""
    out = []
    for line in lines or []:
        left, right = line.split(" - ", 1)
        p, r = left.split(), right.split()
        out.append({"id": p[0], "parent": p[1], "root": p[3], "mountpoint": unescape(p[4]),
                    "options": p[5].split(","), "optional": p[6:], "fstype": r[0],
                    "source": r[1] if len(r) > 1 else "",
                    "super": r[2].split(",") if len(r) > 2 else []})
    return out


def unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def probe_result(report: dict, op: str, path: str) -> dict:
    for p in report.get("probes", []):
        if p.get("op") == op and p.get("path") == path:
            return p
    raise CheckFailed(f"checker has no {op}:{path} probe result")
