"""linux.seccomp: filters are loaded into forked children and checked against the kernel."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

import pytest

from pyoci.errors import ConfigError, PyociError, UnsupportedError
from pyoci.linux import seccomp
from pyoci.linux import syscalls
from pyoci.spec import config

from support import child

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

X86_64 = os.uname().machine == "x86_64"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# The syscalls Python needs to report a result through a pipe and exit.
ESSENTIAL = ["write", "exit_group", "exit", "rt_sigreturn", "rt_sigprocmask", "rt_sigaction",
             "brk", "mmap", "munmap", "mremap", "madvise", "futex", "close", "sigaltstack",
             "getpid", "gettid", "fstat", "newfstatat", "lseek", "ioctl"]


# --- helpers ------------------------------------------------------------------------------

def run_child(body) -> tuple[int, object]:
    """(wait status, body's return value or None) of body() run in a forked child that cannot
    dump core (a filter may kill it)."""
    return child.run_child(body, no_core=True)


def errno_of(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def raw_syscall(nr: int, *args: int) -> int:
    """errno of a raw syscall (0 on success)."""
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    return ctypes.get_errno() if r < 0 else 0


def socket_errno(family: int, type_: int) -> int:
    try:
        socket.socket(family, type_).close()
    except OSError as e:
        return e.errno
    return 0


def nr(name: str) -> int:
    n = seccomp.resolve_syscall(name)
    assert n is not None and n >= 0
    return n


def record(cfg: dict) -> config.Seccomp:
    """linux.seccomp as create hands it on: checked, then parsed into its record."""
    seccomp.check(cfg)
    return config.Seccomp.parse(cfg)


def load_in_child(cfg: dict):
    def body():
        syscalls.set_no_new_privs()
        return seccomp.load(record(cfg))
    return body


def allow_default(*rules: dict) -> dict:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules)}


def mkdir_errno(path: str) -> int:
    return errno_of(os.mkdir, path)


# --- actions ------------------------------------------------------------------------------

def test_errno_action_with_errno_ret(tmp_path):
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
                        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd), mkdir_errno(str(tmp_path / "d")), errno_of(os.getpid)

    status, (cwd, mk, pid) = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cwd == 42
    assert mk == errno.EPERM  # errnoRet defaults to EPERM
    assert pid == 0
    assert not (tmp_path / "d").exists()


def test_default_errno_with_allowlist(tmp_path):
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
           "syscalls": [{"names": ESSENTIAL + ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd), mkdir_errno(str(tmp_path / "d")), errno_of(os.getppid)

    status, (cwd, mk, ppid) = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (cwd, mk) == (0, errno.EACCES)
    assert ppid == 0  # getppid cannot fail; os.getppid returned a (bogus) value
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_KILL_PROCESS"])
def test_kill_actions_kill_with_sigsys(action):
    cfg = allow_default({"names": ["getcwd"], "action": action})

    def body():
        load_in_child(cfg)()
        os.getcwd()
        return "survived"

    status, value = run_child(body)
    assert value is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_process_kills_all_threads():
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS"})

    def body():
        load_in_child(cfg)()
        t = threading.Thread(target=os.getcwd)
        t.start()
        t.join()
        return "survived"

    status, value = run_child(body)
    assert value is None
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_kill_thread_kills_only_the_thread():
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_KILL_THREAD"})

    def body():
        load_in_child(cfg)()
        returned = []
        t = threading.Thread(target=lambda: returned.append(os.getcwd()))
        t.start()
        # A killed thread never finishes Python's join protocol: wait for the kernel to
        # remove its task instead (bounded only as a hang guard).
        for _ in range(6000):
            if not os.path.exists(f"/proc/self/task/{t.native_id}"):
                break
            time.sleep(0.01)
        return returned, os.path.exists(f"/proc/self/task/{t.native_id}")

    status, (returned, alive) = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0  # the process survived
    assert returned == [] and not alive  # the thread did not


def test_trap_delivers_sigsys(tmp_path):
    cfg = allow_default({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_TRAP"})

    def body():
        got = []
        signal.signal(signal.SIGSYS, lambda s, f: got.append(s))
        load_in_child(cfg)()
        mkdir_errno(str(tmp_path / "d"))  # the return value after a trap is unspecified
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # a bytecode boundary for the handler
        return got

    status, got = run_child(body)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == [signal.SIGSYS]
    assert not (tmp_path / "d").exists()  # not executed


def test_trace_without_tracer_gives_enosys():
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_TRACE", "errnoRet": 5})

    def body():
        load_in_child(cfg)()
        return raw_syscall(nr("getcwd"))

    status, e = run_child(body)
    assert e == errno.ENOSYS


def test_log_allows(tmp_path):
    cfg = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ESSENTIAL, "action": "SCMP_ACT_ALLOW"},
                        {"names": ["getcwd"], "action": "SCMP_ACT_LOG"}]}

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd), mkdir_errno(str(tmp_path / "d"))

    status, (cwd, mk) = run_child(body)
    assert (cwd, mk) == (0, errno.EPERM)


def test_rule_equal_to_default_is_skipped():
    # ERRNO(EPERM) rule == default: skipped (libseccomp would refuse); ERRNO(5) differs.
    cfg = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ESSENTIAL, "action": "SCMP_ACT_ALLOW"},
                        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
                        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]}

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd)

    status, e = run_child(body)
    assert e == 5


# --- arguments ----------------------------------------------------------------------------

def test_argument_filter_socket_af_inet_only():
    cfg = allow_default({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                         "errnoRet": errno.EAFNOSUPPORT,
                         "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"}]})

    def body():
        load_in_child(cfg)()
        return (socket_errno(socket.AF_INET, socket.SOCK_STREAM),
                socket_errno(socket.AF_UNIX, socket.SOCK_STREAM))

    status, (inet, unix) = run_child(body)
    assert (inet, unix) == (errno.EAFNOSUPPORT, 0)


def test_argument_filter_personality_query_only():
    cfg = allow_default({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]})

    def body():
        load_in_child(cfg)()
        return errno_of(syscalls.personality, 0xFFFFFFFF), errno_of(syscalls.personality, 0)

    status, (query, linux) = run_child(body)
    assert (query, linux) == (errno.EPERM, 0)


def test_argument_index_and_value_default_to_zero():
    """runc and crun take a missing index or value as 0 (upstream's schema requires them)."""
    cfg = allow_default({"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"op": "SCMP_CMP_EQ"}]})
    seccomp.check(cfg)

    def body():
        load_in_child(cfg)()
        return errno_of(syscalls.personality, 0), errno_of(syscalls.personality, 0xFFFFFFFF)

    status, (zero, query) = run_child(body)
    assert (zero, query) == (errno.EPERM, 0)


def test_conditions_on_different_args_are_anded():
    cfg = allow_default({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                                  {"index": 1, "value": 0xF, "valueTwo": socket.SOCK_DGRAM,
                                   "op": "SCMP_CMP_MASKED_EQ"}]})

    def body():
        load_in_child(cfg)()
        return (socket_errno(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC),
                socket_errno(socket.AF_INET, socket.SOCK_STREAM),
                socket_errno(socket.AF_UNIX, socket.SOCK_DGRAM))

    status, got = run_child(body)
    assert got == [errno.EPERM, 0, 0]


def test_several_conditions_on_one_arg_become_separate_rules():
    # libseccomp refuses two conditions on arg 0 in one rule; like runc, each becomes its own
    # rule, so the rule matches when any of them does.
    cfg = allow_default({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                         "args": [{"index": 0, "value": socket.AF_INET, "op": "SCMP_CMP_EQ"},
                                  {"index": 0, "value": socket.AF_INET6, "op": "SCMP_CMP_EQ"}]})
    assert seccomp._rule_conditions(record(cfg).syscalls[0].args) == [
        [(0, 4, socket.AF_INET, 0)], [(0, 4, socket.AF_INET6, 0)]]

    def body():
        load_in_child(cfg)()
        return (socket_errno(socket.AF_INET, socket.SOCK_STREAM),
                socket_errno(socket.AF_INET6, socket.SOCK_STREAM),
                socket_errno(socket.AF_UNIX, socket.SOCK_STREAM))

    status, got = run_child(body)
    assert got[0] == errno.EPERM
    assert got[1] == errno.EPERM
    assert got[2] == 0


@pytest.mark.parametrize("op,value,blocked,allowed", [
    ("SCMP_CMP_NE", 1, 2, 1),
    ("SCMP_CMP_LT", 2, 1, 2),
    ("SCMP_CMP_LE", 2, 2, 3),
    ("SCMP_CMP_GE", 2, 2, 1),
    ("SCMP_CMP_GT", 2, 3, 2),
])
def test_comparison_operators(op, value, blocked, allowed):
    # umask(2) takes any value and cannot fail, so it probes the comparison cleanly.
    cfg = allow_default({"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
                         "args": [{"index": 0, "value": value, "op": op}]})

    def body():
        load_in_child(cfg)()
        return raw_syscall(nr("umask"), blocked), raw_syscall(nr("umask"), allowed)

    status, got = run_child(body)
    assert got == [77, 0]


# --- names, architectures, the -ENOSYS stub -----------------------------------------------

def test_unknown_syscall_is_skipped():
    cfg = allow_default({"names": ["pyoci_no_such_syscall", "getcwd"],
                         "action": "SCMP_ACT_ERRNO"})
    seccomp.check(cfg)
    assert seccomp.resolve_syscall("pyoci_no_such_syscall") is None

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd)

    status, e = run_child(body)
    assert e == errno.EPERM


@pytest.mark.skipif(not X86_64, reason="x86_64 architecture list")
def test_architectures_and_enosys_stub(tmp_path):
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
           "syscalls": [{"names": ESSENTIAL + ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}
    top = max(nr(n) for n in cfg["syscalls"][0]["names"])
    stub = seccomp.enosys_stub(record(cfg))
    assert stub and len(stub) % 8 == 0

    def body():
        load_in_child(cfg)()
        return (errno_of(os.getcwd), mkdir_errno(str(tmp_path / "d")),
                raw_syscall(top + 1), raw_syscall(999))

    status, got = run_child(body)
    # Allowed works; known but unlisted gets the default errno; beyond the profile's
    # largest syscall: ENOSYS (runc's patchbpf), so libc can fall back.
    assert got == [0, errno.EACCES, errno.ENOSYS, errno.ENOSYS]


def test_no_stub_without_architectures_or_with_allow_default():
    cfg = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}
    assert seccomp.enosys_stub(record(cfg)) == b""
    cfg["architectures"] = ["SCMP_ARCH_X86_64"] if X86_64 else []
    cfg["defaultAction"] = "SCMP_ACT_ALLOW"
    cfg["syscalls"][0]["action"] = "SCMP_ACT_ERRNO"
    assert seccomp.enosys_stub(record(cfg)) == b""


@pytest.mark.skipif(not X86_64, reason="x86_64 architecture list")
def test_default_errno_without_stub_returns_default_errno():
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
           "syscalls": [{"names": ESSENTIAL, "action": "SCMP_ACT_ALLOW"}]}

    def body():
        load_in_child(cfg)()
        return raw_syscall(999)

    status, e = run_child(body)
    assert e == errno.EACCES


def test_long_profile(tmp_path):
    # > 32 rules switches libseccomp to its binary-tree layout (as runc); behaviour is equal.
    extra = ["getcwd", "getuid", "getgid", "geteuid", "getegid", "uname", "umask", "getpgrp",
             "getppid", "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "openat", "read"]
    names = ESSENTIAL + extra
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EACCES,
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
           if X86_64 else [],
           "syscalls": [{"names": [n], "action": "SCMP_ACT_ALLOW"} for n in names]}
    assert len(cfg["syscalls"]) > 32

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd), mkdir_errno(str(tmp_path / "d")), errno_of(os.uname)

    status, got = run_child(body)
    assert got == [0, errno.EACCES, 0]


