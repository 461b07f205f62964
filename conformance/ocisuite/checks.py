"""The checks. Each is a function taking a Ctx, registered with the catalogue codes it covers;
it returns None (pass) or raises CheckFailed / CheckSkipped. Docstring line 1 = description."""

from __future__ import annotations

import copy
import errno as E
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable

from .harness import (HOOK_HELPER, WAIT_TIMEOUT, CheckFailed, CheckSkipped, Ctx, cgroup_dir,
                      cgroup_mounts, host_ns, mountinfo_entries, own_cgroups, probe_result,
                      read_jsonl, reap_zombies, remove_cgroups, write_json)


@dataclass(frozen=True)
class Check:
    name: str
    codes: tuple[str, ...]
    description: str
    fn: Callable[[Ctx], None]


CHECKS: list[Check] = []


def check(*codes: str):
    def deco(fn):
        doc = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        CHECKS.append(Check(fn.__name__, codes, doc, fn))
        return fn
    return deco


# Catalogue codes that no check on a Linux runtime can exercise, with the reason.
NOT_TESTABLE = {
    "RootOnWindowsRequired": "Windows-only requirement (this suite targets Linux runtimes)",
    "RootOnHyperVNotSet": "Windows-only requirement (this suite targets Linux runtimes)",
    "RootPathOnWindowsGUID": "Windows-only requirement (this suite targets Linux runtimes)",
    "RootReadonlyOnWindowsFalse": "Windows-only requirement (this suite targets Linux runtimes)",
    "MountsDestOnWindowsNotNested": "Windows-only requirement (this suite targets Linux runtimes)",
    "MountsOptionsOnWindowsROSupport":
        "Windows-only requirement (this suite targets Linux runtimes)",
    "PlatformSpecConfOnWindowsSet": "Windows-only requirement (this suite targets Linux runtimes)",
    "WindowsLayerFoldersRequired": "Windows-only requirement (this suite targets Linux runtimes)",
    "WindowsHyperVPresent": "Windows-only requirement (this suite targets Linux runtimes)",
    "WindowsHyperVOmit": "Windows-only requirement (this suite targets Linux runtimes)",
    "RootPathOnPosixConvention":
        "bundle-authoring SHOULD (naming the rootfs); no runtime behaviour",
    "ArtifactsInSingleDir":
        "bundle-authoring rule about where artifacts live; no runtime behaviour",
    "AnnotationsKeyReversedDomain": "config-authoring SHOULD (key naming); no runtime behaviour",
    "AnnotationsKeyReservedNS": "reserves a key namespace for future specs; no runtime behaviour",
    "AnnotationsKeyString": "JSON object keys are always strings; a config cannot violate it",
    "DevicesErrorOnDup": "config-authoring SHOULD NOT; the spec gives runtimes no behaviour",
    "CgroupsPathError": "which cgroupsPath values are invalid is runtime-defined (MAY)",
}

# Known departures of released runtimes, explained in the report next to the failure.
KNOWN_DEPARTURES = {
    ("runc", "delete_created"): "runc 1.1 deletes a `created` container without --force "
                                "(it kills it first); the spec requires an error",
    ("runc", "hooks_state_status"): "runc 1.1 runs poststart hooks inside `create`, so they "
                                    "see status `created`",
    ("runc", "poststart_timing"): "runc 1.1 runs poststart hooks inside `create`, before the "
                                  "user program is executed",
    ("runc", "poststart_hook_fails"): "runc 1.1 runs poststart hooks inside `create` and "
                                      "fails the create when one fails",
    ("runc", "poststop_hook_fails"): "runc 1.1 stops at the first failing poststop hook",
    ("runc", "start_container_hook_fails"): "runc runs startContainer hooks in `runc init` "
                                            "after `start` returned, so start reports success",
    ("runc", "capability_unknown"): "runc 1.1 only warns about unknown capabilities",
    ("runc", "annotations_empty_key"): "runc 1.1 does not validate annotation keys",
    ("runc", "blkio_weight_device_empty"): "runc 1.1 does not validate weightDevice entries",
    ("runc", "device_path_conflict"): "runc 1.1 keeps whatever file already exists at a "
                                      "device path (mknod EEXIST is ignored)",
    ("runc", "device_without_numbers"): "runc 1.1 does not require major/minor (they "
                                        "default to 0)",
    ("runc", "oci_version_not_semver"): "runc 1.1 does not validate ociVersion",
    ("runc", "seccomp_empty_names"): "runc 1.1 accepts a syscalls entry without names",
    ("runc", "rootfs_propagation_recursive"): "runc 1.1 leaves / private with rshared, as "
                                              "with shared (rootfs_propagation)",
    ("runc", "no_mount_namespace"): "runc leaves proc, sysfs, /dev, devpts, shm, mqueue and "
                                    "the rootfs bind mounted in the host after delete",
    ("runc", "seccomp_filter_after_setup"): "without noNewPrivileges runc loads the filter "
                                            "before its own setup, whose getcwd (the "
                                            "CVE-2024-21626 check) the filter refuses",
    ("runc", "masked_path_relative"): "runc 1.1 does not check that maskedPaths are absolute",
    ("runc", "readonly_path_relative"): "runc 1.1 does not check that readonlyPaths are "
                                        "absolute",
    ("runc", "hostname_and_domainname"): "runc 1.1 does not set `domainname`",
    ("runc", "personality_domain"): "runc 1.1 ignores `linux.personality`",
    ("runc", "io_priority"): "runc 1.1 does not implement `process.ioPriority`",
    ("runc", "scheduler_policy"): "runc 1.1 does not implement `process.scheduler`",
    ("runc", "exec_cpu_affinity"): "runc 1.1 does not implement "
                                   "`process.execCPUAffinity`",
    ("runc", "time_namespace_offsets"): "runc 1.1 does not know the time namespace",
    ("runc", "rootfs_propagation"): "runc 1.1 applies rootfsPropagation to the mount "
                                    "namespace before pivot_root; the new / does not stay "
                                    "shared",
    # crun 1.8.1 (Debian bookworm), seen in the full-kernel lane with configs labelled 1.0.2;
    # versions from crun's NEWS
    ("crun", "delete_created"): "crun 1.8.1 deletes a `created` container without --force "
                                "(like runc); the spec requires an error",
    ("crun", "blkio_weight_device_empty"): "crun 1.8.1 does not validate weightDevice "
                                           "entries: its create fails only because it cannot "
                                           "open io.weight (no BFQ/iocost in the lane kernel), "
                                           "and the container's cgroup is still there when "
                                           "create returns",
    ("crun", "io_priority"): "crun 1.8.1 does not implement `process.ioPriority` (crun 1.8.6 "
                             "does)",
    ("crun", "scheduler_policy"): "crun 1.8.1 does not implement `process.scheduler` (crun "
                                  "1.8.5 does)",
    ("crun", "exec_cpu_affinity"): "crun 1.8.1 does not implement `process.execCPUAffinity` "
                                   "(runtime-spec v1.3.0)",
    ("crun", "time_namespace_offsets"): "crun 1.8.1 does not know the OCI `time` namespace "
                                        "(crun 1.8.4 replaced its annotation with it): its "
                                        "init dies and create fails (`write to sync socket`)",
}

# How a check reads the spec where the catalogue (runtime-tools, 2022) or a runtime's habit
# could suggest otherwise; printed in the report.
CHECK_NOTES = {
    "mount_destination_relative": "runtime-spec v1.2.0 (opencontainers/runtime-spec#1225) "
        "relaxed MountsDestAbs: on Linux a relative destination is deprecated but valid and "
        "is interpreted relative to `/`. The catalogue still quotes the old MUST; the check "
        "follows v1.3.0 (accepted, mounted at /mnt/rel).",
    "start_container_hook_fails": "runtime.md lifecycle step 7: a failing startContainer "
        "hook MUST generate an error and stop the container. The hook runs in the container "
        "after `start` released the init, so `start` must wait for the hooks' outcome.",
    "hooks_state_status": "the status hooks see is the lifecycle step they run in "
        "(runtime.md): creating for prestart/createRuntime/createContainer, created for "
        "startContainer, running for poststart, stopped for poststop.",
    "delete_created": "runtime.md#delete: deleting a container that is not stopped MUST "
        "generate an error; `created` is not stopped (only --force may kill it).",
    "exec_cpu_affinity": "needs 2 CPUs; `final` is the affinity of the user program after "
        "it joined the container's cgroup.",
    "apparmor_profile": "needs a kernel with AppArmor: runs in the full-kernel lane "
        "(`conformance/lane-report`).",
    "cgroups_unified": "`linux.resources.unified` is for cgroup v2 only: skipped on a hybrid "
        "host, runs in the full-kernel lane.",
    "cgroups_hugetlb_and_swap": "cgroup v2 only (runs in the full-kernel lane); memory.swap "
        "is memory+swap, so 96 MiB with a 64 MiB limit is memory.swap.max 32 MiB.",
    "selinux_labels": "needs a kernel with SELinux enabled; neither this host nor the lane "
        "kernel has it (the host is the cause, not a runtime). The check is a stub as well: "
        "it would skip with SELinux too.",
    "intel_rdt_resctrl": "needs Intel RDT (resctrl) hardware; not virtualised in the lane "
        "either.",
}

HOST_STATES = ("creating", "created", "running", "stopped")
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
CAP_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5,
            "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13,
            "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29}


def caps_mask(names: list[str]) -> int:
    return sum(1 << CAP_BITS[n] for n in names)


def long_running(ctx: Ctx, cid: str) -> dict:
    return ctx.config(cid, args=["sleep", "1000"])


def exiting(ctx: Ctx, cid: str) -> dict:
    return ctx.config(cid, args=["true"])


def host_dir(ctx: Ctx, name: str) -> str:
    d = os.path.join(ctx.workdir, name)
    os.makedirs(d, exist_ok=True)
    return d


def bind(src: str, dest: str, ro: bool = False) -> dict:
    return {"destination": dest, "type": "bind", "source": src,
            "options": ["rbind", "ro" if ro else "rw"]}


