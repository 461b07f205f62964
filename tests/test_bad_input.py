"""Bad input gets its cause, never "internal error" (issue 11, section 4): one line on stderr,
exit 1, nothing left behind, and a message naming the field and why. Each case went wrong
once in a different way (an exception's name, a broken internal message, a child running
on into pyoci's own code); the mechanisms are general: messages of any size between pyoci
and its children, JSON nested as deep as runc takes it, one walk over the config's strings
(NUL refused naming the field, lone surrogates made U+FFFD as Go does), process.env and hook
checks at create, a state directory the user may not read, a proc mount through a symlink."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from pyoci.linux import sock as unix


def refused(rt, bundle: str, cid: str = "bad", cmd: str = "create") -> str:
    """The one-line error of a failed create; nothing of the container is left."""
    r = rt(cmd, "-b", bundle, cid)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[:2000]
    assert "internal error" not in lines[0] and "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(rt.root, cid))
    assert rt("state", cid).returncode == 1
    return lines[0]


def write_raw(bundle: str, config: dict, extra: str) -> None:
    """config.json with a member given as raw JSON text (deeper than json.dump goes)."""
    text = json.dumps(config)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        f.write(text[:-1] + ', "x-extension": ' + extra + "}")


# --- nesting --------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1000, 5000, 10000])
def test_deep_nesting_in_an_unknown_member_is_accepted(pyoci, bundle_factory, config, depth):
    """runc (Go's encoding/json) takes up to 10,000 levels in a member it ignores."""
    config["process"]["args"] = ["true"]
    b = bundle_factory(config)
    write_raw(b, config, '{"a":' * depth + "{}" + "}" * depth)
    r = pyoci("create", "-b", b, "deep")
    try:
        assert r.returncode == 0, r.stderr
        assert pyoci.state("deep")["status"] == "created"
    finally:
        pyoci("delete", "--force", "deep")


def test_nesting_beyond_what_runc_takes_is_a_clear_error(pyoci, bundle_factory, config):
    b = bundle_factory(config)
    write_raw(b, config, "[" * 20000 + "]" * 20000)
    msg = refused(pyoci, b)
    assert "config.json: invalid JSON: exceeded max depth" in msg, msg


# --- size of the internal protocol ---------------------------------------------------------

@pytest.mark.parametrize("length", [30000, 70000, 200000])
def test_long_mount_destination_is_reported_whole(pyoci, bundle_factory, config, length):
    """The init's error quotes the destination: a message of any size crosses the socket
    (it was cut at 64 KiB: JSONDecodeError, or ConnectionResetError)."""
    dest = "/" + "a" * length
    config["mounts"].append({"destination": dest, "type": "tmpfs", "source": "tmpfs"})
    n = len(config["mounts"]) - 1
    msg = refused(pyoci, bundle_factory(config))
    assert msg.startswith(f"pyoci: mounts[{n}].destination: {dest}"), msg[:200]
    assert msg.endswith("File name too long"), msg[-200:]


def test_messages_of_any_size_with_fds():
    a, b = unix.socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        for size in (0, 1, unix._CHUNK - 1, unix._CHUNK, unix._CHUNK + 1, 300000):
            data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            pid = os.fork()
            if pid == 0:
                try:
                    unix.send_msg(a, data, [w])
                finally:
                    os._exit(0)
            got, fds = unix.recv_msg(b, 2)
            os.waitpid(pid, 0)
            assert got == data and len(fds) == 1
            os.close(fds[0])
        a.close()
        assert unix.recv_msg(b) == (b"", [])
    finally:
        b.close()
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("maxfds", [0, 2])
def test_last_words_of_a_peer_that_left_a_message_unread(maxfds):
    """A child that fails while a message of ours waits unread (the cgroup's go, bind
    sources) sends its error and exits: Linux reports ECONNRESET once before that error.
    create said only "Connection reset by peer" (seen with a hostile process.cwd)."""
    parent, child = unix.socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET)
    try:
        unix.send_msg(parent, b"go")              # never read
        unix.send_msg(child, b"process.cwd: the reason")
        child.close()
        assert unix.recv_msg(parent, maxfds) == (b"process.cwd: the reason", [])
        assert unix.recv_msg(parent, maxfds) == (b"", [])
    finally:
        parent.close()


