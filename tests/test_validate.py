"""pyoci.spec.validate: one-line messages naming the JSON path, the ociVersion range, the
generated fast path (current, jsonschema-free, same verdicts as jsonschema) and its generator."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyoci.errors import ConfigError
from pyoci.spec import _compiled_schemas, _compiled_validator
from pyoci.spec.validate import (
    json_path,
    oci_version_supported,
    schema_error,
    validate_config,
    validate_features,
    validate_state,
)
from support.rootfs import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(REPO, "scripts", "gen-validator.py")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_validator", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(**overrides) -> dict:
    doc = base_config(["sh"])
    doc.update(overrides)
    return doc


def config_error(doc) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(doc)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- the generated modules ------------------------------------------------------------------


def test_generated_modules_match_the_schemas():
    gen = load_generator()
    expected = gen.generate(gen.load_schemas(os.path.join(REPO, "spec-schemas")))
    for name, text in expected.items():
        with open(os.path.join(REPO, "pyoci", "spec", name), encoding="utf-8") as f:
            assert f.read() == text, f"pyoci/spec/{name} is stale: run scripts/gen-validator.py"


def test_embedded_schemas_are_the_schema_files():
    gen = load_generator()
    assert _compiled_schemas.SCHEMAS == gen.load_schemas(os.path.join(REPO, "spec-schemas"))
    assert _compiled_validator.SCHEMAS_SHA256 == _compiled_schemas.SCHEMAS_SHA256


def test_check_mode_reports_current_files():
    r = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


FAST_PATH_PROBE = """
import json, sys
from pyoci.spec.validate import validate_config
doc = json.loads(sys.argv[1])
try:
    validate_config(doc)
    print("valid", "jsonschema" in sys.modules, "referencing" in sys.modules)
except Exception as e:
    print("invalid", "jsonschema" in sys.modules, "referencing" in sys.modules)
