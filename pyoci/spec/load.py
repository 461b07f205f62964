"""Load a bundle's config.json: parse, validate against spec-schemas/, then the semantic checks
that must reject a config before anything is created."""

from __future__ import annotations

import os

from pyoci import TYPE_CHECKING, jsonio
from pyoci.errors import ConfigError, PyociError
from pyoci.spec.config import NAMESPACES

if TYPE_CHECKING:
    from typing import Any


def read_config(bundle: str) -> dict:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config.json: no such file in bundle {bundle}") from None
    except OSError as e:
        raise ConfigError(f"config.json: {e.strerror}") from None
    try:
        doc = jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config.json: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError("config.json: the document must be a JSON object")
    if _suspect(data):
        clean_strings(doc, members=_PASSED_ON)
    return doc


# The members whose strings pyoci hands to the kernel, to files or to other programs (runc
# passes them to system calls, which refuse a NUL byte). Annotations and members pyoci does
# not know are only stored: they may hold anything.
_PASSED_ON = ("ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks",
              "linux")


def _suspect(data: bytes | str) -> bool:
    """Whether the JSON text may hold a NUL or a lone surrogate (only as \\u escapes, or
    raw bytes ED A0..BF xx): most configs need no walk at all."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return b"\\u" in data or b"\xed" in data


def clean_strings(doc, members: tuple[str, ...] | None = None, prefix: str = "") -> None:
    """Every string (and key) of doc, or of its given top-level members: a lone surrogate
    (JSON "\\ud800", not valid UTF-8) becomes U+FFFD, as Go's decoder in runc makes it; a NUL
    byte is refused, naming the field (runc's system calls fail on it: EINVAL). Iterative:
    a config may nest 10,000 levels deep."""
    stack: list[tuple[Any, Any, str]]     # (container, key or index, the field's name)
    if isinstance(doc, dict):
        stack = [(doc, k, prefix + k) for k in doc if members is None or k in members]
    else:
        stack = [(doc, i, f"{prefix}[{i}]") for i in range(len(doc))]
    while stack:
        parent, key, where = stack.pop()
        v = parent[key]
        if isinstance(v, str):
            if "\0" in v:
                raise ConfigError(f"{where}: contains a NUL byte (\\x00)")
            if not v.isascii():
                parent[key] = _replace_surrogates(v)
        elif isinstance(v, dict):
            for k in list(v):
                name = k
                if "\0" in k:
                    raise ConfigError(f"{where}: the key {k!r} contains a NUL byte (\\x00)")
                if not k.isascii():
                    name = _replace_surrogates(k)
                    if name != k:
                        v[name] = v.pop(k)
                stack.append((v, name, f"{where}.{name}"))
        elif isinstance(v, list):
            stack.extend((v, i, f"{where}[{i}]") for i in range(len(v)))


def _replace_surrogates(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


def validate(doc: dict) -> None:
    """Schema validation (spec-schemas/), then pyoci's own semantic rules."""
    from pyoci.spec.validate import validate_config

    validate_config(doc)
    check_semantics(doc)


def check_semantics(doc: dict) -> None:
    proc = doc.get("process")
    if proc is not None:
        if not proc.get("args"):
            raise ConfigError("config.json: process.args: must have at least one entry")
        cwd = proc.get("cwd", "")
        if not cwd.startswith("/"):
            raise ConfigError(f"config.json: process.cwd: {cwd!r} is not an absolute path")
    linux = doc.get("linux") or {}
    seen = set()
    for i, ns in enumerate(linux.get("namespaces") or []):
        t = ns.get("type")
        if t not in NAMESPACES:
            raise ConfigError(f"config.json: linux.namespaces[{i}].type: unknown namespace {t!r}")
        if t in seen:
            raise ConfigError(f"config.json: linux.namespaces[{i}].type: duplicate namespace {t!r}")
        seen.add(t)
        p = ns.get("path")
        if p is not None and not os.path.isabs(p):
            raise ConfigError(f"config.json: linux.namespaces[{i}].path: {p!r} is not an "
                              "absolute path")
    if "user" in seen:
        if not any(ns.get("type") == "user" and ns.get("path") for ns in linux["namespaces"]):
            if not linux.get("uidMappings") or not linux.get("gidMappings"):
                raise ConfigError("config.json: linux.uidMappings: a new user namespace needs "
                                  "uidMappings and gidMappings")
    elif linux.get("uidMappings") or linux.get("gidMappings"):
        raise ConfigError("config.json: linux.uidMappings: mappings given without a user "
                          "namespace")
    if "timeOffsets" in linux and "time" not in seen:
        raise ConfigError("config.json: linux.timeOffsets: needs a time namespace")
    if linux.get("sysctl"):
        _check_sysctl(linux["sysctl"], seen)
    if "" in (doc.get("annotations") or {}):
        raise ConfigError("config.json: annotations: a key must not be empty")
    _check_weight_devices(linux)
    if doc.get("hostname") and "uts" not in seen:
        raise ConfigError("config.json: hostname: setting the hostname needs a uts namespace")
    if doc.get("domainname") and "uts" not in seen:
        raise ConfigError("config.json: domainname: setting the domainname needs a uts namespace")


def _check_weight_devices(linux: dict) -> None:
    """Each blockIO.weightDevice entry needs weight or leafWeight (config-linux.md)."""
    blkio = (linux.get("resources") or {}).get("blockIO") or {}
    for i, dev in enumerate(blkio.get("weightDevice") or []):
        if dev.get("weight") is None and dev.get("leafWeight") is None:
            raise ConfigError(f"config.json: linux.resources.blockIO.weightDevice[{i}]: "
                              "needs weight or leafWeight")


def _check_sysctl(sysctl: dict, ns: set) -> None:
    """Only namespaced sysctls are allowed, and only with their namespace (as runc)."""
    for key in sysctl:
        k = key.replace("/", ".")
        if not k or ".." in k or k.startswith("."):
            raise ConfigError(f"config.json: linux.sysctl: invalid key {key!r}")
        if k in ("kernel.hostname", "kernel.domainname"):
            need = "uts"
        elif k.startswith("net."):
            need = "network"
        elif k in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                   "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"
                   ) or k.startswith("fs.mqueue."):
            need = "ipc"
        else:
            raise ConfigError(f"config.json: linux.sysctl: {key} is not a namespaced sysctl")
        if need not in ns:
            raise ConfigError(f"config.json: linux.sysctl: {key} needs a {need} namespace")


def check_process(proc: object, linux: dict) -> None:
    """What a process must be, for create (config.json's process, after the schema) and
    exec (its --process file or the stored process with the command line's overrides):
    refused before anything is started, each error naming the field."""
    from pyoci.linux import process as procmod

    if not isinstance(proc, dict):
        raise ConfigError("process: must be an object")
    args = proc.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise ConfigError("process.args: must be a non-empty list of strings")
    env = proc.get("env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise ConfigError("process.env: must be a list of strings")
    cwd = proc.get("cwd")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError(f"process.cwd: {cwd!r} is not an absolute path")
    procmod.check(proc, linux.get("personality"))
    if proc.get("apparmorProfile"):
        from pyoci.linux import apparmor

        apparmor.check(proc["apparmorProfile"])
    if proc.get("selinuxLabel") or linux.get("mountLabel"):
        if not os.path.exists("/sys/fs/selinux/enforce"):
            raise PyociError("process.selinuxLabel: SELinux is not enabled on this host")


def namespaces(doc: dict) -> dict[str, str | None]:
    """{type: path or None} for linux.namespaces."""
    return {ns["type"]: ns.get("path") for ns in (doc.get("linux") or {}).get("namespaces") or []}
