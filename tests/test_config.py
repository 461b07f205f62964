"""pyoci.spec.config: config.json parsed once, after validation, into the records the rest
of pyoci reads. Every document the schema accepts parses, each record reads back what the
document says (or its default), and create and exec check a process with the same checks."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from pyoci.errors import PyociError
from pyoci.linux import namespaces
from pyoci.ops import create as create_op
from pyoci.ops import exec as exec_op
from pyoci.spec import config, load
from pyoci.spec.default import default_spec
from pyoci.spec.validate import validate_config
from test_schemas import configs


def test_an_empty_config_is_all_defaults():
    spec = config.parse({"ociVersion": "1.0.0"})
    assert spec.process is None and spec.root == config.Root()
    assert spec.mounts == [] and spec.hooks == config.Hooks() and spec.annotations == {}
    assert spec.linux == config.Linux()
    assert spec.linux.seccomp is None and spec.linux.namespace_paths() == {}


def test_the_default_spec_reads_back():
    doc = default_spec()
    spec = config.parse(doc)
    assert spec.raw is doc and spec.oci_version == doc["ociVersion"]
    p = spec.process
    assert p.args == doc["process"]["args"] and p.cwd == doc["process"]["cwd"]
    assert p.env == doc["process"]["env"] and p.terminal == doc["process"]["terminal"]
    assert p.capabilities.bounding == doc["process"]["capabilities"]["bounding"]
    assert [(r.type, r.soft, r.hard) for r in p.rlimits] == [
        (r["type"], r["soft"], r["hard"]) for r in doc["process"]["rlimits"]]
    assert p.no_new_privileges is True and p.user == config.User()
    assert [m.destination for m in spec.mounts] == [m["destination"] for m in doc["mounts"]]
    assert spec.linux.namespace_paths() == {n["type"]: None for n in doc["linux"]["namespaces"]}
    assert spec.linux.masked_paths == doc["linux"]["maskedPaths"]


def test_absent_and_given_values_differ_where_it_matters():
    proc = {"args": ["sh"], "cwd": "/", "capabilities": {}, "user": {"uid": 5},
            "execCPUAffinity": {"final": "0"}, "consoleSize": {"height": 2}}
    p = config.Process.parse(proc)
    assert p.capabilities == config.Capabilities()          # given, empty: drop them all
    assert config.Process.parse({"args": ["sh"]}).capabilities is None   # left alone
    assert p.user.uid == 5 and p.user.gid == 0 and p.user.umask is None
    assert p.exec_cpu_affinity == config.ExecCPUAffinity(initial="", final="0")
    assert p.console_size == config.ConsoleSize(2, 0)
    hook = config.Hook.parse({"path": "/bin/true", "env": []})
    assert hook.env == [] and config.Hook.parse({"path": "/x"}).env is None
    assert config.Hooks.parse(None).of("createRuntime") == []
    assert config.Linux.parse({"seccomp": {}, "personality": {}}).seccomp is None


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=configs)
def test_every_valid_config_parses(doc):
    validate_config(doc)
    spec = config.parse(doc)
    assert spec.raw is doc
    proc = doc.get("process")
    if proc is not None:
        assert spec.process.args == proc.get("args", [])
        assert len(spec.process.rlimits) == len(proc.get("rlimits") or [])
    assert [m.destination for m in spec.mounts] == [
        m["destination"] for m in doc.get("mounts", [])]
    for kind, name in config.HOOK_KINDS.items():
        assert len(getattr(spec.hooks, name)) == len((doc.get("hooks") or {}).get(kind) or [])
    linux = doc.get("linux") or {}
    assert [n.type for n in spec.linux.namespaces] == [
        n["type"] for n in linux.get("namespaces", [])]
    if linux.get("seccomp"):
        assert len(spec.linux.seccomp.syscalls) == len(linux["seccomp"].get("syscalls") or [])


def test_one_namespace_table():
    assert namespaces.PROC_NAME is config.NAMESPACES
    assert set(namespaces.FLAGS) == set(config.NAMESPACES)
    with pytest.raises(PyociError, match=r"linux\.namespaces\[0\]\.type: unknown namespace"):
        load.check_semantics({"ociVersion": "1.0.0", "linux": {"namespaces": [{"type": "x"}]}})


@pytest.mark.parametrize("bad, message", [
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}]},
     "process.rlimits[0]: RLIMIT_NOFILE soft limit 2 is greater than hard limit 1"),
    ({"capabilities": {"bounding": ["CAP_NOPE"]}},
     'process.capabilities.bounding: unknown capability "CAP_NOPE"'),
    ({"env": ["PATH=/bin", "NOEQUALS"]}, "process.env[1]: invalid environment variable"),
    ({"oomScoreAdj": 1001}, "process.oomScoreAdj: 1001 is not in -1000..1000"),
    ({"execCPUAffinity": {"final": "3-1"}}, "process.execCPUAffinity.final: invalid CPU range"),
])
def test_create_and_exec_refuse_a_process_alike(tmp_path, bad, message):
    """One process check (spec.load.check_process): create's for config.json's process, and
    exec's for its --process or the stored one with the command line's changes."""
    os.mkdir(tmp_path / "rootfs")
    proc = {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], **bad}
    doc = {"ociVersion": "1.3.0", "root": {"path": "rootfs"}, "process": proc,
           "linux": {"namespaces": [{"type": "mount"}]}}
    with pytest.raises(PyociError) as created:
        create_op.check_config(doc, str(tmp_path), create_op.CreateOptions(
            root=str(tmp_path / "state"), cid="c"))
    with pytest.raises(PyociError) as execd:
        exec_op.check_process(proc, doc, {})
    assert str(created.value) == str(execd.value)
    assert str(created.value).startswith(message)
