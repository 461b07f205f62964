"""pyoci.linux.process and pyoci.linux.rlimits: each attribute is applied in a forked child
and read back from the kernel (/proc/self/status, prlimit, sched_getaffinity, ioprio_get,
sched_getattr, /proc/self/personality, umask); check() rejects bad configs naming the field."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import pytest

from pyoci.errors import ConfigError, SysError
from pyoci.linux import process, rlimits, syscalls
from pyoci.spec import config

from support.child import ChildError, idle_child, in_child

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def status() -> dict[str, str]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def current_umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.fixture
def shared_dir():
    """A world-traversable temp dir (tmp_path's parents are root-only), removed after."""
    d = tempfile.mkdtemp(prefix="pyoci-proc-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- finalize: user, groups, umask, cwd ---------------------------------------------------

def _finalize(proc):
    process.finalize(config.Process.parse(proc))
    s = status()
    return {"uid": s["Uid"].split(), "gid": s["Gid"].split(), "groups": s["Groups"].split(),
            "umask": current_umask(), "cwd": os.getcwd(), "home": os.environ.get("HOME"),
            "keepcaps": __import__("prctl").get_keepcaps()}


@needs_root
def test_finalize_switches_user_groups_umask_and_cwd(shared_dir):
    got = in_child(_finalize, {"user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 6],
                                        "umask": 0o077}, "cwd": shared_dir})
    assert got["uid"] == ["1000"] * 4
    assert got["gid"] == ["1001"] * 4
    assert got["groups"] == ["5", "6"]
    assert got["umask"] == 0o077
    assert got["cwd"] == shared_dir
    assert got["keepcaps"] is False


@needs_root
def test_finalize_clears_groups_and_uses_default_umask_when_unset():
    def run():
        os.setgroups([7, 8])
        os.umask(0o000)
        os.environ.pop("HOME", None)
        return _finalize({"user": {"uid": 0, "gid": 0}, "cwd": "/"})
    got = in_child(run)
    assert got["groups"] == []
    assert got["umask"] == 0o022
    assert got["home"]  # set from /etc/passwd, "/" when uid has no entry
    assert got["uid"] == ["0"] * 4


@needs_root
def test_finalize_keeps_home_from_the_environment():
    def run():
        os.environ["HOME"] = "/somewhere"
        return _finalize({"user": {"uid": 1000, "gid": 1000}})
    assert in_child(run)["home"] == "/somewhere"


def test_home_dir_reads_passwd(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n")
    assert process.home_dir(1000, str(pw)) == "/home/bob"
    assert process.home_dir(0, str(pw)) == "/root"
    assert process.home_dir(4242, str(pw)) == "/"


@needs_root
def test_finalize_missing_cwd_names_process_cwd(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ChildError) as ei:
        in_child(_finalize, {"user": {"uid": 0, "gid": 0}, "cwd": missing})
    assert ei.value.kind == "ConfigError"
    assert ei.value.message.startswith("process.cwd:")
    assert missing in ei.value.message


@needs_root
def test_finalize_retries_chdir_as_the_container_user(shared_dir):
    """A cwd only the container user may enter: the first chdir (as root without
    CAP_DAC_*) fails with EACCES, the one after the user switch succeeds."""
    private = os.path.join(shared_dir, "private")
    os.mkdir(private, 0o700)
    os.chown(private, 1000, 1000)

    def run():
        import prctl
        prctl.cap_effective.dac_override = False
        prctl.cap_effective.dac_read_search = False
        try:
            os.chdir(private)
            return {"precondition": "root could enter"}
        except PermissionError:
            pass
        return _finalize({"user": {"uid": 1000, "gid": 1000}, "cwd": private})
    got = in_child(run)
    assert "precondition" not in got
    assert got["cwd"] == private
    assert got["uid"] == ["1000"] * 4


def _enter_userns_mapping_only_root():
    """unshare a user namespace mapping only uid/gid 0 (to the caller's ids), with
    setgroups denied, as an unprivileged writer must."""
    uid, gid = os.geteuid(), os.getegid()
    syscalls.unshare(syscalls.CLONE_NEWUSER)
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


@needs_root
def test_finalize_skips_setgroups_when_denied_in_a_user_namespace():
    def run():
        _enter_userns_mapping_only_root()
        try:
            os.setgroups([])
            return {"precondition": "setgroups allowed"}
        except PermissionError:
            pass
        return dict(_finalize({"user": {"uid": 0, "gid": 0}, "cwd": "/"}),
                    allowed=process.setgroups_allowed())
    got = in_child(run)
    assert "precondition" not in got
    assert got["allowed"] is False
    assert got["uid"] == ["0"] * 4


@needs_root
def test_finalize_rejects_an_unmapped_user():
    def run():
        _enter_userns_mapping_only_root()
        return _finalize({"user": {"uid": 1000, "gid": 0}})
    with pytest.raises(ChildError) as ei:
        in_child(run)
    assert ei.value.kind == "ConfigError"
    assert ei.value.message.startswith("process.user.uid:")
    assert "unmapped" in ei.value.message


@needs_root
def test_rootless_rejects_additional_gids():
    def run():
        _enter_userns_mapping_only_root()
        process.finalize(config.Process.parse(
            {"user": {"uid": 0, "gid": 0, "additionalGids": [5]}}), rootless=True)
    with pytest.raises(ChildError) as ei:
        in_child(run)
    assert ei.value.message.startswith("process.user.additionalGids:")


@needs_root
def test_finalize_restores_the_parent_death_signal():
    def run():
        import prctl
        prctl.set_pdeathsig(9)
        process.finalize(config.Process.parse({"user": {"uid": 1000, "gid": 1000}}))
        return prctl.get_pdeathsig()
    assert in_child(run) == 9


# --- no_new_privs, personality ------------------------------------------------------------

def test_set_no_new_privileges():
    def run():
        before = status()["NoNewPrivs"]
        process.set_no_new_privileges()
        return [before, status()["NoNewPrivs"]]
    assert in_child(run) == ["0", "1"]


def _personality(p):
    process.apply_personality(config.Personality.parse(p))
    with open("/proc/self/personality") as f:
        return int(f.read(), 16)


def test_apply_personality_linux32():
    assert in_child(_personality, {"domain": "LINUX32"}) == 0x0008


def test_apply_personality_linux_with_flag():
    assert in_child(_personality, {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}) \
        == 0x0040000


def test_personality_rejects_bad_domain_and_flag():
    with pytest.raises(ConfigError, match=r'^linux\.personality\.domain: .*"LINUX64"'):
        process.check_personality({"domain": "LINUX64"})
    with pytest.raises(ConfigError, match=r"^linux\.personality\.flags\[1\]:"):
        process.check_personality({"domain": "LINUX", "flags": ["UNAME26", "BOGUS"]})
    with pytest.raises(ConfigError, match=r"^linux\.personality\.domain:"):
        process.check({"cwd": "/"}, personality={"domain": "linux"})


# --- I/O priority -------------------------------------------------------------------------

def _ioprio(p):
    process.apply_io_priority(config.IOPriority.parse(p))
    return process.ioprio_get()


@pytest.mark.parametrize("cls,prio,num", [("IOPRIO_CLASS_BE", 3, 2), ("IOPRIO_CLASS_IDLE", 0, 3),
                                          ("IOPRIO_CLASS_BE", 7, 2)])
def test_apply_io_priority(cls, prio, num):
    assert in_child(_ioprio, {"class": cls, "priority": prio}) == num << 13 | prio


@needs_root
def test_apply_io_priority_realtime():
    assert in_child(_ioprio, {"class": "IOPRIO_CLASS_RT", "priority": 1}) == 1 << 13 | 1


@pytest.mark.parametrize("p,field", [
    ({"class": "IOPRIO_CLASS_FOO", "priority": 0}, "process.ioPriority.class"),
    ({"priority": 0}, "process.ioPriority.class"),
    ({"class": "IOPRIO_CLASS_BE", "priority": 8}, "process.ioPriority.priority"),
    ({"class": "IOPRIO_CLASS_BE", "priority": -1}, "process.ioPriority.priority"),
])
def test_check_rejects_bad_io_priority(p, field):
    with pytest.raises(ConfigError) as ei:
        process.check({"cwd": "/", "ioPriority": p})
    assert str(ei.value).startswith(field + ":")


# --- scheduler ----------------------------------------------------------------------------

def _sched(p):
    process.apply_scheduler(config.Scheduler.parse(p))
    a = process.sched_getattr()
    return {"policy": a.sched_policy, "nice": a.sched_nice, "priority": a.sched_priority,
            "flags": a.sched_flags, "runtime": a.sched_runtime, "deadline": a.sched_deadline,
            "period": a.sched_period, "getpriority": os.getpriority(os.PRIO_PROCESS, 0)}


def test_apply_scheduler_batch_with_nice():
    got = in_child(_sched, {"policy": "SCHED_BATCH", "nice": 5})
    assert got["policy"] == os.SCHED_BATCH
    assert got["nice"] == 5
    assert got["getpriority"] == 5


def test_apply_scheduler_idle():
    assert in_child(_sched, {"policy": "SCHED_IDLE"})["policy"] == os.SCHED_IDLE


@needs_root
def test_apply_scheduler_fifo_priority_and_flag():
    got = in_child(_sched, {"policy": "SCHED_FIFO", "priority": 10,
                            "flags": ["SCHED_FLAG_RESET_ON_FORK"]})
    assert got["policy"] == os.SCHED_FIFO
    assert got["priority"] == 10
    assert got["flags"] & 0x01


@needs_root
def test_apply_scheduler_deadline():
    p = {"policy": "SCHED_DEADLINE", "runtime": 10_000_000, "deadline": 30_000_000,
         "period": 30_000_000}
    try:
        got = in_child(_sched, p)
    except ChildError as e:
        if any(os.strerror(n) in e.message for n in (errno.EBUSY, errno.EPERM)):
            pytest.skip(f"host refuses SCHED_DEADLINE admission: {e.message}")
        raise
    assert got["policy"] == 6
    assert (got["runtime"], got["deadline"], got["period"]) == (10_000_000, 30_000_000,
                                                                30_000_000)


def test_apply_scheduler_failure_names_the_field():
    # SCHED_ISO is in the spec but not implemented by Linux.
    with pytest.raises(ChildError) as ei:
        in_child(_sched, {"policy": "SCHED_ISO"})
    assert ei.value.kind == "SysError"
    assert ei.value.message.startswith("process.scheduler:")


@pytest.mark.parametrize("p,field", [
    ({"policy": "SCHED_FOO"}, "process.scheduler.policy"),
    ({}, "process.scheduler.policy"),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice"),
    ({"policy": "SCHED_OTHER", "nice": -21}, "process.scheduler.nice"),
    ({"policy": "SCHED_OTHER", "priority": 5}, "process.scheduler.priority"),
    ({"policy": "SCHED_FIFO", "priority": 100}, "process.scheduler.priority"),
    ({"policy": "SCHED_RR", "runtime": 100}, "process.scheduler.runtime"),
    ({"policy": "SCHED_OTHER", "period": 100}, "process.scheduler.period"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_RECLAIM", "SCHED_FLAG_X"]},
     "process.scheduler.flags[1]"),
])
def test_check_rejects_bad_scheduler(p, field):
    with pytest.raises(ConfigError) as ei:
        process.check({"cwd": "/", "scheduler": p})
    assert str(ei.value).startswith(field + ":")


# --- exec CPU affinity --------------------------------------------------------------------

@pytest.mark.parametrize("s,cpus", [
    ("", set()), ("0", {0}), ("0-1", {0, 1}), ("0,1", {0, 1}), (",0,1,", {0, 1}),
    ("0,1,2-3", {0, 1, 2, 3}), ("1, 2, 1-2", {1, 2}),
    ("    , 1   , 3  ,  5-7,    ", {1, 3, 5, 6, 7}),
    ("127-129, 1", {1, 127, 128, 129}), ("65536", {65536}),
])
def test_parse_cpu_list(s, cpus):
    assert process.parse_cpu_list(s) == cpus


@pytest.mark.parametrize("s", ["-", "1-", "-3", ",", " ", "54-53", "1 - 2", "65537", "0-65537",
                               "a", "1,b"])
def test_parse_cpu_list_rejects(s):
    with pytest.raises(ConfigError, match=r"^process\.execCPUAffinity"):
        process.parse_cpu_list(s)


def test_check_names_the_affinity_stage():
    with pytest.raises(ConfigError, match=r"^process\.execCPUAffinity\.final:"):
        process.check({"cwd": "/", "execCPUAffinity": {"initial": "0", "final": "3-1"}})


def _affinity(p, stage):
    before = sorted(os.sched_getaffinity(0))
    process.apply_exec_cpu_affinity(config.ExecCPUAffinity.parse(p), stage)
    return [before, sorted(os.sched_getaffinity(0))]


def test_apply_exec_cpu_affinity_stages():
    cpus = sorted(os.sched_getaffinity(0))
    first, last = cpus[0], cpus[-1]
    p = {"initial": str(first), "final": f"{last}"}
    assert in_child(_affinity, p, "initial")[1] == [first]
    assert in_child(_affinity, p, "final")[1] == [last]
    # A stage that is not given leaves the affinity alone.
    before, after = in_child(_affinity, {"initial": str(first)}, "final")
    assert after == before == cpus


def test_apply_exec_cpu_affinity_to_another_pid():
    cpus = sorted(os.sched_getaffinity(0))
    with idle_child() as pid:
        process.apply_exec_cpu_affinity(config.ExecCPUAffinity(initial=str(cpus[-1])),
                                        "initial", pid)
        assert os.sched_getaffinity(pid) == {cpus[-1]}


def test_apply_exec_cpu_affinity_with_no_usable_cpu_names_the_field():
    with pytest.raises(ChildError) as ei:
        in_child(_affinity, {"final": "60000"}, "final")
    assert ei.value.kind == "SysError"
    assert ei.value.message.startswith("process.execCPUAffinity.final:")


# --- oom_score_adj ------------------------------------------------------------------------

def _read_oom(pid="self") -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def test_set_oom_score_adj_raises_it():
    def run():
        process.set_oom_score_adj(500)
        first = _read_oom()
        process.set_oom_score_adj(_read_oom() - 100)  # still above the inherited minimum
        return [first, _read_oom()]
    assert in_child(run) == [500, 400]


def test_set_oom_score_adj_of_another_pid():
    with idle_child() as pid:
        process.set_oom_score_adj(321, pid)
        assert _read_oom(pid) == 321


def test_lowering_oom_score_adj_without_cap_sys_resource_fails_clearly():
    target = min(_read_oom(), 0) - 1
    if target < -1000:
        pytest.skip("oom_score_adj is already at its minimum")

    def run():
        import prctl
        prctl.cap_effective.sys_resource = False  # no-op where it is already missing
        try:
            process.set_oom_score_adj(target)
        except SysError as e:
            return str(e)
        return None
    msg = in_child(run)
    assert msg is not None and msg.startswith("process.oomScoreAdj:")
    assert "CAP_SYS_RESOURCE" in msg


def test_check_rejects_out_of_range_oom_score_adj():
    with pytest.raises(ConfigError, match=r"^process\.oomScoreAdj:"):
        process.check({"cwd": "/", "oomScoreAdj": 1001})


# --- rlimits ------------------------------------------------------------------------------

def _apply_rlimits(limits):
    rlimits.apply([config.Rlimit.parse(r) for r in limits])
    return {r["type"]: list(rlimits.prlimit(0, rlimits.TYPES[r["type"]])) for r in limits}


def test_rlimits_apply_and_read_back():
    hard = rlimits.prlimit(0, rlimits.TYPES["RLIMIT_NOFILE"])[1]
    limits = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": min(hard, 2000)},
              {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
              {"type": "RLIMIT_NICE", "soft": 0, "hard": 0}]
    got = in_child(_apply_rlimits, limits)
    assert got == {"RLIMIT_NOFILE": [100, min(hard, 2000)], "RLIMIT_CORE": [0, 0],
                   "RLIMIT_NICE": [0, 0]}


def test_rlimits_infinity_round_trips():
    cur = rlimits.prlimit(0, rlimits.TYPES["RLIMIT_CORE"])
    if cur[1] != rlimits.RLIM_INFINITY:
        pytest.skip("RLIMIT_CORE hard limit is not unlimited here")
    inf = rlimits.RLIM_INFINITY
    got = in_child(_apply_rlimits, [{"type": "RLIMIT_CORE", "soft": inf, "hard": inf}])
    assert got["RLIMIT_CORE"] == [inf, inf]


def test_rlimits_apply_to_another_pid():
    with idle_child() as pid:
        rlimits.apply([config.Rlimit("RLIMIT_NOFILE", 64, 128)], pid)
        assert rlimits.prlimit(pid, rlimits.TYPES["RLIMIT_NOFILE"]) == (64, 128)


def test_rlimit_above_the_hard_limit_without_cap_sys_resource_is_a_clear_error():
    res = rlimits.TYPES["RLIMIT_NOFILE"]
    hard = rlimits.prlimit(0, res)[1]
    if hard == rlimits.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE hard limit is unlimited")
    limits = [{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]

    def run():
        import prctl
        prctl.cap_effective.sys_resource = False
        try:
            rlimits.apply([config.Rlimit.parse(r) for r in limits])
        except SysError as e:
            return str(e)
        return None
    msg = in_child(run)
    assert msg is not None
    assert msg.startswith("process.rlimits[0]:")
    assert "RLIMIT_NOFILE" in msg and "CAP_SYS_RESOURCE" in msg


@pytest.mark.parametrize("limits,msg", [
    ([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}], r'^process\.rlimits\[0\]: .*"RLIMIT_FOO"'),
    ([{"type": "RLIMIT_CORE", "soft": 1, "hard": 1},
      {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}], r"^process\.rlimits\[1\]: .*soft"),
    ([{"type": "RLIMIT_CORE", "soft": 1, "hard": 1},
      {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}], r"^process\.rlimits\[1\]: duplicate"),
    ([{"type": "RLIMIT_CORE", "soft": -1, "hard": 1}], r"^process\.rlimits\[0\]\.soft:"),
    ([{"type": "RLIMIT_CORE", "soft": 1, "hard": 1 << 64}], r"^process\.rlimits\[0\]\.hard:"),
    ([{"type": "RLIMIT_CORE", "hard": 1}], r"^process\.rlimits\[0\]\.soft:"),
])
def test_rlimits_check_rejects(limits, msg):
    with pytest.raises(ConfigError, match=msg):
        rlimits.check(limits)
    with pytest.raises(ConfigError, match=msg):
        process.check({"cwd": "/", "rlimits": limits})


def test_rlimits_check_accepts_valid():
    rlimits.check([{"type": t, "soft": 1, "hard": 2} for t in rlimits.TYPES])
    rlimits.check(None)
    rlimits.check([])


# --- check(): the whole process object ----------------------------------------------------

def test_check_accepts_a_full_process():
    proc = {
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [5], "umask": 0o022},
        "cwd": "/", "noNewPrivileges": True, "oomScoreAdj": 100,
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}],
        "scheduler": {"policy": "SCHED_FIFO", "priority": 1},
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
        "execCPUAffinity": {"initial": "0", "final": "0-1"},
    }
    assert process.check(proc, personality={"domain": "LINUX"}) == []


@pytest.mark.parametrize("proc,field", [
    ({"cwd": "relative/dir"}, "process.cwd"),
    ({"cwd": "/", "user": {"uid": -1, "gid": 0}}, "process.user.uid"),
    ({"cwd": "/", "user": {"uid": 0, "gid": "0"}}, "process.user.gid"),
    ({"cwd": "/", "user": {"uid": 0, "gid": 0, "additionalGids": [1, -2]}},
     "process.user.additionalGids[1]"),
    ({"cwd": "/", "user": {"uid": 0, "gid": 0, "umask": -1}}, "process.user.umask"),
    ({"cwd": "/", "capabilities": {"ambient": ["CAP_NOPE"]}}, "process.capabilities.ambient"),
    ({"cwd": "/", "noNewPrivileges": "yes"}, "process.noNewPrivileges"),
])
def test_check_rejects(proc, field):
    with pytest.raises(ConfigError) as ei:
        process.check(proc)
    assert str(ei.value).startswith(field + ":")
