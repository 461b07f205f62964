"""pyoci.linux.capabilities: names, parsing, create-time checks, and the capability sets a
forked child really ends up with (read back from /proc/self/status, also across execve)."""

from __future__ import annotations

import os
import shutil

import pytest

from pyoci.errors import ConfigError
from pyoci.linux import capabilities, process
from pyoci.spec import config

from support.child import ChildError, in_child

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# runc's default capability set ("runc spec").
DEFAULT = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def status() -> dict[str, str]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def cap_sets() -> dict[str, int]:
    s = status()
    return {k: int(s[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << capabilities.number(n)
    return m


def host_caps() -> dict[str, int]:
    return cap_sets()


# --- names / parse / check ----------------------------------------------------------------

def test_names_cover_every_kernel_capability_in_order():
    names = capabilities.names()
    assert names[0] == "CAP_CHOWN"
    assert names[21] == "CAP_SYS_ADMIN"
    assert names[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(names) == len(set(names)) == 41
    assert len(names) >= capabilities.last_cap() + 1


def test_parse_maps_names_to_numbers():
    assert capabilities.parse(["CAP_CHOWN", "CAP_KILL", "CAP_CHOWN"]) == {0, 5}
    assert capabilities.parse([]) == set()
    assert capabilities.parse(None) == set()


def test_parse_rejects_unknown_names():
    with pytest.raises(ConfigError, match='unknown capability "CAP_FOO"'):
        capabilities.parse(["CAP_CHOWN", "CAP_FOO"])
    with pytest.raises(ConfigError, match='unknown capability "chown"'):
        capabilities.parse(["chown"])


@pytest.mark.parametrize("which", capabilities.SETS)
def test_check_names_the_set_with_the_unknown_capability(which):
    caps = {s: list(DEFAULT) for s in capabilities.SETS}
    caps[which] = ["CAP_KILL", "CAP_FOO"]
    with pytest.raises(ConfigError) as ei:
        capabilities.check(caps)
    assert str(ei.value) == f'process.capabilities.{which}: unknown capability "CAP_FOO"'


def test_check_accepts_known_sets_and_none():
    assert capabilities.check({s: list(DEFAULT) for s in capabilities.SETS}) == []
    assert capabilities.check(None) == []
    assert capabilities.check({}) == []


def test_check_rejects_non_list_set():
    with pytest.raises(ConfigError, match="process.capabilities.effective"):
        capabilities.check({"effective": "CAP_KILL"})


def test_capabilities_beyond_the_kernel_are_skipped_with_a_warning(monkeypatch, capsys):
    monkeypatch.setattr(capabilities, "last_cap", lambda: 38)
    caps = {"bounding": ["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"],
            "permitted": ["CAP_BPF"]}
    warnings = capabilities.check(caps)
    assert len(warnings) == 1
    assert "CAP_BPF" in warnings[0] and "CAP_CHECKPOINT_RESTORE" in warnings[0]
    assert "CAP_KILL" not in warnings[0]
    assert "level=warning" in capsys.readouterr().err   # logged (stderr without --log)
    assert capabilities.parse(caps["bounding"]) == {5}


# --- applying them (forked children) ------------------------------------------------------

def _drop_and_apply(caps):
    caps = None if caps is None else config.Capabilities.parse(caps)
    capabilities.drop_bounding(caps)
    warnings = capabilities.apply(caps)
    return {"sets": cap_sets(), "warnings": warnings}


@needs_root
def test_root_gets_exactly_the_requested_sets():
    caps = {"bounding": DEFAULT + ["CAP_CHOWN"], "effective": DEFAULT,
            "permitted": DEFAULT + ["CAP_CHOWN"], "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"]}
    got = in_child(_drop_and_apply, caps)
    assert got["warnings"] == []
    s = got["sets"]
    assert s["CapBnd"] == mask(DEFAULT + ["CAP_CHOWN"])
    assert s["CapEff"] == mask(DEFAULT)
    assert s["CapPrm"] == mask(DEFAULT + ["CAP_CHOWN"])
    assert s["CapInh"] == mask(["CAP_KILL"])
    assert s["CapAmb"] == mask(["CAP_KILL"])


@needs_root
def test_empty_capabilities_object_drops_everything():
    s = in_child(_drop_and_apply, {})["sets"]
    assert s == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


@needs_root
def test_absent_capabilities_leave_the_process_alone():
    before = host_caps()
    s = in_child(_drop_and_apply, None)["sets"]
    assert s == before


@needs_root
def test_effective_outside_permitted_is_an_error():
    caps = {"bounding": DEFAULT, "effective": ["CAP_KILL", "CAP_AUDIT_WRITE"],
            "permitted": ["CAP_KILL"]}
    with pytest.raises(ChildError) as ei:
        in_child(_drop_and_apply, caps)
    assert ei.value.kind == "SysError"
    assert "process.capabilities" in ei.value.message
    assert "can't apply capabilities" in ei.value.message


@needs_root
def test_ambient_not_in_inheritable_is_a_warning_not_an_error():
    caps = {"bounding": DEFAULT, "effective": DEFAULT, "permitted": DEFAULT,
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL", "CAP_NET_BIND_SERVICE"]}
    got = in_child(_drop_and_apply, caps)
    assert got["sets"]["CapAmb"] == mask(["CAP_KILL"])
    assert len(got["warnings"]) == 1
    assert "CAP_NET_BIND_SERVICE" in got["warnings"][0]


@needs_root
def test_bounding_set_is_dropped_before_the_user_switch():
    def run():
        capabilities.drop_bounding(config.Capabilities(bounding=["CAP_CHOWN"]))
        after_drop = cap_sets()
        # Dropping from the bounding set does not touch the other sets.
        return after_drop
    s = in_child(run)
    before = host_caps()
    assert s["CapBnd"] == mask(["CAP_CHOWN"])
    assert s["CapEff"] == before["CapEff"]
    assert s["CapPrm"] == before["CapPrm"]


def _finalize_then_status(proc):
    process.finalize(config.Process.parse(proc))
    return {"sets": cap_sets(), "status": status()}


@needs_root
def test_non_root_user_keeps_requested_caps_through_setuid():
    caps = {"bounding": DEFAULT, "effective": DEFAULT, "permitted": DEFAULT,
            "inheritable": DEFAULT, "ambient": DEFAULT}
    got = in_child(_finalize_then_status,
                   {"user": {"uid": 1000, "gid": 1000}, "cwd": "/", "capabilities": caps})
    assert got["status"]["Uid"].split() == ["1000"] * 4
    for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert got["sets"][k] == mask(DEFAULT), k


@needs_root
def test_non_root_user_without_capabilities_has_no_effective_caps():
    got = in_child(_finalize_then_status, {"user": {"uid": 1000, "gid": 1000}, "cwd": "/"})
    assert got["sets"]["CapEff"] == 0
    assert got["sets"]["CapAmb"] == 0
    # No KEEPCAPS after finalize: the kept permitted set is lost at execve (no file caps).
    import prctl
    assert in_child(lambda: (process.finalize(config.Process.parse(
                                 {"user": {"uid": 1000, "gid": 1000}})),
                             prctl.get_keepcaps())[1]) is False


def _exec_and_read_status(proc, cat):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # grandchild: finalize, then exec cat on its own status
        try:
            os.close(r)
            os.dup2(w, 1)
            process.finalize(config.Process.parse(proc))
            os.execv(cat, [cat, "/proc/self/status"])
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, st = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        raise RuntimeError(f"exec failed: {st}")
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return {k: int(out[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


@needs_root
def test_ambient_caps_survive_execve_for_a_non_root_user():
    cat = shutil.which("cat")
    if not cat:
        pytest.skip("no cat binary")
    caps = {"bounding": DEFAULT, "effective": DEFAULT, "permitted": DEFAULT,
            "inheritable": DEFAULT, "ambient": ["CAP_KILL"]}
    s = in_child(_exec_and_read_status,
                 {"user": {"uid": 1000, "gid": 1000}, "cwd": "/", "capabilities": caps}, cat)
    assert s["CapAmb"] == mask(["CAP_KILL"])
    assert s["CapEff"] == mask(["CAP_KILL"])
    assert s["CapPrm"] == mask(["CAP_KILL"])
    assert s["CapInh"] == mask(DEFAULT)
    assert s["CapBnd"] == mask(DEFAULT)


@needs_root
def test_root_user_keeps_full_sets_across_execve():
    cat = shutil.which("cat")
    if not cat:
        pytest.skip("no cat binary")
    caps = {"bounding": DEFAULT, "effective": DEFAULT, "permitted": DEFAULT}
    s = in_child(_exec_and_read_status, {"user": {"uid": 0, "gid": 0}, "cwd": "/",
                                         "capabilities": caps}, cat)
    # root: execve refills permitted/effective from the bounding set.
    assert s["CapEff"] == s["CapPrm"] == s["CapBnd"] == mask(DEFAULT)
    assert s["CapInh"] == s["CapAmb"] == 0