"""


@pytest.mark.parametrize(
    "doc, verdict, loads_jsonschema",
    [
        (config(), "valid", False),
        (config(ociVersion="1.0"), "invalid", True),
    ],
    ids=["valid-config", "broken-config"],
)
def test_jsonschema_is_imported_only_to_explain_a_failure(doc, verdict, loads_jsonschema):
    r = subprocess.run(
        [sys.executable, "-c", FAST_PATH_PROBE, json.dumps(doc)],
        capture_output=True, text=True, check=True,
    )
    assert r.stdout.split() == [verdict, str(loads_jsonschema), str(loads_jsonschema)]


# ---- messages -------------------------------------------------------------------------------


def test_valid_configs_pass():
    validate_config(config())
    validate_config({"ociVersion": "1.0.0", "root": {"path": "rootfs"}})


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            config(process={"cwd": "/", "args": []}),
            "config.json: process.args: [] should be non-empty",
        ),
        ({"root": {"path": "rootfs"}}, "config.json: 'ociVersion' is a required property"),
        ([], "config.json: [] is not of type 'object'"),
        (config(root={}), "config.json: root: 'path' is a required property"),
        (config(process={"args": ["sh"]}), "config.json: process: 'cwd' is a required property"),
        (
            config(mounts=[{"destination": "/proc"}, {"destination": "/x", "options": "ro"}]),
            "config.json: mounts[1].options: 'ro' is not of type 'array'",
        ),
        (
            config(annotations={"org.example.key": 7}),
            'config.json: annotations["org.example.key"]: 7 is not of type \'string\'',
        ),
        (
            config(hooks={"poststop": [{"path": "/bin/true", "timeout": 0}]}),
            "config.json: hooks.poststop[0].timeout: 0 is less than the minimum of 1",
        ),
        (
            config(linux={"uidMappings": [{"containerID": 0, "hostID": 4294967296, "size": 1}]}),
            "config.json: linux.uidMappings[0].hostID: 4294967296 is greater than the maximum of 4294967295",
        ),
        (
            config(linux={"resources": {"memory": {"limit": 1.0}}}),
            "config.json: linux.resources.memory.limit: 1.0 is not of type 'integer'",
        ),
        (
            config(linux={"resources": {"cpu": {"shares": True}}}),
            "config.json: linux.resources.cpu.shares: True is not of type 'integer'",
        ),
    ],
)
def test_message_names_path_and_rule(doc, message):
    assert config_error(doc) == message


def test_enum_message_lists_the_choices():
    doc = config(linux={"namespaces": [{"type": "pid"}, {"type": "bogus"}]})
    assert config_error(doc) == (
        "config.json: linux.namespaces[1].type: 'bogus' is not one of "
        "['cgroup', 'ipc', 'mount', 'network', 'pid', 'time', 'user', 'uts']"
    )
    doc = config(linux={"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_FOO"}]}})
    assert config_error(doc).startswith(
        "config.json: linux.seccomp.syscalls[0].action: 'SCMP_ACT_FOO' is not one of ['SCMP_ACT_ALLOW'"
    )


def test_huge_instance_is_shortened_to_one_short_line():
    doc = config(linux={"sysctl": {"kernel.shmmax": {"k": list(range(10000)), "s": "x\ny" * 500}}})
    message = config_error(doc)
    assert message.startswith('config.json: linux.sysctl["kernel.shmmax"]: {')
    assert message.endswith(" is not of type 'string'")
    assert len(message) < 400


# ---- ociVersion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0", "1.3.0-rc.1", "1.3.12-rc.1+git.abc"]
)
def test_supported_versions_are_accepted(version):
    validate_config(config(ociVersion=version))
    assert oci_version_supported(version)


@pytest.mark.parametrize("version", ["0.5.0-dev", "0.9.9", "1.4.0", "2.0.0", "1.10.0"])
def test_unsupported_versions_are_rejected(version):
    assert not oci_version_supported(version)
    assert config_error(config(ociVersion=version)) == (
        f"config.json: ociVersion: {version!r} is not supported (pyoci runs 1.0.0 to 1.3.x)"
    )


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0+", "", "latest"])
def test_non_semver_versions_are_schema_errors(version):
    assert config_error(config(ociVersion=version)).startswith(
        f"config.json: ociVersion: {version!r} does not match "
    )


# ---- state and features ---------------------------------------------------------------------


def test_state_documents():
    state = {"ociVersion": "1.3.0", "id": "c1", "status": "running", "pid": 42, "bundle": "/b"}
    validate_state(state)
    with pytest.raises(ConfigError) as info:
        validate_state(dict(state, status="paused"))
    assert str(info.value).startswith("state: status: 'paused' is not one of ['creating'")
    with pytest.raises(ConfigError) as info:
        validate_state(dict(state, pid=-1))
    assert str(info.value) == "state: pid: -1 is less than the minimum of 0"


def test_features_documents():
    features = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.3.0",
                "linux": {"namespaces": ["pid", "time"], "capabilities": ["CAP_CHOWN"]}}
    validate_features(features)
    with pytest.raises(ConfigError) as info:
        validate_features({"ociVersionMin": "1.0.0"})
    assert str(info.value) == "features: 'ociVersionMax' is a required property"
    with pytest.raises(ConfigError) as info:
        validate_features(dict(features, linux={"capabilities": ["chown"]}))
    assert str(info.value) == "features: linux.capabilities[0]: 'chown' does not match '^CAP_[A-Z_]+$'"


def test_schema_error_is_none_for_valid_documents():
    assert schema_error("config", config()) is None
    assert schema_error("config", config(ociVersion="x")).startswith("ociVersion: 'x' does not match")


@pytest.mark.parametrize(
    "parts, text",
    [
        ((), ""),
        (("process", "args", 0), "process.args[0]"),
        (("linux", "sysctl", "net.ipv4.ip_forward"), 'linux.sysctl["net.ipv4.ip_forward"]'),
        (("annotations", 'a"b'), 'annotations["a\\"b"]'),
        ((3, "x"), "[3].x"),
    ],
)
def test_json_path(parts, text):
    assert json_path(parts) == text


# ---- the generator on schemas the project does not (yet) use --------------------------------


def compile_schema(schema: dict):
    text = load_generator().generate({"s.json": schema}, roots={"doc": "s.json"})
    namespace: dict = {}
    exec(compile(text["_compiled_validator.py"], "<generated>", "exec"), namespace)
    return namespace["is_valid_doc"]


@pytest.mark.parametrize("keyword", [{"format": "uri"}, {"uniqueItems": True}, {"const": 1}, {"type": "number"}])
def test_generator_refuses_keywords_it_cannot_compile(keyword):
    with pytest.raises(ValueError):
        compile_schema({"type": "object", "properties": {"a": keyword}})


EXOTIC = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["a"],
    "properties": {
        "a": {"anyOf": [{"type": "integer", "minimum": 3}, {"type": "string", "pattern": "^z"}]},
        "b": {"not": {"type": "boolean"}, "enum": ["x", "y"]},
        "c": {"minimum": -1, "maximum": 5, "minLength": 2, "maxItems": 2, "items": {"type": "null"}},
        "d": {"type": ["array", "string"], "maxLength": 3, "minItems": 1},
    },
    "patternProperties": {"^p": {"type": "integer"}, "q$": {"type": "string"}},
    "additionalProperties": {"type": "array"},
    "definitions": {},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from([1.0, 2.5, -0.0])
    | st.text(alphabet="zxyp", max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "d", "p1", "xq", "pq", "e"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values)
def test_generated_code_agrees_with_jsonschema_on_exotic_keywords(doc):
    from jsonschema import Draft4Validator

    fast = compile_exotic()
    assert fast(doc) == Draft4Validator(EXOTIC).is_valid(doc)


_exotic_cache: list = []


def compile_exotic():
    if not _exotic_cache:
        _exotic_cache.append(compile_schema(EXOTIC))
    return _exotic_cache[0]