def wait_for(pred, what: str, timeout: float = WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        reap_zombies()
        time.sleep(0.05)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def hook(out: str, name: str, code: int = 0, paths: tuple[str, ...] = ()) -> dict:
    """A host hook running hook.py, which logs its stdin state as one JSON line to out."""
    return {"path": sys.executable, "args": [sys.executable, HOOK_HELPER, out, name, str(code),
                                             *paths]}


def helper_ns_process(ctx: Ctx, flags: list[str]) -> int:
    """A process of ours in fresh namespaces (busybox unshare), killed at cleanup."""
    p = subprocess.Popen(["/bin/busybox", "unshare", *flags, "/bin/busybox", "sleep", "1000"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def stop():
        p.kill()
        p.wait(timeout=WAIT_TIMEOUT)
    ctx.on_cleanup(stop)
    ns = {"-n": "net", "-u": "uts", "-i": "ipc", "-m": "mnt"}[flags[0]]
    wait_for(lambda: os.readlink(f"/proc/{p.pid}/ns/{ns}") != host_ns(ns),
             "the helper to unshare")
    return p.pid


# --- state and operations ------------------------------------------------------------------

@check("QueryStateImplement", "DefaultStateJSONPattern", "StateNewStatus")
def state_fields(ctx: Ctx) -> None:
    """state returns ociVersion, id, status, pid and the absolute bundle path"""
    cid = ctx.new_id()
    bundle = ctx.bundle(cid, long_running(ctx, cid))
    ctx.create(cid, bundle=bundle)
    st = ctx.state(cid)
    for field, typ in (("ociVersion", str), ("id", str), ("status", str), ("pid", int),
                       ("bundle", str)):
        expect(isinstance(st.get(field), typ), f"state.{field} missing or not {typ.__name__}: {st}")
    expect(st["id"] == cid, f"state.id {st['id']!r} != {cid!r}")
    expect(st["status"] == "created", f"status after create is {st['status']!r}, not 'created'")
    expect(st["pid"] > 0 and os.path.exists(f"/proc/{st['pid']}"),
           f"state.pid {st['pid']} is not a live host pid")
    expect(os.path.isabs(st["bundle"]) and os.path.samefile(st["bundle"], bundle),
           f"state.bundle {st['bundle']!r} is not the absolute bundle path {bundle!r}")
    if "annotations" in st:
        expect(isinstance(st["annotations"], dict), "state.annotations is not a map")
    ctx.start(cid)
    st = ctx.state(cid)
    expect(st["status"] in HOST_STATES, f"unknown status {st['status']!r}")
    expect(st["status"] == "running", f"status after start is {st['status']!r}")


@check("EntityOperSameContainer", "DefaultOperations", "CreateNewContainer")
def lifecycle_operations(ctx: Ctx) -> None:
    """create, start, state, kill and delete all work on the container just created"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    expect(ctx.state(cid)["status"] == "created", "not created after create")
    ctx.start(cid)
    expect(ctx.state(cid)["status"] == "running", "not running after start")
    r = ctx.rt.kill(cid, "KILL")
    expect(r.ok, f"kill failed: {r.describe()}")
    ctx.wait_status(cid, "stopped")
    r = ctx.rt.delete(cid)
    expect(r.ok, f"delete failed: {r.describe()}")
    expect(ctx.rt.state(cid) is None, "state still succeeds after delete")


@check("ProcNotRunAtResRequest", "ProcArgsApplyUntilStart", "StartProcImplement",
       "ProcImplement")
def program_runs_only_at_start(ctx: Ctx) -> None:
    """the user program does not run at create, and runs at start"""
    cid = ctx.new_id()
    marks = host_dir(ctx, "marks")
    cfg = ctx.config(cid, args=["sh", "-c", "echo ran > /mnt/ran; exec sleep 1000"])
    cfg["mounts"].append(bind(marks, "/mnt"))
    ctx.create(cid, cfg)
    expect(not os.path.exists(os.path.join(marks, "ran")), "user program ran during create")
    ctx.start(cid)
    wait_for(lambda: os.path.exists(os.path.join(marks, "ran")), "the user program to run")


@check("EnvCreateImplement", "PropsApplyExceptProcOnCreate")
def resources_exist_after_create(ctx: Ctx) -> None:
    """after create (before start) namespaces and cgroups of the container already exist"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    pid = ctx.state(cid)["pid"]
    for ns in ("pid", "net", "ipc", "uts", "mnt"):
        expect(os.readlink(f"/proc/{pid}/ns/{ns}") != host_ns(ns),
               f"container process is still in the host {ns} namespace after create")
    d = cgroup_dir(placement_controllers()[-1], ctx.cgroups_path(cid))
    expect(d is not None and os.path.isdir(d), f"no cgroup {d} after create")
    with open(os.path.join(d, "cgroup.procs")) as f:
        expect(str(pid) in f.read().split(), f"pid {pid} not in {d}/cgroup.procs")


@check("ConfigUpdatesWithoutAffect")
def config_changes_after_create_ignored(ctx: Ctx) -> None:
    """editing config.json after create changes nothing in the container"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["stat:/"])
    cfg["process"]["env"].append("OCICT_PHASE=create")
    bundle = ctx.bundle(cid, cfg)
    ctx.create(cid, bundle=bundle)
    changed = copy.deepcopy(cfg)
    changed["process"]["env"][-1] = "OCICT_PHASE=edited"
    changed["process"]["args"] = ["/bin/ocicheck", "stat:/etc"]
    changed["hostname"] = "edited"
    write_json(os.path.join(bundle, "config.json"), changed)
    ctx.start(cid)
    ctx.wait_status(cid, "stopped")
    rep = json.loads(ctx.output(cid) or "{}")
    expect("OCICT_PHASE=create" in rep.get("env", []), f"env changed: {rep.get('env')}")
    expect(rep.get("args") == ["/bin/ocicheck", "stat:/"], f"args changed: {rep.get('args')}")
    expect(rep.get("hostname") == cfg["hostname"], f"hostname changed: {rep.get('hostname')}")


@check("StartNotCreatedGenError", "StartNotCreatedHaveNoEffect")
def start_twice(ctx: Ctx) -> None:
    """start on a running container fails and changes nothing"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    ctx.start(cid)
    before = ctx.state(cid)
    r = ctx.rt.start(cid)
    expect(not r.ok, "second start succeeded")
    after = ctx.state(cid)
    expect(after["status"] == "running" and after["pid"] == before["pid"],
           f"second start changed the container: {before} -> {after}")


@check("StartNotCreatedGenError", "StartNotCreatedHaveNoEffect")
def start_stopped(ctx: Ctx) -> None:
    """start on a stopped container fails and it stays stopped"""
    cid = ctx.new_id()
    ctx.create(cid, exiting(ctx, cid))
    ctx.start(cid)
    ctx.wait_status(cid, "stopped")
    r = ctx.rt.start(cid)
    expect(not r.ok, "start of a stopped container succeeded")
    expect(ctx.state(cid)["status"] == "stopped", "container is no longer stopped")


@check("StartNotCreatedGenError")
def start_nonexistent(ctx: Ctx) -> None:
    """start of an unknown id fails"""
    expect(not ctx.rt.start("ocict-no-such-container").ok, "start of an unknown id succeeded")


@check("QueryWithoutIDGenError")
def state_without_id(ctx: Ctx) -> None:
    """state without a container id fails"""
    expect(not ctx.rt.run("state").ok, "`state` with no id succeeded")


@check("StartWithoutIDGenError")
def start_without_id(ctx: Ctx) -> None:
    """start without a container id fails"""
    expect(not ctx.rt.run("start").ok, "`start` with no id succeeded")


@check("KillWithoutIDGenError")
def kill_without_id(ctx: Ctx) -> None:
    """kill without a container id fails"""
    expect(not ctx.rt.run("kill").ok, "`kill` with no id succeeded")


@check("DeleteWithoutIDGenError")
def delete_without_id(ctx: Ctx) -> None:
    """delete without a container id fails"""
    expect(not ctx.rt.run("delete").ok, "`delete` with no id succeeded")


@check("CreateWithBundlePathAndID")
def create_without_id(ctx: Ctx) -> None:
    """create without an id fails and creates nothing"""
    bundle = ctx.bundle("noid", exiting(ctx, "noid"))
    r = ctx.rt.run("create", "--bundle", bundle)
    expect(not r.ok, "create with no id succeeded")
    expect(ctx.rt.entries() == [], f"create with no id left {ctx.rt.entries()} under --root")


@check("CreateWithBundlePathAndID", "ConfigInRootBundleDir")
def create_with_missing_bundle(ctx: Ctx) -> None:
    """create with a bundle path that does not exist fails and creates nothing"""
    cid = ctx.new_id()
    ctx.expect_rejected(cid, bundle=os.path.join(ctx.workdir, "no-such-bundle"),
                        what="a missing bundle")


@check("QueryNonExistGenError")
def state_nonexistent(ctx: Ctx) -> None:
    """state of an unknown id fails"""
    expect(not ctx.rt.run("state", "ocict-no-such-container").ok,
           "state of an unknown id succeeded")


@check("CreateWithUniqueID", "StateIDUniq", "ErrorsLeaveStateUnchange")
def duplicate_id(ctx: Ctx) -> None:
    """create with an id already in use fails and leaves the first container alone"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    before = ctx.state(cid)
    other = ctx.bundle(cid, long_running(ctx, cid), name="second-bundle")
    r = ctx.rt.create(cid, other, stdout=os.path.join(ctx.workdir, "dup.out"))
    expect(not r.ok, "second create with the same id succeeded")
    after = ctx.state(cid)
    expect(before == after, f"failed create changed the first container: {before} -> {after}")


@check("CreateWithUniqueID")
def invalid_ids(ctx: Ctx) -> None:
    """ids that are not valid (path separators, '..', empty) are rejected before anything exists"""
    bundle = ctx.bundle("inv", exiting(ctx, "inv"))
    bad = []
    for cid in ("../ocict-escape", "a/b", "..", ""):
        r = ctx.rt.create(cid, bundle, stdout=os.path.join(ctx.workdir, "inv.out"))
        if r.ok:
            bad.append(repr(cid))
            ctx.rt.delete(cid, force=True)
    expect(not bad, "accepted invalid ids: " + ", ".join(bad))
    expect(not os.path.exists(os.path.join(ctx.workdir, "ocict-escape")),
           "an id with '..' wrote outside --root")
    expect(ctx.rt.entries() == [], f"rejected ids left {ctx.rt.entries()} under --root")


@check("KillSignalImplement")
def kill_sends_signal(ctx: Ctx) -> None:
    """kill delivers the named signal to the container process"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, args=["sh", "-c", "trap 'echo got-USR1; exit 0' USR1; echo ready; "
                                            "while :; do sleep 0.1; done"])
    ctx.create(cid, cfg)
    ctx.start(cid)
    wait_for(lambda: "ready" in ctx.output(cid), "the container to install its trap")
    r = ctx.rt.kill(cid, "USR1")
    expect(r.ok, f"kill USR1 failed: {r.describe()}")
    ctx.wait_status(cid, "stopped")
    expect("got-USR1" in ctx.output(cid), "the process did not receive SIGUSR1")


@check("KillSignalImplement")
def kill_created(ctx: Ctx) -> None:
    """kill works on a created container (SIGKILL stops it)"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    r = ctx.rt.kill(cid, "KILL")
    expect(r.ok, f"kill of a created container failed: {r.describe()}")
    ctx.wait_status(cid, "stopped")


@check("KillNonCreateRunGenError", "KillNonCreateRunHaveNoEffect")
def kill_stopped(ctx: Ctx) -> None:
    """kill of a stopped container fails and it stays stopped"""
    cid = ctx.new_id()
    ctx.create(cid, exiting(ctx, cid))
    ctx.start(cid)
    before = ctx.wait_status(cid, "stopped")
    r = ctx.rt.kill(cid, "TERM")
    expect(not r.ok, "kill of a stopped container succeeded")
    after = ctx.state(cid)
    expect(after["status"] == "stopped", f"container changed to {after['status']!r}")
    expect(after.get("bundle") == before.get("bundle"), "state changed after failed kill")


@check("DeleteNonStopGenError", "DeleteNonStopHaveNoEffect")
def delete_running(ctx: Ctx) -> None:
    """delete (no --force) of a running container fails and it keeps running"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    ctx.start(cid)
    before = ctx.state(cid)
    r = ctx.rt.delete(cid)
    expect(not r.ok, "delete of a running container succeeded")
    after = ctx.rt.state(cid)
    expect(after is not None and after["status"] == "running" and after["pid"] == before["pid"],
           f"failed delete changed the container: {after}")


@check("DeleteNonStopGenError", "DeleteNonStopHaveNoEffect")
def delete_created(ctx: Ctx) -> None:
    """delete (no --force) of a created container fails and it stays created"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    before = ctx.state(cid)
    r = ctx.rt.delete(cid)
    after = ctx.rt.state(cid)
    expect(not r.ok, "delete of a created (not stopped) container succeeded and removed it"
           if after is None else "delete of a created container succeeded")
    expect(after is not None and after["status"] == "created" and after["pid"] == before["pid"],
           f"failed delete changed the container: {after}")


@check("DeleteResImplement", "UndoCreateSteps")
def delete_removes_resources(ctx: Ctx) -> None:
    """delete removes the container's state, cgroups and processes; the id is reusable"""
    cid = ctx.new_id()
    ctx.create(cid, long_running(ctx, cid))
    pid = ctx.state(cid)["pid"]
    ctx.start(cid)
    expect(ctx.rt.kill(cid, "KILL").ok, "kill failed")
    ctx.wait_status(cid, "stopped")
    r = ctx.rt.delete(cid)
    expect(r.ok, f"delete failed: {r.describe()}")
    problems = ctx.nothing_created(cid)
    reap_zombies()
    if os.path.exists(f"/proc/{pid}"):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] != "Z":
                problems.append(f"process {pid} still alive")
    expect(not problems, "after delete: " + "; ".join(problems))
    r = ctx.create(cid, exiting(ctx, cid), bundle=ctx.bundle(cid, exiting(ctx, cid), "again"),
                   must=False)
    expect(r.ok, f"the id could not be reused after delete: {r.describe()}")