def test_pseudo_syscalls_of_other_architectures_build():
    # socketcall/ipc do not exist on every architecture: libseccomp gives them negative
    # pseudo numbers; they are rules like any other (as runc), not unknown names.
    arch = ["SCMP_ARCH_X86"] if X86_64 else []
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "architectures": arch,
           "syscalls": [{"names": ["socketcall", "ipc", "getcwd"], "action": "SCMP_ACT_ALLOW"}]}
    program, flags = seccomp.build(record(cfg))
    assert program and len(program) % 8 == 0 and flags == 0


def test_install_imports_nothing():
    # install() runs after pivot_root, where the host's Python modules are out of reach.
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9})

    def body():
        program, flags = seccomp.build(record(cfg))
        before = set(sys.modules)
        syscalls.set_no_new_privs()
        fd = seccomp.install(program, flags)
        return sorted(set(sys.modules) - before), fd, errno_of(os.getcwd)

    status, (new, fd, e) = run_child(body)
    assert (new, fd, e) == ([], None, 9)


def test_install_needs_no_new_privs_or_cap_sys_admin():
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"})
    program, flags = seccomp.build(record(cfg))

    def body():
        # Drop CAP_SYS_ADMIN from the effective set (capset v3 header + 2 data words).
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        assert _libc.capget(hdr, data) == 0
        data[0] &= ~(1 << 21)  # CAP_SYS_ADMIN
        assert _libc.capset(hdr, data) == 0
        try:
            seccomp.install(program, flags)
        except PyociError as e:
            return str(e), errno_of(os.getcwd)
        return "loaded", errno_of(os.getcwd)

    status, (msg, e) = run_child(body)
    assert "no_new_privs" in msg and e == 0