# --- strings the kernel cannot take ------------------------------------------------------

def test_nul_in_cgroups_path_names_the_field(pyoci, bundle_factory, config):
    config["linux"]["cgroupsPath"] = "/x\u0000y"
    msg = refused(pyoci, bundle_factory(config))
    assert msg == "pyoci: linux.cgroupsPath: contains a NUL byte (\\x00)", msg


def test_nul_anywhere_passed_on_names_the_field(pyoci, bundle_factory, config):
    config["mounts"][1]["options"] = ["nosuid", "mode=7\u00005"]
    msg = refused(pyoci, bundle_factory(config))
    assert msg == "pyoci: mounts[1].options[1]: contains a NUL byte (\\x00)", msg


def test_nul_in_annotations_is_only_stored(pyoci, bundle_factory, config):
    """Annotations go nowhere but the state: runc keeps them as they are."""
    config["process"]["args"] = ["true"]
    config["annotations"] = {"k": "a\u0000b"}
    r = pyoci("create", "-b", bundle_factory(config), "ann")
    try:
        assert r.returncode == 0, r.stderr
        assert pyoci.state("ann")["annotations"] == {"k": "a\u0000b"}
    finally:
        pyoci("delete", "--force", "ann")


def test_lone_surrogate_is_replaced_as_runc_does(pyoci, runc, bundle_factory, config):
    """JSON "\\ud800" is no UTF-8 string: Go's decoder makes it U+FFFD, so runc looks for a
    root directory named that; pyoci too (it was a UnicodeEncodeError)."""
    config["root"]["path"] = "\ud800"
    b = bundle_factory(config)
    msg = refused(pyoci, b)
    assert msg == f"pyoci: config.json: root.path: {b}/\ufffd is not a directory", msg
    r = runc("create", "-b", b, "bad")
    assert r.returncode == 1 and f"{b}/\ufffd" in r.stderr, r.stderr


# --- process.env -------------------------------------------------------------------------------

@pytest.mark.parametrize("env, why", [
    (["A=\u0000"], "contains a NUL byte (\\x00)"),
    ([""], "invalid environment variable: ''"),
    (["NOVALUE"], "invalid environment variable: 'NOVALUE'"),
    (["=x"], "environment variable name can't be empty: '=x'"),
])
def test_bad_env_is_refused_at_create(pyoci, runc, bundle_factory, config, env, why):
    """runc refuses these too (its init fails): pyoci refused nothing, the init died and
    `start` said the container had stopped."""
    config["process"]["env"] = ["PATH=/bin"] + env
    b = bundle_factory(config)
    assert refused(pyoci, b) == f"pyoci: process.env[1]: {why}"
    assert runc("create", "-b", b, "bad").returncode == 1


def test_bad_env_is_refused_by_exec(pyoci, bundle_factory, config, tmp_path):
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    pidfile = tmp_path / "pid"
    assert pyoci("run", "-d", "-b", b, "--pid-file", str(pidfile), "e").returncode == 0
    try:
        r = pyoci("exec", "-e", "", "e", "true")          # after the config's entries
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("pyoci: process.env[") and r.stderr.endswith(
            "]: invalid environment variable: ''\n"), r.stderr
        proc = dict(config["process"], args=["true"], env=["A=\u0000"])
        (tmp_path / "p.json").write_text(json.dumps(proc))
        r = pyoci("exec", "--process", str(tmp_path / "p.json"), "e")
        assert r.returncode == 1 and r.stderr.strip() == \
            "pyoci: process.env[0]: contains a NUL byte (\\x00)", r.stderr
    finally:
        pyoci("delete", "--force", "e")