@check("DeleteOnlyCreatedRes")
def delete_keeps_foreign_resources(ctx: Ctx) -> None:
    """delete leaves resources it did not create: bind-mount sources, joined namespaces"""
    cid = ctx.new_id()
    shared = host_dir(ctx, "shared")
    with open(os.path.join(shared, "keep"), "w") as f:
        f.write("keep")
    helper = helper_ns_process(ctx, ["-n"])
    netns = f"/proc/{helper}/ns/net"
    before = os.readlink(netns)
    cfg = ctx.config(cid, probes=["stat:/mnt/keep"])
    cfg["mounts"].append(bind(shared, "/mnt"))
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["linux"]["namespaces"].append({"type": "network", "path": netns})
    ctx.run_to_end(cid, cfg)
    expect(os.path.exists(os.path.join(shared, "keep")), "the bind-mount source was deleted")
    expect(os.path.exists(f"/proc/{helper}") and os.readlink(netns) == before,
           "the joined network namespace's owner was disturbed")


@check("ErrorsLeaveStateUnchange", "PropApplyFailGenError", "PropApplyFailNotCreate",
       "EnvCreateError")
def failed_create_leaves_nothing(ctx: Ctx) -> None:
    """a create that cannot apply the config (bind source missing) errors and leaves nothing"""
    cid = ctx.new_id()
    ctx.create(ctx.new_id(), long_running(ctx, "x"))  # an unrelated container must stay
    entries = ctx.rt.entries()
    cfg = ctx.config(cid, probes=[])
    cfg["mounts"].append(bind(os.path.join(ctx.workdir, "no-such-dir"), "/mnt"))
    ctx.expect_rejected(cid, cfg, what="a bind mount of a missing source")
    expect(ctx.rt.entries() == entries, f"--root changed: {entries} -> {ctx.rt.entries()}")


# --- hooks ---------------------------------------------------------------------------------

def hooks_config(ctx: Ctx, cid: str, log: str, marks: str, fail: str = "",
                 hooks_dir: str = "") -> dict:
    """A long-running container with every hook kind logging to log; `fail` names a hook kind
    whose (first) hook exits 1. The user program writes marks/ran when it runs."""
    cfg = ctx.config(cid, args=["sh", "-c", "echo ran > /mnt/ran; exec sleep 1000"])
    cfg["mounts"].append(bind(marks, "/mnt"))
    ran = os.path.join(marks, "ran")
    cfg["hooks"] = {}
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        cfg["hooks"][kind] = [hook(log, kind, 1 if fail == kind else 0, (ran,))]
    # startContainer runs in the container after pivot_root: a busybox sh hook writing to /mnt
    cfg["hooks"]["startContainer"] = [{
        "path": "/bin/sh",
        "args": ["sh", "-c", "cat > /mnt/startContainer.json" +
                 ("; exit 1" if fail == "startContainer" else "")]}]
    return cfg


def hook_records(log: str, marks: str) -> dict[str, dict]:
    recs = {r["hook"]: r for r in read_jsonl(log)}
    p = os.path.join(marks, "startContainer.json")
    if os.path.exists(p):
        with open(p) as f:
            try:
                recs["startContainer"] = {"hook": "startContainer", "state": json.load(f)}
            except ValueError as e:
                recs["startContainer"] = {"hook": "startContainer", "state": {"error": str(e)}}
    return recs


def run_with_hooks(ctx: Ctx) -> tuple[str, dict[str, dict], str]:
    cid = ctx.new_id()
    log, marks = os.path.join(ctx.workdir, "hooks.jsonl"), host_dir(ctx, "marks")
    ctx.create(cid, hooks_config(ctx, cid, log, marks))
    ctx.start(cid)
    expect(ctx.rt.kill(cid, "KILL").ok, "kill failed")
    ctx.wait_status(cid, "stopped")
    r = ctx.rt.delete(cid)
    expect(r.ok, f"delete failed: {r.describe()}")
    return cid, hook_records(log, marks), log


@check("PrestartHooksInvoke", "PoststartHooksInvoke", "PoststopHooksInvoke",
       "PosixHooksStateToStdin")
def hooks_receive_state(ctx: Ctx) -> None:
    """every hook kind runs once and gets the container state (id, bundle, pid) on stdin"""
    cid, recs, _ = run_with_hooks(ctx)
    kinds = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop")
    missing = [k for k in kinds if k not in recs]
    expect(not missing, f"hooks not invoked: {missing}")
    bad = []
    for k in kinds:
        st = recs[k]["state"]
        if st.get("id") != cid or not st.get("ociVersion") or not st.get("bundle"):
            bad.append(f"{k}: {st}")
        elif k != "poststop" and not isinstance(st.get("pid"), int):
            bad.append(f"{k}: no pid in {st}")
    expect(not bad, "bad state on stdin: " + "; ".join(bad))


@check("PosixHooksStateToStdin")
def hooks_state_status(ctx: Ctx) -> None:
    """hooks see the status the lifecycle is in: creating x3, created, running, stopped"""
    _, recs, _ = run_with_hooks(ctx)
    want = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
            "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    bad = [f"{k} saw {recs[k]['state'].get('status')!r} (want {v!r})"
           for k, v in want.items() if k in recs and recs[k]["state"].get("status") != v]
    expect(not bad and len(recs) == len(want),
           "; ".join(bad) or f"hooks missing: {set(want) - set(recs)}")


@check("PosixHooksCalledInOrder")
def hooks_called_in_order(ctx: Ctx) -> None:
    """hooks run in the listed order within a kind and in lifecycle order across kinds"""
    cid = ctx.new_id()
    log = os.path.join(ctx.workdir, "order.jsonl")
    cfg = long_running(ctx, cid)
    cfg["hooks"] = {k: [hook(log, f"{k}{i}") for i in range(3)]
                    for k in ("prestart", "createRuntime", "createContainer", "poststart",
                              "poststop")}
    ctx.create(cid, cfg)
    ctx.start(cid)
    ctx.rt.kill(cid, "KILL")
    ctx.wait_status(cid, "stopped")
    ctx.rt.delete(cid)
    got = [r["hook"] for r in read_jsonl(log)]
    want = [f"{k}{i}" for k in ("prestart", "createRuntime", "createContainer", "poststart",
                                "poststop") for i in range(3)]
    expect(got == want, f"hook order {got}, want {want}")