def test_architecture_of_other_endianness_is_refused():
    other = "SCMP_ARCH_S390X" if sys.byteorder == "little" else "SCMP_ARCH_X86_64"
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [other]}
    with pytest.raises(UnsupportedError, match=r"linux\.seccomp\.architectures\[0\]"):
        seccomp.build(record(cfg))  # nothing is loaded: build only


# --- flags --------------------------------------------------------------------------------

def test_filter_flags():
    cfg = {"defaultAction": "SCMP_ACT_ALLOW",
           "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                     "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}
    assert seccomp.filter_flags(record(cfg)) == (seccomp.SECCOMP_FILTER_FLAG_LOG
                                                 | seccomp.SECCOMP_FILTER_FLAG_SPEC_ALLOW)
    cfg["listenerPath"] = "/x"
    cfg["flags"].append("SECCOMP_FILTER_FLAG_TSYNC")
    cfg["syscalls"] = [{"names": ["getcwd"], "action": "SCMP_ACT_NOTIFY"}]
    assert seccomp.filter_flags(record(cfg)) == 0x3F  # + NEW_LISTENER, TSYNC_ESRCH, WAIT_KILLABLE


@pytest.mark.parametrize("flag", ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                  "SECCOMP_FILTER_FLAG_TSYNC"])
def test_flags_load(flag):
    if not seccomp.flag_supported(seccomp.FLAGS[flag]):
        pytest.skip(f"kernel lacks {flag}")
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"})
    cfg["flags"] = [flag]

    def body():
        load_in_child(cfg)()
        return errno_of(os.getcwd)

    status, e = run_child(body)
    assert e == errno.EPERM