# --- hooks ---------------------------------------------------------------------------------------

def test_hook_with_empty_path_is_refused_before_anything(pyoci, bundle_factory, config,
                                                         tmp_path):
    mark = tmp_path / "ran"
    config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c",
                                                                       f"touch {mark}"]}],
                       "prestart": [{"path": ""}]}
    msg = refused(pyoci, bundle_factory(config))
    assert msg == "pyoci: hooks.prestart[0].path: must not be empty", msg
    assert not mark.exists()


def test_hook_that_cannot_be_executed_reports_one_line(pyoci, bundle_factory, config):
    """A hook whose execve raises something other than OSError (an empty argv[0]): its
    child reports it and exits; it never runs on into pyoci's own code."""
    config["hooks"] = {"prestart": [{"path": "/bin/true", "args": [""]}]}
    msg = refused(pyoci, bundle_factory(config))
    assert msg.startswith("pyoci: hooks.prestart[0]: /bin/true failed: exit status 127: "
                          "exec /bin/true:"), msg
    assert "pyoci:" not in msg[len("pyoci:"):], msg


# --- a user who is not root -----------------------------------------------------------------

@pytest.mark.parametrize("cmd", [["state", "x"], ["kill", "x"], ["delete", "x"],
                                 ["delete", "--force", "x"], ["list"], ["pause", "x"],
                                 ["kill", "--all", "x", "KILL"]])
def test_non_root_user_gets_a_clear_message(pyoci, cmd):
    os.makedirs(os.path.join(pyoci.root, "x"), exist_ok=True)
    with open(os.path.join(pyoci.root, "x", "state.json"), "w") as f:
        f.write("{}")
    os.chmod(pyoci.root, 0o700)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        *pyoci.argv(*cmd)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0], r.stderr
    assert "permission denied" in lines[0] and "run as root" in lines[0], lines[0]
    assert pyoci.root in lines[0]


# --- the rootfs -------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/etc", "dev", "/nonexistent"])
def test_proc_symlink_in_rootfs_is_named(pyoci, runc, bundle_factory, config, target):
    """A /proc that is a symlink in the rootfs is refused as what it is, at the proc mount
    (it was followed, and then reported as linux.readonlyPaths[0]: /proc/bus: ELOOP);
    runc refuses it too."""
    b = bundle_factory(config)
    proc = os.path.join(b, "rootfs", "proc")
    os.rmdir(proc)
    os.symlink(target, proc)
    n = next(i for i, m in enumerate(config["mounts"]) if m["destination"] == "/proc")
    msg = refused(pyoci, b)
    assert msg == (f"pyoci: mounts[{n}].destination: /proc is a symbolic link in the rootfs: "
                   "filesystem 'proc' must be mounted on an ordinary directory"), msg
    r = runc("create", "-b", b, "bad")
    assert r.returncode == 1 and "must be mounted on ordinary directory" in r.stderr


# --- the last resort ----------------------------------------------------------------------------

@pytest.mark.parametrize("cmd, msg", [
    (["list"], "pyoci: /dev/null: Not a directory"),
    (["state", "x"], "pyoci: container x: cannot read state.json: Not a directory"),
])
def test_an_unforeseen_os_error_is_named_not_internal(pyoci, cmd, msg):
    """What no check turned into a message of its own still says what and why (the file
    and the system's reason), not "internal error: NotADirectoryError"."""
    r = subprocess.run([pyoci.binary, "--root", "/dev/null", *cmd], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == msg, r.stderr


def test_describe_names_causes():
    from pyoci.cli import describe

    assert describe(ValueError("embedded null byte")).endswith("a string contains a NUL "
                                                               "byte (\\x00), which the "
                                                               "kernel cannot take")
    assert describe(RecursionError("x")) == "a value is nested too deeply to be handled"
    try:
        "\ud800".encode()
    except UnicodeError as e:
        assert describe(e).startswith("a string is not valid UTF-8")
    assert describe(KeyError("k")).startswith("internal error: KeyError")
