"""The cgroup v2 device filter: runc's emulator semantics (pure), the generated program
(run through a small BPF interpreter and compared with the rule model), and the real kernel
(a child process in a test cgroup under this host's cgroup2 mount)."""

from __future__ import annotations

import os
import struct
import tempfile
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from pyoci.cgroups import ebpf
from pyoci.cgroups.ebpf import WILDCARD, Rule
from pyoci.errors import ConfigError
from support.child import access_in_cgroup

UNIFIED = "/sys/fs/cgroup/unified"


# --- emulator (pure) ---------------------------------------------------------------------

def R(t, ma, mi, acc, allow):
    return Rule(t, ma, mi, acc, allow)


def test_default_is_deny_all():
    assert ebpf.emulate([]) == (False, {})
    assert not ebpf.allows([], "c", 1, 3, "r")


def test_allow_all_then_deny_one():
    rules = [R("a", -1, -1, "rwm", True), R("c", 1, 3, "r", False)]
    default_allow, exc = ebpf.emulate(rules)
    assert default_allow is True
    assert exc == {("c", 1, 3): "r"}
    assert not ebpf.allows(rules, "c", 1, 3, "r")
    assert ebpf.allows(rules, "c", 1, 3, "w")
    assert ebpf.allows(rules, "c", 1, 5, "r")
    assert ebpf.allows(rules, "b", 8, 0, "rw")


def test_a_rule_resets_previous_rules():
    rules = [R("c", 1, 3, "rwm", True), R("a", -1, -1, "rwm", False),
             R("c", 1, 5, "r", True)]
    assert ebpf.emulate(rules) == (False, {("c", 1, 5): "r"})
    assert not ebpf.allows(rules, "c", 1, 3, "r")
    assert ebpf.allows(rules, "c", 1, 5, "r")
    assert not ebpf.allows(rules, "c", 1, 5, "rw")


def test_access_merges_and_removal_subtracts():
    rules = [R("c", 1, 3, "r", True), R("c", 1, 3, "w", True)]
    assert ebpf.emulate(rules)[1] == {("c", 1, 3): "rw"}
    assert ebpf.allows(rules, "c", 1, 3, "rw")
    rules.append(R("c", 1, 3, "r", False))
    assert ebpf.emulate(rules)[1] == {("c", 1, 3): "w"}
    rules.append(R("c", 1, 3, "w", False))
    assert ebpf.emulate(rules)[1] == {}


def test_wildcards_match_any_number():
    rules = [R("c", 1, WILDCARD, "rw", True), R("b", WILDCARD, WILDCARD, "m", True)]
    assert ebpf.allows(rules, "c", 1, 3, "r")
    assert ebpf.allows(rules, "c", 1, 200, "w")
    assert not ebpf.allows(rules, "c", 2, 3, "r")
    assert not ebpf.allows(rules, "c", 1, 3, "m")
    assert ebpf.allows(rules, "b", 8, 1, "m")
    assert not ebpf.allows(rules, "b", 8, 1, "r")


def test_punching_a_hole_into_a_wildcard_is_refused():
    rules = [R("c", 1, WILDCARD, "rw", True), R("c", 1, 3, "r", False)]
    with pytest.raises(ConfigError, match="hole"):
        ebpf.emulate(rules)
    # removing an access the wildcard does not grant is fine
    ebpf.emulate([R("c", 1, WILDCARD, "rw", True), R("c", 1, 3, "m", False)])


def test_clean_rules_are_sorted_like_runc():
    rules = [R("c", 5, 2, "rwm", True), R("c", 1, 9, "rwm", True),
             R("b", 1, 9, "r", True), R("c", WILDCARD, WILDCARD, "m", True)]
    default_allow, clean = ebpf.clean_rules(rules)
    assert default_allow is False
    assert [(r.type, r.major, r.minor) for r in clean] == [
        ("c", -1, -1), ("b", 1, 9), ("c", 1, 9), ("c", 5, 2)]
    assert all(r.allow for r in clean)