@pytest.mark.parametrize("tsync", [True, False])
def test_tsync_applies_filter_to_other_threads(tsync):
    cfg = allow_default({"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"})
    if tsync:
        cfg["flags"] = ["SECCOMP_FILTER_FLAG_TSYNC"]

    def body():
        go = threading.Event()
        out = []
        t = threading.Thread(target=lambda: (go.wait(), out.append(errno_of(os.getcwd))))
        t.start()
        load_in_child(cfg)()
        go.set()
        t.join()
        return out[0], errno_of(os.getcwd)

    status, (thread, main) = run_child(body)
    assert main == errno.EPERM
    assert thread == (errno.EPERM if tsync else 0)


# --- notify -------------------------------------------------------------------------------

NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF = struct.Struct("=QIIiIQ6Q")
NOTIF_RESP = struct.Struct("=QqiI")


def notif_receive(fd: int) -> tuple[int, int, int]:
    """One notification from a listener fd: (id, pid, syscall nr); guards against a hang."""
    assert select.select([fd], [], [], 60)[0], "no seccomp notification"
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(fd, NOTIF_RECV, buf)
    nid, pid, _flags, sysnr, *_ = NOTIF.unpack(buf)
    return nid, pid, sysnr


def notif_respond(fd: int, nid: int, val: int = 0, error: int = 0) -> None:
    fcntl.ioctl(fd, NOTIF_SEND, bytearray(NOTIF_RESP.pack(nid, val, error, 0)))