@check("PrestartTiming")
def prestart_timing(ctx: Ctx) -> None:
    """prestart hooks run before the user program (v1.3.0: during create, before pivot_root)"""
    cid = ctx.new_id()
    log, marks = os.path.join(ctx.workdir, "hooks.jsonl"), host_dir(ctx, "marks")
    ctx.create(cid, hooks_config(ctx, cid, log, marks))
    ctx.start(cid)
    recs = hook_records(log, marks)
    expect("prestart" in recs, "prestart hook not invoked")
    expect(not any(recs["prestart"]["paths"].values()), "user program ran before prestart")


@check("PoststartTiming")
def poststart_timing(ctx: Ctx) -> None:
    """poststart hooks run after the user program is executed and before start returns"""
    cid = ctx.new_id()
    log, marks = os.path.join(ctx.workdir, "hooks.jsonl"), host_dir(ctx, "marks")
    cfg = long_running(ctx, cid)
    cfg["hooks"] = {"poststart": [hook(log, "poststart")]}
    ctx.create(cid, cfg)
    ctx.start(cid)
    recs = hook_records(log, marks)
    expect("poststart" in recs, "poststart hook had not run when start returned")
    cmd = recs["poststart"]["proc"].get("cmdline", [])
    expect(cmd[:1] == ["sleep"],
           f"at poststart the container process runs {cmd}, not the user program")


@check("PoststopTiming")
def poststop_timing(ctx: Ctx) -> None:
    """poststop hooks run after the container is deleted and before delete returns"""
    cid = ctx.new_id()
    log, marks = os.path.join(ctx.workdir, "hooks.jsonl"), host_dir(ctx, "marks")
    cfg = exiting(ctx, cid)
    cfg["hooks"] = {"poststop": [hook(log, "poststop")]}
    ctx.create(cid, cfg)
    pid = ctx.state(cid)["pid"]
    ctx.start(cid)
    ctx.wait_status(cid, "stopped")
    expect(ctx.rt.delete(cid).ok, "delete failed")
    recs = hook_records(log, marks)
    expect("poststop" in recs, "poststop hook had not run when delete returned")
    proc = recs["poststop"]["proc"]
    expect(not proc.get("cmdline") or proc.get("cmdline") == [],
           f"container process {pid} still existed at poststop: {proc}")


def failing_hook(ctx: Ctx, kind: str) -> None:
    cid = ctx.new_id()
    log, marks = os.path.join(ctx.workdir, "hooks.jsonl"), host_dir(ctx, "marks")
    cfg = hooks_config(ctx, cid, log, marks, fail=kind)
    if kind == "startContainer":
        ctx.create(cid, cfg)
        r = ctx.rt.start(cid)
        expect(not r.ok, "start succeeded although a startContainer hook failed")
        expect(not os.path.exists(os.path.join(marks, "ran")), "the user program ran")
        st = ctx.rt.state(cid)
        expect(st is None or st["status"] == "stopped",
               f"container not stopped after the failed hook: {st and st['status']}")
        return
    ctx.expect_rejected(cid, cfg, what=f"a failing {kind} hook")
    expect(not os.path.exists(os.path.join(marks, "ran")), "the user program ran")


@check("PrestartHookFailGenError")
def prestart_hook_fails(ctx: Ctx) -> None:
    """a failing prestart hook makes create fail and leaves nothing"""
    failing_hook(ctx, "prestart")


@check("PrestartHookFailGenError", "UndoCreateSteps")
def create_runtime_hook_fails(ctx: Ctx) -> None:
    """a failing createRuntime hook makes create fail and leaves nothing"""
    failing_hook(ctx, "createRuntime")


@check("PrestartHookFailGenError", "UndoCreateSteps")
def create_container_hook_fails(ctx: Ctx) -> None:
    """a failing createContainer hook makes create fail and leaves nothing"""
    failing_hook(ctx, "createContainer")


@check("PrestartHookFailGenError")
def start_container_hook_fails(ctx: Ctx) -> None:
    """a failing startContainer hook makes start fail; the user program never runs"""
    failing_hook(ctx, "startContainer")


@check("PoststartHookFailGenWarn", "WarnsLeaveFlowUnchange")
def poststart_hook_fails(ctx: Ctx) -> None:
    """a failing poststart hook only warns: start succeeds, later hooks run, program runs on"""
    cid = ctx.new_id()
    log = os.path.join(ctx.workdir, "hooks.jsonl")
    cfg = long_running(ctx, cid)
    cfg["hooks"] = {"poststart": [hook(log, "ps0", 1), hook(log, "ps1")]}
    ctx.create(cid, cfg)
    r = ctx.rt.start(cid)
    expect(r.ok, f"start failed because of a poststart hook: {r.describe()}")
    expect([x["hook"] for x in read_jsonl(log)] == ["ps0", "ps1"],
           "the next poststart hook did not run")
    expect(ctx.state(cid)["status"] == "running", "container not running after poststart failure")


@check("PoststopHookFailGenWarn", "WarnsLeaveFlowUnchange")
def poststop_hook_fails(ctx: Ctx) -> None:
    """a failing poststop hook only warns: delete succeeds and later hooks run"""
    cid = ctx.new_id()
    log = os.path.join(ctx.workdir, "hooks.jsonl")
    cfg = exiting(ctx, cid)
    cfg["hooks"] = {"poststop": [hook(log, "pp0", 1), hook(log, "pp1")]}
    ctx.create(cid, cfg)
    ctx.start(cid)
    ctx.wait_status(cid, "stopped")
    r = ctx.rt.delete(cid)
    expect(r.ok, f"delete failed because of a poststop hook: {r.describe()}")
    expect([x["hook"] for x in read_jsonl(log)] == ["pp0", "pp1"],
           "the next poststop hook did not run")
    expect(ctx.rt.state(cid) is None, "container still exists after delete")


@check("PosixHooksPathAbs")
def hook_path_relative(ctx: Ctx) -> None:
    """a hook with a relative path is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["hooks"] = {"createRuntime": [{"path": "bin/true"}]}
    ctx.expect_rejected(cid, cfg, what="a relative hook path")


@check("PosixHooksTimeoutPositive")
def hook_timeout_zero(ctx: Ctx) -> None:
    """a hook timeout of 0 is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/true", "timeout": 0}]}
    ctx.expect_rejected(cid, cfg, what="hook timeout 0")


# --- config.md -----------------------------------------------------------------------------

@check("SpecVersionInSemVer", "ValidValues")
def oci_version_not_semver(ctx: Ctx) -> None:
    """an ociVersion that is not SemVer 2.0.0 is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["ociVersion"] = "one.three"
    ctx.expect_rejected(cid, cfg, what="ociVersion 'one.three'")


@check("RootOnNonWindowsRequired")
def root_missing(ctx: Ctx) -> None:
    """a config without root is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    del cfg["root"]
    ctx.expect_rejected(cid, cfg, what="a config without root")


@check("RootPathExist")
def root_path_missing(ctx: Ctx) -> None:
    """a root.path that does not exist is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["root"]["path"] = "no-such-rootfs"
    ctx.expect_rejected(cid, cfg, what="a missing root.path")


@check("RootReadonlyImplement")
def root_readonly(ctx: Ctx) -> None:
    """root.readonly true makes / read-only; false leaves it writable"""
    for ro in (True, False):
        cid = ctx.new_id()
        cfg = ctx.config(cid, probes=["create:/ocict-probe"])
        cfg["root"]["readonly"] = ro
        res = probe_result(ctx.probe(cfg, cid), "create", "/ocict-probe")
        if ro:
            expect(res["errno"] == E.EROFS,
                   f"readonly root: creating a file gave errno {res['errno']}")
        else:
            expect(res["errno"] == 0, f"writable root: creating a file gave errno {res['errno']}")


@check("MountsInOrder")
def mounts_in_order(ctx: Ctx) -> None:
    """mounts are made in the listed order (a later mount stacks on / nests in an earlier one)"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["mounts"] += [
        {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
        {"destination": "/mnt/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=3m"]},
    ]
    mi = [m for m in mountinfo_entries(ctx.probe(cfg, cid)["mountinfo"])
          if m["mountpoint"] in ("/mnt", "/mnt/sub")]
    sizes = [next((o for o in m["super"] if o.startswith("size=")), "?") for m in mi]
    expect(sizes == ["size=1024k", "size=2048k", "size=3072k"],
           f"mount order in mountinfo is {list(zip([m['mountpoint'] for m in mi], sizes))}")


@check("MountsDestAbs")
def mount_destination_relative(ctx: Ctx) -> None:
    """a relative mount destination (deprecated since v1.2.0) is mounted relative to /"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["mounts"].append({"destination": "mnt/rel", "type": "tmpfs", "source": "tmpfs",
                          "options": ["size=1m"]})
    mi = mountinfo_entries(ctx.probe(cfg, cid)["mountinfo"])
    got = [m for m in mi if m["mountpoint"] == "/mnt/rel"]
    expect(bool(got) and got[0]["fstype"] == "tmpfs", "no tmpfs mounted at /mnt/rel")


@check("EnvCreateImplement")
def bind_mount_options(ctx: Ctx) -> None:
    """a read-only bind mount shows the host files and refuses writes"""
    cid = ctx.new_id()
    shared = host_dir(ctx, "shared")
    with open(os.path.join(shared, "f"), "w") as f:
        f.write("hello")
    cfg = ctx.config(cid, probes=["read:/mnt/f", "create:/mnt/g"])
    cfg["mounts"].append(bind(shared, "/mnt", ro=True))
    rep = ctx.probe(cfg, cid)
    expect(probe_result(rep, "read", "/mnt/f").get("data") == "hello", "bind mount content differs")
    expect(probe_result(rep, "create", "/mnt/g")["errno"] == E.EROFS, "ro bind mount is writable")


@check("ProcCwdAbs")
def process_cwd_relative(ctx: Ctx) -> None:
    """a relative process.cwd is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["process"]["cwd"] = "tmp"
    ctx.expect_rejected(cid, cfg, what="a relative cwd")