def test_rule_from_spec_validation():
    assert ebpf.rule_from_spec({"allow": False}) == R("a", -1, -1, "rwm", False)
    assert ebpf.rule_from_spec({"allow": True, "type": "c", "major": 1, "minor": 3,
                                "access": "wr"}) == R("c", 1, 3, "rw", True)
    for bad, what in (({"type": "c"}, "allow"),
                      ({"allow": True, "type": "x"}, "type"),
                      ({"allow": True, "access": "rx"}, "access"),
                      ({"allow": True, "access": ""}, "access"),
                      ({"allow": True, "major": -2}, "major"),
                      ({"allow": True, "minor": "3"}, "minor")):
        with pytest.raises(ConfigError, match=what):
            ebpf.rules_from_spec([bad])


# --- the generated program, interpreted -------------------------------------------------

ACC = {"r": ebpf.BPF_DEVCG_ACC_READ, "w": ebpf.BPF_DEVCG_ACC_WRITE,
       "m": ebpf.BPF_DEVCG_ACC_MKNOD}
TYP = {"c": ebpf.BPF_DEVCG_DEV_CHAR, "b": ebpf.BPF_DEVCG_DEV_BLOCK}
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


def run_program(insns: list[bytes], dtype: str, major: int, minor: int, access: str) -> int:
    """Interpret the handful of BPF instructions the generator emits."""
    acc = 0
    for c in access:
        acc |= ACC[c]
    ctx = struct.pack("<III", (acc << 16) | TYP[dtype], major, minor)
    reg = [0] * 11
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 10000, "program loops"
        code, regs, off, imm = struct.unpack("<BBhi", insns[pc])
        dst, src = regs & 0xF, regs >> 4
        pc += 1
        if code == 0x61:                                   # ldxw dst, [src+off]
            assert src == 1
            reg[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            reg[dst] = (reg[dst] & imm) & M32               # and32 imm
        elif code == 0x74:
            reg[dst] = (reg[dst] & M32) >> imm              # rsh32 imm
        elif code == 0xB4:
            reg[dst] = imm & M32                            # mov32 imm
        elif code == 0xBC:
            reg[dst] = reg[src] & M32                       # mov32 reg
        elif code == 0x55:                                 # jne imm (64-bit)
            if reg[dst] != (imm & M64):
                pc += off
        elif code == 0x5D:                                 # jne reg
            if reg[dst] != reg[src]:
                pc += off
        elif code == 0x95:
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert 0 <= pc < len(insns)


def test_program_layout_for_default_deny():
    prog = ebpf.device_program([])
    assert len(prog) == 8  # 6 loads + mov r0, 0 + exit
    assert prog[-1] == ebpf.insn(0x95)
    assert prog[-2] == ebpf.insn(0xB4, 0, imm=0)
    assert run_program(prog, "c", 1, 3, "r") == 0


def test_program_blocks_skip_access_check_for_rwm():
    full = ebpf.device_program([R("c", 1, 3, "rwm", True)])
    part = ebpf.device_program([R("c", 1, 3, "rw", True)])
    assert len(part) == len(full) + 3


rule_st = st.builds(
    Rule,
    st.sampled_from(["a", "c", "b"]),
    st.sampled_from([WILDCARD, 1, 5, 136]),
    st.sampled_from([WILDCARD, 3, 5, 0]),
    st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm"]),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(rule_st, max_size=8))
def test_program_agrees_with_the_rule_model(rules):
    try:
        prog = ebpf.device_program(rules)
    except ConfigError:
        return  # hole-punching configurations are refused before any program exists
    for dtype in ("c", "b"):
        for major in (1, 5, 136, 7):
            for minor in (3, 5, 0, 9):
                for acc in ("r", "w", "m", "rw", "rwm"):
                    want = ebpf.allows(rules, dtype, major, minor, acc)
                    got = run_program(prog, dtype, major, minor, acc)
                    assert got == int(want), (rules, dtype, major, minor, acc)


# --- real kernel ---------------------------------------------------------------------------

def _is_cgroup2(path: str) -> bool:
    from pyoci.cgroups.common import CGROUP2_SUPER_MAGIC, fs_magic
    return fs_magic(path) == CGROUP2_SUPER_MAGIC


needs_cgroup2 = pytest.mark.skipif(
    os.geteuid() != 0 or not _is_cgroup2(UNIFIED),
    reason=f"needs root and a cgroup2 mount at {UNIFIED}")


@pytest.fixture
def test_cgroup():
    path = os.path.join(UNIFIED, f"pyoci-ebpf-{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    yield path
    from pyoci.cgroups.common import read_procs
    for pid in read_procs(path):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    from pyoci.cgroups.common import rmdir_tree
    rmdir_tree(path)


@needs_cgroup2
def test_deny_read_of_dev_null(test_cgroup):
    rules = [R("a", -1, -1, "rwm", True), R("c", 1, 3, "r", False)]
    ebpf.set_device_filter(test_cgroup, rules)
    res = access_in_cgroup(test_cgroup, [("open", "/dev/null", os.O_RDONLY),
                                         ("open", "/dev/null", os.O_WRONLY),
                                         ("open", "/dev/zero", os.O_RDONLY)])
    assert res == {f"open /dev/null {os.O_RDONLY}": "EPERM",
                   f"open /dev/null {os.O_WRONLY}": "ok",
                   f"open /dev/zero {os.O_RDONLY}": "ok"}
    # this (test) process is not in the cgroup and is unaffected
    os.close(os.open("/dev/null", os.O_RDONLY))


@needs_cgroup2
def test_deny_all_with_allow_list(test_cgroup):
    rules = [R("a", -1, -1, "rwm", False), R("c", 1, 3, "rwm", True)]
    ebpf.set_device_filter(test_cgroup, rules)
    res = access_in_cgroup(test_cgroup, [("open", "/dev/null", os.O_RDWR),
                                         ("open", "/dev/zero", os.O_RDONLY),
                                         ("open", "/dev/full", os.O_WRONLY)])
    assert list(res.values()) == ["ok", "EPERM", "EPERM"]


@needs_cgroup2
def test_wildcard_minor_and_major(test_cgroup):
    ebpf.set_device_filter(test_cgroup, [R("c", 1, WILDCARD, "r", True)])
    res = access_in_cgroup(test_cgroup, [("open", "/dev/null", os.O_RDONLY),
                                         ("open", "/dev/zero", os.O_RDONLY),
                                         ("open", "/dev/zero", os.O_WRONLY)])
    assert list(res.values()) == ["ok", "ok", "EPERM"]
    ebpf.set_device_filter(test_cgroup, [R("c", WILDCARD, 5, "rw", True)])
    res = access_in_cgroup(test_cgroup, [("open", "/dev/zero", os.O_RDWR),
                                         ("open", "/dev/null", os.O_RDONLY)])
    assert list(res.values()) == ["ok", "EPERM"]


@needs_cgroup2
def test_mknod_access(test_cgroup):
    d = tempfile.mkdtemp()
    try:
        node = os.path.join(d, "null")
        ebpf.set_device_filter(test_cgroup, [R("c", 1, 3, "rw", True)])
        res = access_in_cgroup(test_cgroup, [("mknod", node, os.makedev(1, 3))])
        assert list(res.values()) == ["EPERM"]
        ebpf.set_device_filter(test_cgroup, [R("c", WILDCARD, WILDCARD, "m", True)])
        res = access_in_cgroup(test_cgroup, [("mknod", node, os.makedev(1, 3))])
        assert list(res.values()) == ["ok"]
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


@needs_cgroup2
def test_update_replaces_only_pyocis_program(test_cgroup):
    # a foreign program (allow everything) attached by "someone else"
    foreign = ebpf.prog_load(ebpf.device_program([R("a", -1, -1, "rwm", True)]),
                             name="other_dev")
    fd = os.open(test_cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ebpf.prog_attach(fd, foreign)
    finally:
        os.close(fd)
        os.close(foreign)
    ebpf.set_device_filter(test_cgroup, [R("a", -1, -1, "rwm", False)])
    ebpf.set_device_filter(test_cgroup, [R("c", 1, 3, "rwm", True)])
    names = sorted(n for _, n in ebpf.attached_programs(test_cgroup))
    assert names == ["other_dev", "pyoci_dev"]
    res = access_in_cgroup(test_cgroup, [("open", "/dev/null", os.O_RDONLY),
                                         ("open", "/dev/zero", os.O_RDONLY)])
    assert list(res.values()) == ["ok", "EPERM"]
    ebpf.clear_device_filter(test_cgroup)
    assert [n for _, n in ebpf.attached_programs(test_cgroup)] == ["other_dev"]