@pytest.fixture
def agent_socket(tmp_path):
    path = str(tmp_path / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(60)
    yield path, srv
    srv.close()


@pytest.mark.parametrize("flags", [[], ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                                   ["SECCOMP_FILTER_FLAG_TSYNC"]])
def test_notify_listener_gets_state_and_answers(agent_socket, tmp_path, flags):
    path, srv = agent_socket
    if flags and not seccomp.flag_supported(seccomp.filter_flags(config.Seccomp.parse(
            {"flags": flags, "syscalls": [{"action": "SCMP_ACT_NOTIFY"}]}))):
        pytest.skip(f"kernel lacks {flags[0]} with a listener")
    cfg = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": path,
           "listenerMetadata": "MKNOD=/dev/null", "flags": flags,
           "syscalls": [{"names": ["getppid", "mkdir", "mkdirat"],
                         "action": "SCMP_ACT_NOTIFY"}]}
    seccomp.check(cfg)

    def body():
        sock = seccomp.connect_listener(path)
        syscalls.set_no_new_privs()
        fd = seccomp.load(record(cfg))
        state = {"ociVersion": "1.3.0", "id": "c1", "status": "creating",
                 "pid": os.getpid(), "bundle": "/b"}
        seccomp.send_listener(sock, fd, state, cfg["listenerMetadata"])
        os.close(fd)
        return os.getpid(), os.getppid(), mkdir_errno(str(tmp_path / "d"))

    result: dict = {}

    def agent():
        conn, _ = srv.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            while chunk := conn.recv(65536):
                msg += chunk
        result["state"] = json.loads(msg)
        result["nfds"] = len(fds)
        nfd = fds[0]
        try:
            for _ in range(2):
                nid, pid, sysnr = notif_receive(nfd)
                result.setdefault("pids", []).append(pid)
                if sysnr == nr("getppid"):
                    notif_respond(nfd, nid, val=4242)
                else:
                    result["mkdir"] = sysnr
                    notif_respond(nfd, nid, error=-errno.EROFS)
        finally:
            for fd in fds:
                os.close(fd)

    t = threading.Thread(target=agent, daemon=True)
    t.start()
    status, (cpid, ppid, mk) = run_child(body)
    t.join(60)
    assert not t.is_alive()
    assert os.waitstatus_to_exitcode(status) == 0
    assert ppid == 4242 and mk == errno.EROFS
    assert not (tmp_path / "d").exists()
    st = result["state"]
    assert result["nfds"] == 1
    assert st["ociVersion"] and st["fds"] == ["seccompFd"]
    assert st["pid"] == cpid and st["metadata"] == "MKNOD=/dev/null"
    assert st["state"]["id"] == "c1" and st["state"]["pid"] == cpid
    assert result["pids"] == [cpid, cpid]
    assert result["mkdir"] in (nr("mkdir"), nr("mkdirat"))


def test_load_without_notify_returns_none():
    def body():
        return load_in_child(allow_default())()

    status, value = run_child(body)
    assert value is None