def rejected_at_create_or_start(ctx: Ctx, cfg: dict, what: str) -> None:
    cid = ctx.new_id()
    r = ctx.create(cid, cfg, must=False)
    if not r.ok:
        problems = ctx.nothing_created(cid)
        expect(not problems, f"create failed for {what} but left: " + "; ".join(problems))
        return
    r = ctx.rt.start(cid)
    expect(not r.ok, f"create and start both accepted {what}")


@check("ProcArgsOneEntryRequired")
def process_args_empty(ctx: Ctx) -> None:
    """empty process.args is an error (at create or start)"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["process"]["args"] = []
    rejected_at_create_or_start(ctx, cfg, "empty process.args")


@check("ProcRequiredAtStart", "StartWithProcUnsetGenError")
def process_missing(ctx: Ctx) -> None:
    """a config without process cannot be started"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    del cfg["process"]
    rejected_at_create_or_start(ctx, cfg, "a config without process")


@check("ProcConsoleSizeIgnore")
def console_size_ignored(ctx: Ctx) -> None:
    """consoleSize is ignored when terminal is false"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["process"]["consoleSize"] = {"height": 10, "width": 20}
    ctx.probe(cfg, cid)


@check("EnvCreateImplement", "PropsApplyExceptProcOnCreate")
def process_identity(ctx: Ctx) -> None:
    """uid, gid, additionalGids, umask, env, cwd and args are applied"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["stat:/"])
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [29, 100],
                              "umask": 0o027}
    cfg["process"]["env"] = ["PATH=/bin", "OCICT_A=1", "OCICT_B=two words"]
    cfg["process"]["cwd"] = "/home/user"
    rep = ctx.probe(cfg, cid)
    got = (rep["uid"], rep["euid"], rep["gid"], rep["egid"])
    expect(got == (1000, 1000, 1000, 1000), f"uid/euid/gid/egid are {got}")
    expect(sorted(rep["groups"]) == [29, 100], f"supplementary groups are {rep['groups']}")
    expect(rep["status"].get("Umask") == "0027", f"umask is {rep['status'].get('Umask')}")
    extra = [e for e in rep["env"] if e not in cfg["process"]["env"]]
    expect([e for e in rep["env"] if e in cfg["process"]["env"]] == cfg["process"]["env"]
           and all(e.startswith("HOME=") for e in extra), f"env is {rep['env']}")
    expect(rep["cwd"] == "/home/user", f"cwd is {rep['cwd']!r}")
    expect(rep["args"] == cfg["process"]["args"], f"args are {rep['args']}")


@check("PosixProcRlimitsTypeGet", "PosixProcRlimitsSoftMatchCur", "PosixProcRlimitsHardMatchMax")
def rlimits_applied(ctx: Ctx) -> None:
    """each rlimit's soft and hard values are what getrlimit reports inside"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    want = {"RLIMIT_NOFILE": (512, 1024), "RLIMIT_CORE": (1024, 2048),
            "RLIMIT_NPROC": (300, 400), "RLIMIT_MSGQUEUE": (4096, 8192)}
    cfg["process"]["rlimits"] = [{"type": k, "soft": s, "hard": h} for k, (s, h) in want.items()]
    got = ctx.probe(cfg, cid)["rlimits"]
    bad = {k: got.get(k) for k, v in want.items() if tuple(got.get(k, ())) != v}
    expect(not bad, f"rlimits differ (got soft,hard): {bad}")


@check("PosixProcRlimitsTypeGenError", "PosixProcRlimitsTypeValueError")
def rlimit_unknown_type(ctx: Ctx) -> None:
    """an rlimit type with no kernel counterpart is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["process"]["rlimits"].append({"type": "RLIMIT_OCICT_BOGUS", "soft": 1, "hard": 1})
    ctx.expect_rejected(cid, cfg, what="rlimit RLIMIT_OCICT_BOGUS")


@check("PosixProcRlimitsErrorOnDup")
def rlimit_duplicate(ctx: Ctx) -> None:
    """two rlimits of the same type are rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100},
                                 {"type": "RLIMIT_NOFILE", "soft": 200, "hard": 200}]
    ctx.expect_rejected(cid, cfg, what="duplicate RLIMIT_NOFILE")


@check("EnvCreateImplement")
def capabilities_applied(ctx: Ctx) -> None:
    """bounding/effective/permitted/inheritable/ambient sets are exactly the configured ones"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    # uid 0 execs with permitted = effective = bounding (no SECBIT_NOROOT), so those three
    # are configured equal; inheritable and ambient are a distinct subset.
    full = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    sets = {"bounding": full, "effective": full, "permitted": full,
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]}
    cfg["process"]["capabilities"] = sets
    cfg["process"]["noNewPrivileges"] = False
    st = ctx.probe(cfg, cid)["status"]
    fields = {"bounding": "CapBnd", "effective": "CapEff", "permitted": "CapPrm",
              "inheritable": "CapInh", "ambient": "CapAmb"}
    bad = {k: st.get(f) for k, f in fields.items() if int(st.get(f, "0"), 16) != caps_mask(sets[k])}
    expect(not bad, f"capability masks differ: {bad}")


@check("LinuxProcCapError")
def capability_unknown(ctx: Ctx) -> None:
    """an unknown capability name is rejected before anything is created"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["process"]["capabilities"]["bounding"].append("CAP_OCICT_BOGUS")
    ctx.expect_rejected(cid, cfg, what="capability CAP_OCICT_BOGUS")


@check("LinuxProcOomScoreAdjSet")
def oom_score_adj_set(ctx: Ctx) -> None:
    """oomScoreAdj is written to the container's oom_score_adj"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["process"]["oomScoreAdj"] = 321
    got = (ctx.probe(cfg, cid)["oom_score_adj"] or "").strip()
    expect(got == "321", f"oom_score_adj is {got!r}")


@check("LinuxProcOomScoreAdjNotSet")
def oom_score_adj_unset(ctx: Ctx) -> None:
    """without oomScoreAdj the container keeps the runtime's oom_score_adj"""
    with open("/proc/self/oom_score_adj") as f:
        saved = f.read().strip()
    mine = "123" if saved != "123" else "124"
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(mine)
    try:
        cid = ctx.new_id()
        got = (ctx.probe(ctx.config(cid, probes=[]), cid)["oom_score_adj"] or "").strip()
    finally:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(saved)
    expect(got == mine, f"oom_score_adj is {got!r}, the runtime ran with {mine}")


@check("EnvCreateImplement")
def no_new_privileges(ctx: Ctx) -> None:
    """noNewPrivileges true/false sets NoNewPrivs 1/0"""
    for flag in (True, False):
        cid = ctx.new_id()
        cfg = ctx.config(cid, probes=[])
        cfg["process"]["noNewPrivileges"] = flag
        got = ctx.probe(cfg, cid)["status"].get("NoNewPrivs")
        expect(got == ("1" if flag else "0"), f"noNewPrivileges {flag}: NoNewPrivs is {got}")


@check("EnvCreateImplement")
def hostname_and_domainname(ctx: Ctx) -> None:
    """hostname and domainname are set in the new UTS namespace"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["hostname"], cfg["domainname"] = "ocict-host", "ocict.example"
    rep = ctx.probe(cfg, cid)
    expect((rep["hostname"], rep["domainname"]) == ("ocict-host", "ocict.example"),
           f"hostname/domainname are {rep['hostname']!r}/{rep['domainname']!r}")


@check("AnnotationsKeyIgnoreUnknown", "AnnotationsKeyValueMap")
def annotations_unknown_keys(ctx: Ctx) -> None:
    """unknown annotation keys are accepted (and reported in state if state has annotations)"""
    cid = ctx.new_id()
    cfg = long_running(ctx, cid)
    ann = {"org.example.ocict.unknown": "x", "com.example.other": "y"}
    cfg["annotations"] = ann
    ctx.create(cid, cfg)
    st = ctx.state(cid)
    if "annotations" in st:
        expect(st["annotations"] == ann, f"state.annotations {st['annotations']} != {ann}")


@check("AnnotationsValueString", "ValidValues")
def annotations_value_not_string(ctx: Ctx) -> None:
    """an annotation whose value is not a string is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["annotations"] = {"org.example.n": 1}
    ctx.expect_rejected(cid, cfg, what="a numeric annotation value")


@check("AnnotationsKeyRequired")
def annotations_empty_key(ctx: Ctx) -> None:
    """an empty annotation key is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["annotations"] = {"": "x"}
    ctx.expect_rejected(cid, cfg, what="an empty annotation key")


@check("ExtensibilityIgnoreUnknownProp")
def unknown_properties(ctx: Ctx) -> None:
    """unknown properties (top level, process, linux) do not cause an error"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["org.example.ocict"] = {"future": True}
    cfg["process"]["ocictFuture"] = 1
    cfg["linux"]["ocictFuture"] = "x"
    ctx.probe(cfg, cid)


@check("ValidValues")
def invalid_namespace_type(ctx: Ctx) -> None:
    """an unknown namespace type is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["namespaces"].append({"type": "ocict-bogus"})
    ctx.expect_rejected(cid, cfg, what="namespace type 'ocict-bogus'")


@check("ValidValues")
def invalid_seccomp_action(ctx: Ctx) -> None:
    """an unknown seccomp action is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_OCICT_BOGUS"}
    ctx.expect_rejected(cid, cfg, what="seccomp action SCMP_ACT_OCICT_BOGUS")


@check("ValidValues")
def invalid_rootfs_propagation(ctx: Ctx) -> None:
    """an unknown rootfsPropagation is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["rootfsPropagation"] = "ocict-bogus"
    ctx.expect_rejected(cid, cfg, what="rootfsPropagation 'ocict-bogus'")


@check("ConfigConstName", "ConfigInRootBundleDir")
def config_name_and_place(ctx: Ctx) -> None:
    """a bundle whose config is not ./config.json is rejected"""
    for i, name in enumerate(("Config.json", "conf/config.json")):
        cid = ctx.new_id()
        b = ctx.bundle(cid, None, name=f"bundle{i}")
        os.makedirs(os.path.join(b, "conf"), exist_ok=True)
        write_json(os.path.join(b, name), exiting(ctx, cid))
        ctx.expect_rejected(cid, bundle=b, what=f"a bundle with only {name}")


# --- config-linux.md ---------------------------------------------------------------------

@check("NSNewNSWithoutPath")
def namespaces_new(ctx: Ctx) -> None:
    """each namespace listed without a path is a new one"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["linux"]["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                        "cgroup")]
    ns = ctx.probe(cfg, cid)["ns"]
    same = [k for k in ("pid", "net", "ipc", "uts", "mnt", "cgroup") if ns.get(k) == host_ns(k)]
    expect(not same, f"not new: {same}")


