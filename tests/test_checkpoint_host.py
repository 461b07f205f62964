"""checkpoint/restore on this host: the RPC codec against CRIU's own rpc.proto bindings, the
command line, and, where CRIU cannot work (this host's kernel breaks CRIU 3.17's vdso
handling), both commands failing at once with CRIU's reason and leaving nothing behind.
Checkpoint/restore itself is tested in the full-kernel lane (tests/lane/test_checkpoint.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from support.harness import IS_ROOT

CRIU = shutil.which("criu") or "/usr/sbin/criu"
PYCRIU = "/usr/lib/python3/dist-packages/pycriu/rpc_pb2.py"


def _criu_check() -> tuple[int, str]:
    p = subprocess.run([CRIU, "check"], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "Error (" in line and "): " in line:
            return line.split("Error (", 1)[1].split("): ", 1)[1].strip()
    return text.strip().splitlines()[0]


def _criu_broken() -> bool:
    return IS_ROOT and os.path.exists(CRIU) and _criu_check()[0] != 0


needs_broken_criu = pytest.mark.skipif(
    not _criu_broken(), reason="needs root and a host where `criu check` fails (where CRIU "
                               "works, the lane's tests/lane/test_checkpoint.py cover it)")


# --- the codec ------------------------------------------------------------------------------

def _with_pycriu(code: str, stdin: bytes = b"") -> bytes:
    """Run code under Debian's python3 with CRIU's generated rpc_pb2 (package criu)."""
    if not os.path.exists(PYCRIU) or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs CRIU's python bindings (Debian package criu)")
    p = subprocess.run(["/usr/bin/python3", "-c",
                        "import sys; sys.path.insert(0, '/usr/lib/python3/dist-packages')\n"
                        "from pycriu import rpc_pb2 as rpc\n" + code],
                       input=stdin, capture_output=True)
    if p.returncode != 0 and b"ModuleNotFoundError" in p.stderr:
        pytest.skip("CRIU's python bindings need python3-protobuf")
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def test_request_encoding_is_criu_rpc():
    from pyoci import criu

    req = {"type": criu.REQ_RESTORE, "opts": {
        "images_dir_fd": 5, "work_dir_fd": 6, "pid": 1234, "log_level": 4,
        "log_file": "restore.log", "root": "/x/rootfs", "leave_running": True,
        "manage_cgroups": True, "manage_cgroups_mode": criu.CG_MODES["strict"],
        "ext_mnt": [{"key": "/a", "val": "/b"}, {"key": "/proc/kcore", "val": "/dev/null"}],
        "inherit_fd": [{"key": "pipe:[42]", "fd": 1}], "cg_root": [{"ctrl": "cpu",
                                                                      "path": "/c"}],
        "external": ["net[4026531840]:extRootNetNS"], "empty_ns": 0x40000000,
        "rst_sibling": True, "orphan_pts_master": True, "status_fd": -1}}
    out = _with_pycriu(
        "r = rpc.criu_req(); r.ParseFromString(sys.stdin.buffer.read())\n"
        "from google.protobuf.json_format import MessageToDict\n"
        "import json; print(json.dumps(MessageToDict(r, preserving_proto_field_name=True,"
        " use_integers_for_enums=True)))", criu.encode("criu_req", req))
    got = json.loads(out)
    assert got["type"] == criu.REQ_RESTORE
    o = got["opts"]
    assert (o["images_dir_fd"], o["work_dir_fd"], o["pid"], o["root"]) == (5, 6, 1234,
                                                                            "/x/rootfs")
    assert o["ext_mnt"] == req["opts"]["ext_mnt"]
    assert o["inherit_fd"] == req["opts"]["inherit_fd"]
    assert o["cg_root"] == req["opts"]["cg_root"]
    assert o["external"] == req["opts"]["external"]
    assert (o["manage_cgroups_mode"], o["empty_ns"], o["status_fd"]) == (5, 0x40000000, -1)
    assert o["leave_running"] and o["rst_sibling"] and o["orphan_pts_master"]


def test_reply_decoding_is_criu_rpc():
    from pyoci import criu

    data = _with_pycriu(
        "r = rpc.criu_resp(type=rpc.RESTORE, success=False, cr_errno=-2, cr_errmsg='no')\n"
        "r.restore.pid = 77\n"
        "n = rpc.criu_resp(type=rpc.NOTIFY, success=True)\n"
        "n.notify.script = 'post-restore'; n.notify.pid = 99\n"
        "a, b = r.SerializeToString(), n.SerializeToString()\n"
        "sys.stdout.buffer.write(len(a).to_bytes(4, 'big') + a + b)")
    n = int.from_bytes(data[:4], "big")
    r = criu.decode("criu_resp", data[4:4 + n])
    assert r == {"type": criu.REQ_RESTORE, "success": False, "cr_errno": -2,
                 "cr_errmsg": "no", "restore": {"pid": 77}}
    assert criu.decode("criu_resp", data[4 + n:]) == {
        "type": criu.REQ_NOTIFY, "success": True,
        "notify": {"script": "post-restore", "pid": 99}}


# --- the command line ---------------------------------------------------------------------

def test_checkpoint_refuses_created_container(pyoci, runc, bundle_factory, config):
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    for rt in (pyoci, runc):
        rt("create", "--bundle", b, "c1", check=True)
        r = rt("checkpoint", "c1")
        assert r.returncode == 1 and "checkpointed in created state" in r.stderr.lower(), r
    assert not os.path.exists(os.path.join(b, "checkpoint"))


def test_unknown_flag_and_missing_id(pyoci):
    r = pyoci("checkpoint", "--nope", "c1")
    assert r.returncode == 1 and "flag provided but not defined: --nope" in r.stderr
    r = pyoci("restore")
    assert r.returncode == 1 and "requires exactly 1 argument" in r.stderr


def test_restore_needs_a_checkpoint(pyoci, bundle_factory, config, tmp_path):
    b = bundle_factory(config)
    r = pyoci("restore", "-d", "--bundle", b, "--image-path", str(tmp_path / "none"), "c1")
    assert r.returncode == 1 and "descriptors.json" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(pyoci.root, "c1"))


# --- where CRIU cannot work ---------------------------------------------------------------

@needs_broken_criu
def test_checkpoint_fails_at_once_with_criu_reason(pyoci, runc, bundle_factory, config,
                                                   tmp_path):
    reason = _first_error(_criu_check()[1])
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    pyoci("run", "-d", "--bundle", b, "c1", check=True)
    before = pyoci.state("c1")
    img = tmp_path / "img"
    r = pyoci("checkpoint", "--image-path", str(img), "--leave-running", "c1")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"pyoci: checkpoint: CRIU cannot work on this host "
                                     f"(criu check): {reason}"], r.stderr
    assert not img.exists()                       # nothing left behind
    assert pyoci.state("c1") == before            # the container is untouched
    r = pyoci("checkpoint", "c1")                 # default image path: ./checkpoint
    assert r.returncode == 1 and not os.path.exists("checkpoint")
    # runc fails too (and leaves its image directory with a dump.log)
    runc("run", "-d", "--bundle", b, "r1", check=True)
    r = runc("checkpoint", "--image-path", str(tmp_path / "rimg"), "r1")
    assert r.returncode == 1


@needs_broken_criu
def test_restore_fails_at_once_with_criu_reason(pyoci, runc, bundle_factory, config,
                                                tmp_path):
    reason = _first_error(_criu_check()[1])
    config["process"]["args"] = ["sleep", "100"]
    config["linux"]["cgroupsPath"] = "/pyoci-restore-test"
    b = bundle_factory(config)
    img = tmp_path / "img"
    img.mkdir()
    (img / "descriptors.json").write_text('["/dev/null", "/dev/null", "/dev/null"]')
    r = pyoci("restore", "-d", "--bundle", b, "--image-path", str(img), "c1")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"pyoci: restore: CRIU cannot work on this host "
                                     f"(criu check): {reason}"], r.stderr
    assert sorted(os.listdir(img)) == ["descriptors.json"]
    assert not os.path.exists(os.path.join(pyoci.root, "c1"))
    assert not any(os.path.exists(f"/sys/fs/cgroup/{c}/pyoci-restore-test")
                   for c in ("pids", "memory", "cpu", "freezer", "unified"))
    assert pyoci("list", "-q").stdout == ""
    r = runc("restore", "-d", "--bundle", b, "--image-path", str(img), "r1")
    assert r.returncode == 1


# --- --lazy-pages, --page-server, --status-fd -----------------------------------------------

def test_lazy_and_page_server_encoding_is_criu_rpc():
    from pyoci import criu

    req = {"type": criu.REQ_DUMP, "opts": {"images_dir_fd": 5, "lazy_pages": True,
                                           "ps": {"address": "::1", "port": 27}}}
    feat = {"type": criu.REQ_FEATURE_CHECK, "opts": {"images_dir_fd": 3},
            "features": {"lazy_pages": True}}
    out = _with_pycriu(
        "from google.protobuf.json_format import MessageToDict\n"
        "import json\n"
        "data = sys.stdin.buffer.read(); n = int.from_bytes(data[:4], 'big')\n"
        "for d in (data[4:4 + n], data[4 + n:]):\n"
        "    r = rpc.criu_req(); r.ParseFromString(d)\n"
        "    print(json.dumps(MessageToDict(r, preserving_proto_field_name=True,"
        " use_integers_for_enums=True)))\n",
        len(criu.encode("criu_req", req)).to_bytes(4, "big") + criu.encode("criu_req", req)
        + criu.encode("criu_req", feat))
    dump, check = (json.loads(x) for x in out.splitlines())
    assert dump["opts"]["lazy_pages"] is True
    assert dump["opts"]["ps"] == {"address": "::1", "port": 27}
    assert check["type"] == criu.REQ_FEATURE_CHECK and check["features"] == {
        "lazy_pages": True}
    data = _with_pycriu(
        "r = rpc.criu_resp(type=rpc.FEATURE_CHECK, success=True)\n"
        "r.features.lazy_pages = False\n"
        "sys.stdout.buffer.write(r.SerializeToString())")
    assert criu.decode("criu_resp", data) == {"type": criu.REQ_FEATURE_CHECK,
                                              "success": True,
                                              "features": {"lazy_pages": False}}


@pytest.mark.parametrize("value,want", [
    ("127.0.0.1:27", ("127.0.0.1", 27)), ("[::1]:27", ("::1", 27)),
    ("host:+5", ("host", 5)), ("host:0", ("host", 0)),
    ("host:4294967323", ("host", 27)),              # Go's int32(portInt) wraps
    ("::1:27", "Use --page-server"), ("host", "Use --page-server"),
    ("host:", "Use --page-server"), (":27", "Use --page-server"),
    ("[::1]27", "Use --page-server"), ("host:27x", "Invalid port number"),
])
def test_page_server_parsed_as_runc(value, want):
    from pyoci import criu
    from pyoci.errors import UsageError

    if isinstance(want, tuple):
        assert criu.page_server(value) == {"address": want[0], "port": want[1]}
    else:
        with pytest.raises(UsageError, match=want):
            criu.page_server(value)


@pytest.mark.parametrize("value,want", [(None, -1), ("3", 3), ("0x10", 16), ("010", 8),
                                        ("-1", -1), ("x", None), ("", None)])
def test_status_fd_parsed_as_runc_int_flag(value, want):
    from pyoci import criu
    from pyoci.errors import UsageError

    if want is None:
        with pytest.raises(UsageError, match=f'invalid value "{value}" for flag -status-fd'):
            criu.status_fd(value)
    else:
        assert criu.status_fd(value) == want


def test_status_fd_must_be_open_and_writable():
    from pyoci import criu
    from pyoci.errors import UsageError

    r, w = os.pipe()
    try:
        criu._check_status_fd(w, "checkpoint")
        with pytest.raises(UsageError, match=f"invalid --status-fd argument {r}: not "
                                             "writable"):
            criu._check_status_fd(r, "checkpoint")
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(UsageError, match=f"invalid --status-fd argument {w}: bad file "
                                         "descriptor"):
        criu._check_status_fd(w, "checkpoint")


def test_lazy_flags_parse_errors_as_runc(pyoci, runc, bundle_factory, config, tmp_path):
    """A bad --page-server fails with runc's words, the container untouched, no image
    directory; a bad --status-fd is a flag error before anything."""
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    for rt, cid in ((pyoci, "c1"), (runc, "r1")):
        rt("run", "-d", "--bundle", b, cid, check=True)
        img = tmp_path / f"img-{rt.name}"
        r = rt("checkpoint", "--lazy-pages", "--page-server", "nocolon", "--image-path",
               str(img), cid)
        assert r.returncode == 1, r
        assert "Use --page-server ADDRESS:PORT to specify page server" in r.stderr, r.stderr
        r = rt("checkpoint", "--page-server", "h:port", "--image-path", str(img), cid)
        assert r.returncode == 1 and "Invalid port number" in r.stderr, r.stderr
        r = rt("checkpoint", "--status-fd", "x", cid)
        assert r.returncode == 1
        assert 'invalid value "x" for flag -status-fd: parse error' in \
            r.stderr.replace('\\"', '"'), r.stderr                  # runc logs it quoted
        # runc makes its --image-path before it parses --page-server; pyoci leaves nothing
        assert img.exists() if rt is runc else not img.exists()
        assert rt.state(cid)["status"] == "running"


@needs_broken_criu
def test_lazy_flags_accepted_and_fail_with_criu_reason(pyoci, runc, bundle_factory, config,
                                                       tmp_path):
    """Here CRIU cannot work: with the lazy flags both commands fail at once with CRIU's
    reason (criu check), nothing left behind; runc accepts the same flags and fails too."""
    reason = _first_error(_criu_check()[1])
    config["process"]["args"] = ["sleep", "100"]
    b = bundle_factory(config)
    pyoci("run", "-d", "--bundle", b, "c1", check=True)
    before = pyoci.state("c1")
    img = tmp_path / "img"
    r, w = os.pipe()
    try:
        res = pyoci("checkpoint", "--lazy-pages", "--page-server", "127.0.0.1:27",
                    "--status-fd", str(w), "--image-path", str(img), "c1", pass_fds=(w,))
    finally:
        os.close(w)
    try:
        os.set_blocking(r, False)
        assert os.read(r, 16) == b""                 # nothing on --status-fd, closed
    finally:
        os.close(r)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"pyoci: checkpoint: CRIU cannot work on this host "
                                       f"(criu check): {reason}"], res.stderr
    assert not img.exists() and pyoci.state("c1") == before
    (img).mkdir()
    (img / "descriptors.json").write_text('["/dev/null", "/dev/null", "/dev/null"]')
    res = pyoci("restore", "-d", "--lazy-pages", "--bundle", b, "--image-path", str(img),
                "c2")
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"pyoci: restore: CRIU cannot work on this host "
                                       f"(criu check): {reason}"], res.stderr
    assert sorted(os.listdir(img)) == ["descriptors.json"]
    assert pyoci("state", "c2").returncode == 1
    runc("run", "-d", "--bundle", b, "r1", check=True)
    res = runc("checkpoint", "--lazy-pages", "--page-server", "127.0.0.1:27",
               "--image-path", str(tmp_path / "rimg"), "r1")
    assert res.returncode == 1 and "flag provided but not defined" not in res.stderr
    res = runc("restore", "-d", "--lazy-pages", "--bundle", b, "--image-path", str(img), "r2")
    assert res.returncode == 1 and "flag provided but not defined" not in res.stderr


@needs_broken_criu
def test_lazy_feature_check_gives_criu_reason_and_leaves_nothing():
    """CRIU's lazy_pages feature check (RPC), as runc: no here, with CRIU's reason."""
    import glob
    import tempfile

    from pyoci import criu
    from pyoci.errors import SysError

    p = subprocess.run([CRIU, "check", "--feature", criu.LAZY_CHECK], capture_output=True,
                       text=True)
    reason = _first_error(p.stdout + p.stderr)
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "pyoci-criu-features-*")))
    with pytest.raises(SysError) as e:
        criu.check_lazy_pages(CRIU, "checkpoint")
    assert str(e.value) == (f"checkpoint: --lazy-pages: CRIU is missing features: LazyPages "
                            f"({reason})")
    assert set(glob.glob(os.path.join(tempfile.gettempdir(),
                                      "pyoci-criu-features-*"))) == before


def test_restore_takes_lazy_pages_only(pyoci, runc):
    """runc's restore has --lazy-pages but not the dump-side --page-server/--status-fd."""
    for flag in ("--page-server", "--status-fd"):
        for rt in (pyoci, runc):
            r = rt("restore", flag, "3", "zz")
            assert r.returncode == 1
            assert f"flag provided but not defined: -{flag.lstrip('-')}" in r.stderr \
                or f"flag provided but not defined: {flag}" in r.stderr, r.stderr
    r = pyoci("restore", "--lazy-pages", "--bundle", "/nonexistent", "zz")
    assert r.returncode == 1 and "flag provided but not defined" not in r.stderr