def test_connect_listener_error_names_field(tmp_path):
    with pytest.raises(PyociError, match=r"linux\.seccomp\.listenerPath"):
        seccomp.connect_listener(str(tmp_path / "nobody-listens"))


def test_connect_listener_long_path(agent_socket, tmp_path):
    d = tmp_path / ("x" * 60) / ("y" * 60)
    d.mkdir(parents=True)
    path = str(d / "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dfd = os.open(str(d), os.O_PATH)
    try:
        srv.bind(f"/proc/self/fd/{dfd}/agent.sock")
        srv.listen(1)
        c = seccomp.connect_listener(path)
        c.close()
    finally:
        os.close(dfd)
        srv.close()


# --- check() ------------------------------------------------------------------------------

def base(**kw) -> dict:
    cfg = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}]}
    cfg.update(kw)
    return cfg


def rule(**kw) -> dict:
    r = {"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}
    r.update(kw)
    return base(syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, r])


@pytest.mark.parametrize("cfg,field", [
    (base(defaultAction="SCMP_ACT_FOO"), r"defaultAction: unknown action 'SCMP_ACT_FOO'"),
    (base(defaultAction="SCMP_ACT_NOTIFY", listenerPath="/x"), r"defaultAction"),
    (base(defaultAction="SCMP_ACT_ALLOW", defaultErrnoRet=1), r"defaultErrnoRet"),
    (base(defaultErrnoRet=-1), r"defaultErrnoRet"),
    (base(architectures=["SCMP_ARCH_Z80"]), r"architectures\[0\]: unknown architecture"),
    (base(flags=["SECCOMP_FILTER_FLAG_NOPE"]), r"flags\[0\]: unknown flag"),
    (base(listenerMetadata="m"), r"listenerMetadata"),
    (rule(action="SCMP_ACT_FOO"), r"syscalls\[1\]\.action: unknown action 'SCMP_ACT_FOO'"),
    (rule(action="SCMP_ACT_NOTIFY"), r"syscalls\[1\]\.action: SCMP_ACT_NOTIFY needs"),
    (rule(action="SCMP_ACT_KILL", errnoRet=1), r"syscalls\[1\]\.errnoRet"),
    (rule(names=[]), r"syscalls\[1\]\.names"),
    (rule(names=["getcwd", ""]), r"syscalls\[1\]\.names\[1\]"),
    (rule(args=[{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]),
     r"syscalls\[1\]\.args\[0\]\.index"),
    (rule(args=[{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]),
     r"syscalls\[1\]\.args\[0\]\.value"),
    (rule(args=[{"index": 0, "value": 0, "valueTwo": 1 << 64, "op": "SCMP_CMP_EQ"}]),
     r"syscalls\[1\]\.args\[0\]\.valueTwo"),
    (rule(args=[{"index": 0, "value": 0, "op": "SCMP_CMP_FOO"}]),
     r"syscalls\[1\]\.args\[0\]\.op: unknown operator"),
    (base(syscalls=[{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}], listenerPath="/x"),
     r"syscalls\[0\]\.names\[0\]"),
])
def test_check_rejects(cfg, field):
    with pytest.raises(ConfigError, match=r"^linux\.seccomp\." + field):
        seccomp.check(cfg)


def test_check_accepts_full_config():
    cfg = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
           "architectures": list(seccomp.ARCHITECTURES), "flags": list(seccomp.FLAGS),
           "listenerPath": "/run/agent.sock", "listenerMetadata": "x",
           "syscalls": [{"names": ["getcwd", "not_a_syscall"], "action": a}
                        for a in seccomp.ACTIONS]
           + [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
               "args": [{"index": 0, "value": 2, "op": op, "valueTwo": 3}]}
              for op in seccomp.OPERATORS]}
    seccomp.check(cfg)


def test_check_does_not_import_libseccomp():
    import subprocess
    code = ("import sys; from pyoci.linux import seccomp; "
            "seccomp.check({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': "
            "[{'names': ['getcwd'], 'action': 'SCMP_ACT_ERRNO'}]}); "
            "print('seccomp' in sys.modules or 'pyseccomp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