@check("NSInheritWithoutType")
def namespaces_inherited(ctx: Ctx) -> None:
    """namespace types not listed are inherited from the runtime"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["linux"]["namespaces"] = [{"type": "mount"}, {"type": "pid"}]
    cfg.pop("hostname", None)
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys"]
    ns = ctx.probe(cfg, cid)["ns"]
    new = [k for k in ("net", "ipc", "uts", "user", "cgroup") if ns.get(k) != host_ns(k)]
    expect(not new, f"unexpectedly new: {new}")


@check("NSProcInPath")
def namespace_path_joined(ctx: Ctx) -> None:
    """a namespace with a path is joined"""
    helper = helper_ns_process(ctx, ["-n", "-u", "-i"])
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}] + [
        {"type": t, "path": f"/proc/{helper}/ns/{k}"}
        for t, k in (("network", "net"), ("uts", "uts"), ("ipc", "ipc"))]
    del cfg["hostname"]
    ns = ctx.probe(cfg, cid)["ns"]
    bad = [k for k in ("net", "uts", "ipc") if ns.get(k) != os.readlink(f"/proc/{helper}/ns/{k}")]
    expect(not bad, f"not joined: {bad}")


@check("NSPathAbs")
def namespace_path_relative(ctx: Ctx) -> None:
    """a relative namespace path is rejected before anything is created"""
    helper = helper_ns_process(ctx, ["-n"])
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["linux"]["namespaces"].append({"type": "network", "path": f"proc/{helper}/ns/net"})
    ctx.expect_rejected(cid, cfg, what="a relative namespace path")


@check("NSPathMatchTypeError")
def namespace_path_wrong_type(ctx: Ctx) -> None:
    """a namespace path of another type is rejected"""
    helper = helper_ns_process(ctx, ["-n", "-u"])
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["linux"]["namespaces"].append({"type": "network", "path": f"/proc/{helper}/ns/uts"})
    ctx.expect_rejected(cid, cfg, what="a uts namespace path for type network")


@check("NSErrorOnDup")
def namespace_duplicate(ctx: Ctx) -> None:
    """a namespace type listed twice is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["namespaces"].append({"type": "network"})
    ctx.expect_rejected(cid, cfg, what="two network namespaces")


@check("UserNSMapOwnershipRO", "EnvCreateImplement")
def user_namespace_mappings(ctx: Ctx) -> None:
    """uid/gid mappings are applied and the rootfs ownership is not changed"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle = ctx.bundle(cid, cfg)
    rootfs = os.path.join(bundle, "rootfs")

    def owners():
        return {p: (os.lstat(p).st_uid, os.lstat(p).st_gid)
                for p in (rootfs, os.path.join(rootfs, "bin/busybox"), os.path.join(rootfs, "etc"))}
    before = owners()
    rep = json.loads(ctx.run_to_end(cid, bundle=bundle) or "{}")
    expect(rep.get("ns", {}).get("user") != host_ns("user"), "no new user namespace")
    maps = [" ".join(line.split()) for line in rep.get("uid_map", [])]
    gmaps = [" ".join(line.split()) for line in rep.get("gid_map", [])]
    expect(maps == ["0 100000 65536"] and gmaps == ["0 100000 65536"],
           f"uid_map {maps}, gid_map {gmaps}")
    expect(owners() == before, f"rootfs ownership changed: {before} -> {owners()}")


@check("DevicesAvailable")
def devices_created(ctx: Ctx) -> None:
    """configured devices exist with the given type, numbers, mode and owner"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["stat:/dev/ocict-zero", "stat:/dev/ocict-fifo"])
    cfg["linux"]["devices"] = [
        {"path": "/dev/ocict-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o640,
         "uid": 1000, "gid": 100},
        {"path": "/dev/ocict-fifo", "type": "p", "fileMode": 0o600}]
    cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1,
                                                 "minor": 5, "access": "rwm"})
    rep = ctx.probe(cfg, cid)
    z = probe_result(rep, "stat", "/dev/ocict-zero")
    p = probe_result(rep, "stat", "/dev/ocict-fifo")
    expect(z["errno"] == 0 and (z["type"], z["major"], z["minor"], z["mode"], z["uid"], z["gid"])
           == ("c", 1, 5, 0o640, 1000, 100), f"/dev/ocict-zero is {z}")
    expect(p["errno"] == 0 and p["type"] == "p", f"/dev/ocict-fifo is {p}")


@check("DevicesMajMinRequired")
def device_without_numbers(ctx: Ctx) -> None:
    """a char device without major/minor is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["devices"] = [{"path": "/dev/ocict-bad", "type": "c"}]
    ctx.expect_rejected(cid, cfg, what="a char device without major/minor")


@check("DevicesFileNotMatch")
def device_path_conflict(ctx: Ctx) -> None:
    """a device whose path already holds a different file is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["devices"] = [{"path": "/etc/hostname", "type": "c", "major": 1, "minor": 3}]
    ctx.expect_rejected(cid, cfg, what="a device over the regular file /etc/hostname")


@check("DefaultDevices")
def default_devices(ctx: Ctx) -> None:
    """the default devices exist (null zero full random urandom tty, ptmx)"""
    want = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7),
            "/dev/random": (1, 8), "/dev/urandom": (1, 9), "/dev/tty": (5, 0)}
    cid = ctx.new_id()
    probes = [f"stat:{p}" for p in want] + ["stat:/dev/ptmx", "readlink:/dev/ptmx"]
    rep = ctx.probe(ctx.config(cid, probes=probes), cid)
    bad = []
    for p, (ma, mi) in want.items():
        s = probe_result(rep, "stat", p)
        if s["errno"] or (s["type"], s["major"], s["minor"]) != ("c", ma, mi):
            bad.append(f"{p}: {s}")
    s, link = probe_result(rep, "stat", "/dev/ptmx"), probe_result(rep, "readlink", "/dev/ptmx")
    if not (s.get("type") == "c" or link.get("target") in ("pts/ptmx", "/dev/pts/ptmx")):
        bad.append(f"/dev/ptmx: {s} {link}")
    expect(not bad, "; ".join(bad))


@check("DefaultRuntimeLinuxSymlinks")
def default_symlinks(ctx: Ctx) -> None:
    """/dev/fd, /dev/stdin, /dev/stdout, /dev/stderr link into /proc/self/fd"""
    want = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
            "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"}
    cid = ctx.new_id()
    rep = ctx.probe(ctx.config(cid, probes=[f"readlink:{p}" for p in want]), cid)
    bad = {p: probe_result(rep, "readlink", p).get("target") for p, t in want.items()
           if probe_result(rep, "readlink", p).get("target") != t}
    expect(not bad, f"symlinks wrong: {bad}")


@check("DefaultFilesystems")
def default_filesystems(ctx: Ctx) -> None:
    """/proc, /sys, /dev/pts and /dev/shm are mounted with the usual filesystems"""
    cid = ctx.new_id()
    mi = {m["mountpoint"]: m["fstype"]
          for m in mountinfo_entries(ctx.probe(ctx.config(cid, probes=[]), cid)["mountinfo"])}
    want = {"/proc": "proc", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs"}
    bad = {k: mi.get(k) for k, v in want.items() if mi.get(k) != v}
    expect(not bad, f"missing/wrong: {bad}")


# cpu.shares 512 as cpu.weight: the spec leaves the conversion to the runtime. runc <= 1.2
# maps linearly (1 + (s-2)*9999/262142 = 20), crun >= 1.13 and runc >= 1.3 quadratically in
# log2 (59).
CPU_WEIGHTS_512 = ("20", "59")


def pure_v2() -> bool:
    """A cgroup v2 only host (the full-kernel lane): no v1 memory hierarchy."""
    mounts = cgroup_mounts()
    return "unified" in mounts and "memory" not in mounts


def placement_controllers() -> tuple[str, ...]:
    """Hierarchies whose placement the cgroupsPath checks compare."""
    return ("unified",) if pure_v2() else ("memory", "pids")


def container_cgroup(rep: dict, controller: str) -> str | None:
    for line in rep.get("cgroup", []):
        _, ctrls, path = line.split(":", 2)
        if controller in (ctrls.split(",") if ctrls else ["unified"]):
            return path
    return None


@check("CgroupsPathAbsOrRel", "CgroupsPathAttach")
def cgroups_relative_path(ctx: Ctx) -> None:
    """a relative cgroupsPath is placed under the runtime's own cgroup, consistently"""
    seen = []
    path = f"ocict-rel-{ctx.new_id()}"
    ctx.on_cleanup(lambda: remove_cgroups(path))
    for _ in range(2):
        cid = ctx.new_id()
        cfg = ctx.config(cid, probes=[])
        cfg["linux"]["cgroupsPath"] = path
        rep = ctx.probe(cfg, cid)
        seen.append(tuple(container_cgroup(rep, c) for c in placement_controllers()))
    own = own_cgroups()
    want = tuple(os.path.join(own[c], path) for c in placement_controllers())
    expect(seen == [want, want], f"container cgroups {seen}, want {want} twice")


@check("CgroupsAbsPathRelToMount", "CgroupsPathAttach")
def cgroups_absolute_path(ctx: Ctx) -> None:
    """an absolute cgroupsPath is taken relative to the cgroup mount point"""
    own = own_cgroups()[placement_controllers()[0]]
    path = os.path.join(own, f"ocict-abs-{ctx.new_id()}")
    created = []
    for ctrl in cgroup_mounts():
        d = cgroup_dir(ctrl, path)
        p = os.path.dirname(d)
        while not os.path.exists(p):
            created.append(p)
            p = os.path.dirname(p)

    def cleanup():
        remove_cgroups(path)
        for d in sorted(created, key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
    ctx.on_cleanup(cleanup)
    cid = ctx.new_id()
    cfg = ctx.config(cid, args=["sleep", "1000"])
    cfg["linux"]["cgroupsPath"] = path
    ctx.create(cid, cfg)
    pid = ctx.state(cid)["pid"]
    for ctrl in placement_controllers():
        d = cgroup_dir(ctrl, path)
        expect(os.path.isdir(d), f"{d} does not exist")
        with open(os.path.join(d, "cgroup.procs")) as f:
            expect(str(pid) in f.read().split(), f"pid {pid} not in {d}")


@check("EnvCreateImplement")
def cgroups_resources(ctx: Ctx) -> None:
    """memory, pids and cpu limits land in the container's cgroup files (v1 or v2)"""
    cid = ctx.new_id()
    cfg = long_running(ctx, cid)
    cfg["linux"]["resources"].update({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20},
        "pids": {"limit": 77},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}})
    ctx.create(cid, cfg)
    path = ctx.cgroups_path(cid)
    want = {("memory", "memory.limit_in_bytes"): str(64 << 20),
            ("memory", "memory.soft_limit_in_bytes"): str(32 << 20),
            ("pids", "pids.max"): "77", ("cpu", "cpu.shares"): "512",
            ("cpu", "cpu.cfs_quota_us"): "50000", ("cpu", "cpu.cfs_period_us"): "100000",
            ("cpuset", "cpuset.cpus"): "0"}
    if pure_v2():  # the v1 -> v2 conversions runc and crun use
        want = {("unified", "memory.max"): str(64 << 20),
                ("unified", "memory.low"): str(32 << 20),
                ("unified", "pids.max"): "77", ("unified", "cpu.weight"): CPU_WEIGHTS_512,
                ("unified", "cpu.max"): "50000 100000", ("unified", "cpuset.cpus"): "0"}
    bad = {}
    for (ctrl, fname), v in want.items():
        d = cgroup_dir(ctrl, path)
        try:
            with open(os.path.join(d, fname)) as f:
                got = f.read().strip()
        except (OSError, TypeError) as e:
            got = f"unreadable ({e})"
        if got not in (v if isinstance(v, tuple) else (v,)):
            bad[fname] = got
    expect(not bad, f"cgroup values differ: {bad}")


