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
