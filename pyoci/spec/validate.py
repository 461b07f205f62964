"""Validate config.json, state and features documents against the project's schemas
(spec-schemas/, OCI runtime-spec v1.3.0).

Fast path: the plain-Python checks generated from the schemas (_compiled_validator); this
module never imports jsonschema for a valid document. Slow path, only for a document that
fails: jsonschema (imported lazily) finds the JSON path and the rule that were broken, and the
ConfigError says both on one line, e.g.
    config.json: linux.namespaces[1].type: 'bogus' is not one of ['cgroup', 'ipc', ...]
"""

from __future__ import annotations

from pyoci.errors import ConfigError
from pyoci.spec import _compiled_validator as _fast

# ociVersion values pyoci runs: 1.0.0 up to any 1.3.x (pre-release and build suffixes allowed).
MIN_OCI_VERSION = (1, 0)
MAX_OCI_VERSION = (1, 3)
SUPPORTED_OCI_VERSIONS = "1.0.0 to 1.3.x"

_MAX_MESSAGE = 300


def validate_config(doc: dict) -> None:
    """Raise ConfigError naming the first violated rule unless doc is a valid config.json that
    declares an ociVersion pyoci supports."""
    if not _fast.is_valid_config(doc):
        _raise_schema_error("config.json", "config", doc)
    version = doc["ociVersion"]
    if not oci_version_supported(version):
        raise ConfigError(
            f"config.json: ociVersion: {version!r} is not supported "
            f"(pyoci runs {SUPPORTED_OCI_VERSIONS})"
        )


def validate_state(doc: dict) -> None:
    """Raise ConfigError unless doc is a valid container state document."""
    if not _fast.is_valid_state(doc):
        _raise_schema_error("state", "state", doc)


def validate_features(doc: dict) -> None:
    """Raise ConfigError unless doc is a valid runtime features document."""
    if not _fast.is_valid_features(doc):
        _raise_schema_error("features", "features", doc)


def oci_version_supported(version: str) -> bool:
    """True for a SemVer string from 1.0.0 up to 1.3.x (suffixes such as -rc.1 or +dev allowed)."""
    parts = version.split(".", 2)
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return False
    major_minor = (int(parts[0]), int(parts[1]))
    return MIN_OCI_VERSION <= major_minor <= MAX_OCI_VERSION


def schema_error(kind: str, doc: object) -> str | None:
    """The one-line description ("<json path>: <rule>") of the most relevant schema violation
    in doc, or None when doc matches spec-schemas/ for kind ("config", "state", "features").
    Uses jsonschema: slow, meant for documents that already failed the fast check."""
    from jsonschema.exceptions import best_match

    error = best_match(_schema_validator(kind).iter_errors(doc))
    if error is None:
        return None
    path = json_path(error.absolute_path)
    message = _one_line(error.message, error.instance)
    return f"{path}: {message}" if path else message


def json_path(parts) -> str:
    """Render a jsonschema path deque as process.args[0] / annotations["com.example.key"]."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part.isascii():
            out += f".{part}" if out else part
        else:
            import json

            out += f"[{json.dumps(part)}]"
    return out


def _raise_schema_error(label: str, kind: str, doc: object) -> None:
    detail = schema_error(kind, doc)
    if detail is None:
        # The generated checks and jsonschema disagree (tests guard against this); jsonschema
        # reads the schemas directly, so its verdict wins.
        return
    raise ConfigError(f"{label}: {detail}")


def _one_line(message: str, instance: object) -> str:
    """jsonschema messages start with repr(instance), which can be a whole subtree: shorten it."""
    if len(message) > _MAX_MESSAGE:
        full = repr(instance)
        if message.startswith(full):
            import reprlib

            short = reprlib.Repr()
            short.maxstring = short.maxother = 60
            short.maxdict = short.maxlist = 4
            short.maxlevel = 2
            message = short.repr(instance) + message[len(full):]
    return message.replace("\n", " ")


_validators: dict = {}


def _schema_validator(kind: str):
    """jsonschema Draft4Validator for spec-schemas/<root of kind>, built once per process."""
    if kind in _validators:
        return _validators[kind]
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    from pyoci.spec._compiled_schemas import ROOTS, SCHEMAS

    registry = Registry().with_resources(
        (name, Resource.from_contents(schema, default_specification=DRAFT4))
        for name, schema in SCHEMAS.items()
    )
    validator = _validators[kind] = Draft4Validator(SCHEMAS[ROOTS[kind]], registry=registry)
    return validator