def read_cgroup_files(ctx: Ctx, cid: str, want: dict[str, str]) -> dict[str, str]:
    """{file: value} of the container's v2 cgroup files that differ from want."""
    d = cgroup_dir("unified", ctx.cgroups_path(cid))
    bad = {}
    for fname, v in want.items():
        try:
            with open(os.path.join(d, fname)) as f:
                got = f.read().strip()
        except (OSError, TypeError) as e:
            got = f"unreadable ({e})"
        if got != v:
            bad[fname] = got
    return bad


@check("EnvCreateImplement")
def cgroups_unified(ctx: Ctx) -> None:
    """linux.resources.unified keys are written to the container's cgroup v2 files"""
    if not pure_v2():
        raise CheckSkipped("needs a pure cgroup v2 host (full-kernel lane)")
    cid = ctx.new_id()
    cfg = long_running(ctx, cid)
    cfg["linux"]["resources"]["unified"] = {"memory.high": str(48 << 20), "pids.max": "33"}
    ctx.create(cid, cfg)
    bad = read_cgroup_files(ctx, cid, {"memory.high": str(48 << 20), "pids.max": "33"})
    expect(not bad, f"cgroup values differ: {bad}")


@check("EnvCreateImplement")
def cgroups_hugetlb_and_swap(ctx: Ctx) -> None:
    """hugepageLimits and memory.swap land in hugetlb.<size>.max and memory.swap.max (v2)"""
    if not pure_v2():
        raise CheckSkipped("needs a pure cgroup v2 host (full-kernel lane)")
    cid = ctx.new_id()
    cfg = long_running(ctx, cid)
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20, "swap": 96 << 20}
    cfg["linux"]["resources"]["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    ctx.create(cid, cfg)
    # memory.swap is memory+swap; v2 limits swap alone (runc's and crun's conversion)
    bad = read_cgroup_files(ctx, cid, {"memory.max": str(64 << 20),
                                       "memory.swap.max": str(32 << 20),
                                       "hugetlb.2MB.max": str(4 << 20)})
    expect(not bad, f"cgroup values differ: {bad}")


@check("DevicesApplyInOrder")
def device_rules_in_order(ctx: Ctx) -> None:
    """device cgroup rules apply in order (allow c 240:7 rwm then deny w => read-only)"""
    # 240:7 is in the experimental range with no driver: an open the cgroup allows fails
    # with ENXIO, one it denies fails with EPERM; no default device uses the number.
    cid = ctx.new_id()
    dev = "/dev/ocict-exp"
    cfg = ctx.config(cid, probes=[f"read:{dev}", f"write:{dev}"])
    cfg["linux"]["devices"] = [{"path": dev, "type": "c", "major": 240, "minor": 7,
                                "fileMode": 0o666}]
    cfg["linux"]["resources"]["devices"] += [
        {"allow": True, "type": "c", "major": 240, "minor": 7, "access": "rwm"},
        {"allow": False, "type": "c", "major": 240, "minor": 7, "access": "w"}]
    rep = ctx.probe(cfg, cid)
    rd, wr = probe_result(rep, "read", dev), probe_result(rep, "write", dev)
    expect(rd["errno"] == E.ENXIO, f"open for read gave errno {rd['errno']}, want ENXIO "
           "(allowed by the cgroup, no driver)")
    expect(wr["errno"] == E.EPERM, f"open for write after a later deny rule gave errno "
           f"{wr['errno']}, want EPERM")


@check("BlkIOWeightOrLeafWeightExist")
def blkio_weight_device_empty(ctx: Ctx) -> None:
    """a blockIO weightDevice entry with neither weight nor leafWeight is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["resources"]["blockIO"] = {"weightDevice": [{"major": 8, "minor": 0}]}
    ctx.expect_rejected(cid, cfg, what="a weightDevice without weight/leafWeight")


@check("EnvCreateImplement")
def sysctls_applied(ctx: Ctx) -> None:
    """sysctls are set inside the container's namespaces"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["read:/proc/sys/net/ipv4/ip_forward",
                                  "read:/proc/sys/kernel/msgmax"])
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4321"}
    rep = ctx.probe(cfg, cid)
    got = (probe_result(rep, "read", "/proc/sys/net/ipv4/ip_forward").get("data", "").strip(),
           probe_result(rep, "read", "/proc/sys/kernel/msgmax").get("data", "").strip())
    expect(got == ("1", "4321"), f"ip_forward/msgmax are {got}")


@check("EnvCreateImplement")
def seccomp_filter(ctx: Ctx) -> None:
    """a seccomp rule returns the configured errno and the filter is installed"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["mkdir:/dev/shm/ocict", "stat:/"])
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": E.EOPNOTSUPP}]}
    rep = ctx.probe(cfg, cid)
    expect(rep["status"].get("Seccomp") == "2", f"Seccomp mode is {rep['status'].get('Seccomp')}")
    got = probe_result(rep, "mkdir", "/dev/shm/ocict")["errno"]
    expect(got == E.EOPNOTSUPP, f"mkdir gave errno {got}, want {E.EOPNOTSUPP}")


@check("EnvCreateImplement")
def seccomp_filter_after_setup(ctx: Ctx) -> None:
    """a filter refusing close_range and getcwd without noNewPrivileges lets it run"""
    # runtime-tools' default profile lacks close_range: the runtime's own setup must not
    # run under the container's filter
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["stat:/"])
    cfg["process"]["noNewPrivileges"] = False
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [100]}
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["close_range", "getcwd"], "action": "SCMP_ACT_ERRNO"}]}
    rep = ctx.probe(cfg, cid)
    expect(rep["status"].get("Seccomp") == "2", f"Seccomp mode is {rep['status'].get('Seccomp')}")


@check("MountsInOrder")
def bind_mount_data_ignored(ctx: Ctx) -> None:
    """filesystem data options on a bind mount (mode=755,size=1k) are ignored, as by runc"""
    # runtime-tools' mounts test adds nosuid,strictatime,mode=755,size=1k to every mount
    cid = ctx.new_id()
    src = os.path.join(ctx.workdir, "bindsrc")
    os.makedirs(os.path.join(src, "bin"), exist_ok=True)
    cfg = ctx.config(cid, probes=["stat:/ocict-bind/bin"])
    cfg["mounts"].append({"destination": "/ocict-bind", "type": "bind", "source": src,
                          "options": ["rbind", "ro", "nosuid", "strictatime", "mode=755",
                                      "size=1k"]})
    rep = ctx.probe(cfg, cid)
    s = probe_result(rep, "stat", "/ocict-bind/bin")
    expect(not s["errno"] and s.get("type") == "d", f"/ocict-bind/bin: {s}")


@check("SeccSyscallsNamesRequired")
def seccomp_empty_names(ctx: Ctx) -> None:
    """a seccomp syscalls entry with no names is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}
    ctx.expect_rejected(cid, cfg, what="a seccomp rule with empty names")


@check("EnvCreateImplement")
def rootfs_propagation(ctx: Ctx) -> None:
    """rootfsPropagation shared/private is the propagation of / in the container"""
    for prop in ("shared", "private"):
        cid = ctx.new_id()
        cfg = ctx.config(cid, probes=[])
        cfg["linux"]["rootfsPropagation"] = prop
        root = [m for m in mountinfo_entries(ctx.probe(cfg, cid)["mountinfo"])
                if m["mountpoint"] == "/"][-1]
        shared = any(o.startswith("shared:") for o in root["optional"])
        expect(shared == (prop == "shared"), f"rootfsPropagation {prop}: / has optional fields "
               f"{root['optional']} (host / is {host_root_propagation()})")


@check("EnvCreateImplement")
def rootfs_propagation_recursive(ctx: Ctx) -> None:
    """rootfsPropagation rshared/rprivate (runc's and crun's forms) is accepted and applied"""
    # the upstream schema lists only the non-recursive forms; docker, containerd's CRI and a
    # peer runtime's suite send these
    for prop in ("rshared", "rprivate"):
        cid = ctx.new_id()
        cfg = ctx.config(cid, probes=[])
        cfg["linux"]["rootfsPropagation"] = prop
        root = [m for m in mountinfo_entries(ctx.probe(cfg, cid)["mountinfo"])
                if m["mountpoint"] == "/"][-1]
        shared = any(o.startswith("shared:") for o in root["optional"])
        expect(shared == (prop == "rshared"), f"rootfsPropagation {prop}: / has optional "
               f"fields {root['optional']} (host / is {host_root_propagation()})")


def _mounts_below(path: str) -> list[str]:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f]
    return [mp for mp in mps if mp == path or mp.startswith(path + "/")]


@check("EnvCreateImplement")
def no_mount_namespace(ctx: Ctx) -> None:
    """a config without a mount namespace runs, and delete leaves nothing mounted"""
    # runtime-tools' linux_ns_itype; the mounts happen in the runtime's mount namespace
    if host_has_shared_mounts() and "runc" in os.path.basename(ctx.rt.binary):
        raise CheckSkipped("a shared host mount: runc would make the host's / rslave")
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["stat:/proc/self"])
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "mount"]
    cfg["linux"].pop("maskedPaths", None)      # runc refuses them without a mount namespace
    cfg["linux"].pop("readonlyPaths", None)
    bundle = ctx.bundle(cid, cfg)
    rootfs = os.path.join(bundle, "rootfs")

    def unmount_left():               # what a runtime left in the host (runc does)
        for mp in sorted(_mounts_below(rootfs), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)

    ctx.on_cleanup(unmount_left)
    out = ctx.run_to_end(cid, bundle=bundle)
    expect(out.strip().startswith("{"), f"the container printed {out[:200]!r}")
    left = _mounts_below(rootfs)
    expect(not left, f"{len(left)} mounts left under the rootfs after delete: {left[:4]}")


def host_has_shared_mounts() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any("shared:" in " ".join(line.split(" - ")[0].split()[6:]) for line in f)


def host_root_propagation() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split(" - ")[0].split()
            if p[4] == "/":
                tags = [t.split(":")[0] for t in p[6:]]
                return ("shared" if "shared" in tags else "slave" if "master" in tags
                        else "private")
    return "unknown"


@check("EnvCreateImplement")
def masked_paths(ctx: Ctx) -> None:
    """masked files read as empty / unreadable and masked directories are empty"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["read:/proc/kcore", "ls:/sys/firmware", "read:/proc/keys"])
    rep = ctx.probe(cfg, cid)
    bad = []
    for p in ("/proc/kcore", "/proc/keys"):
        r = probe_result(rep, "read", p)
        if r["errno"] == 0 and r.get("data"):
            bad.append(f"{p} readable")
    ls = probe_result(rep, "ls", "/sys/firmware")
    if ls["errno"] == 0 and ls.get("entries"):
        bad.append(f"/sys/firmware lists {ls['entries'][:5]}")
    expect(not bad, "; ".join(bad))


@check("MaskedPathsAbs")
def masked_path_relative(ctx: Ctx) -> None:
    """a relative maskedPaths entry is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["maskedPaths"].append("proc/kcore")
    ctx.expect_rejected(cid, cfg, what="maskedPaths entry 'proc/kcore'")


@check("EnvCreateImplement")
def readonly_paths(ctx: Ctx) -> None:
    """readonlyPaths cannot be written (EROFS)"""
    cid = ctx.new_id()
    rep = ctx.probe(ctx.config(cid, probes=["write:/proc/sys/kernel/domainname",
                                            "read:/proc/sys/kernel/ostype"]), cid)
    w = probe_result(rep, "write", "/proc/sys/kernel/domainname")
    expect(w["errno"] == E.EROFS, f"write to /proc/sys gave errno {w['errno']}")
    expect(probe_result(rep, "read", "/proc/sys/kernel/ostype")["errno"] == 0,
           "read-only path is not readable")


@check("ReadonlyPathsAbs")
def readonly_path_relative(ctx: Ctx) -> None:
    """a relative readonlyPaths entry is rejected"""
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["readonlyPaths"].append("proc/sys")
    ctx.expect_rejected(cid, cfg, what="readonlyPaths entry 'proc/sys'")


def lsm_enabled(name: str) -> bool:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return name in f.read().split(",")
    except OSError:
        return os.path.isdir(f"/sys/kernel/security/{name}")


@check("EnvCreateImplement")
def selinux_labels(ctx: Ctx) -> None:
    """mountLabel/selinuxLabel are applied (needs SELinux)"""
    if not lsm_enabled("selinux"):
        raise CheckSkipped("SELinux is not enabled in this kernel (full-kernel lane)")
    raise CheckSkipped("SELinux label checks are not implemented yet")


@check("EnvCreateImplement")
def apparmor_profile(ctx: Ctx) -> None:
    """process.apparmorProfile is applied (needs AppArmor)"""
    if not lsm_enabled("apparmor"):
        raise CheckSkipped("AppArmor is not enabled in this kernel (full-kernel lane)")
    parser = shutil.which("apparmor_parser")
    if not parser:
        raise CheckSkipped("apparmor_parser is not installed (package apparmor)")
    name, secret = f"ocict-deny-{ctx.new_id()}", "/etc/ocict-secret"
    policy = os.path.join(ctx.workdir, name)
    with open(policy, "w") as f:
        f.write(f"abi <abi/3.0>,\nprofile {name} flags=(attach_disconnected,mediate_deleted) "
                "{\n  file,\n  capability,\n  network,\n  mount,\n  umount,\n  pivot_root,\n"
                f"  signal,\n  ptrace,\n  unix,\n  deny {secret} r,\n}}\n")
    r = subprocess.run([parser, "--replace", "--skip-cache", policy], capture_output=True,
                       text=True, timeout=WAIT_TIMEOUT)
    if r.returncode != 0:
        raise CheckSkipped(f"apparmor_parser could not load a profile: {r.stderr.strip()}")
    ctx.on_cleanup(lambda: subprocess.run([parser, "--remove", policy], capture_output=True,
                                          timeout=WAIT_TIMEOUT))
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["read:/proc/self/attr/current", f"read:{secret}"])
    cfg["process"]["apparmorProfile"] = name
    b = ctx.bundle(cid, cfg)
    with open(os.path.join(b, "rootfs", secret.lstrip("/")), "w") as f:
        f.write("secret\n")
    rep = ctx.probe(cfg, cid)
    current = probe_result(rep, "read", "/proc/self/attr/current").get("data", "").strip()
    expect(current.rstrip("\x00").strip() == f"{name} (enforce)",
           f"the process runs under {current!r}, not {name}")
    expect(probe_result(rep, "read", secret).get("errno") == E.EACCES,
           f"the profile did not deny reading {secret}")


@check("EnvCreateImplement")
def personality_domain(ctx: Ctx) -> None:
    """linux.personality LINUX32 is set for the container process"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["linux"]["personality"] = {"domain": "LINUX32"}
    got = ctx.probe(cfg, cid)["personality"]
    expect(got & 0xFF == 0x0008, f"personality is {got:#x}, want PER_LINUX32 (0x8)")


@check("EnvCreateImplement")
def io_priority(ctx: Ctx) -> None:
    """process.ioPriority (v1.3.0) sets the I/O scheduling class and level"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}
    got = ctx.probe(cfg, cid)["ioprio"]
    expect(got == (2 << 13) | 6, f"ioprio is {got:#x}, want {(2 << 13) | 6:#x}")


@check("EnvCreateImplement")
def scheduler_policy(ctx: Ctx) -> None:
    """process.scheduler (v1.2) sets policy and nice"""
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
    rep = ctx.probe(cfg, cid)
    expect((rep["sched_policy"], rep["nice"]) == (3, 7),
           f"policy/nice are {rep['sched_policy']}/{rep['nice']}, want 3 (SCHED_BATCH)/7")


@check("EnvCreateImplement")
def exec_cpu_affinity(ctx: Ctx) -> None:
    """process.execCPUAffinity.final (v1.3.0) pins the user program"""
    if os.cpu_count() < 2:
        raise CheckSkipped("needs 2 CPUs")
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=[])
    cfg["process"]["execCPUAffinity"] = {"final": "1"}
    got = ctx.probe(cfg, cid)["status"].get("Cpus_allowed_list")
    expect(got == "1", f"Cpus_allowed_list is {got!r}")


@check("EnvCreateImplement")
def time_namespace_offsets(ctx: Ctx) -> None:
    """a time namespace with timeOffsets (v1.2) shifts CLOCK_MONOTONIC"""
    if not os.path.exists("/proc/self/ns/time"):
        raise CheckSkipped("kernel has no time namespaces")
    cid = ctx.new_id()
    cfg = ctx.config(cid, probes=["read:/proc/self/timens_offsets"])
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": 86400, "nanosecs": 0}}
    rep = ctx.probe(cfg, cid)
    expect(rep["ns"].get("time") != host_ns("time"), "no new time namespace")
    data = probe_result(rep, "read", "/proc/self/timens_offsets").get("data", "")
    expect(any(line.split()[:2] == ["monotonic", "86400"] for line in data.splitlines()),
           f"timens_offsets: {data!r}")


def resctrl_mounted() -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(" - resctrl " in line for line in f)


@check("IntelRdtNoMountedResctrlError")
def intel_rdt_without_resctrl(ctx: Ctx) -> None:
    """intelRdt without a mounted resctrl filesystem is an error"""
    if resctrl_mounted():
        raise CheckSkipped("resctrl is mounted here; this check needs a host without it")
    cid = ctx.new_id()
    cfg = exiting(ctx, cid)
    cfg["linux"]["intelRdt"] = {"closID": "ocict", "l3CacheSchema": "L3:0=f"}
    ctx.expect_rejected(cid, cfg, what="intelRdt with no resctrl mounted")


@check("IntelRdtPIDWrite", "IntelRdtL3CacheSchemaWrite", "IntelRdtL3CacheSchemaNotWrite",
       "NotManipResctrlWithoutIntelRdt")
def intel_rdt_resctrl(ctx: Ctx) -> None:
    """intelRdt writes tasks/schemata under resctrl (needs Intel RDT)"""
    if not resctrl_mounted():
        raise CheckSkipped("no resctrl filesystem (needs Intel RDT hardware; full-kernel lane)")
    raise CheckSkipped("resctrl checks are not implemented yet")

