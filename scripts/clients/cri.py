"""A minimal CRI client (what crictl does, for the few calls the tests need), for hosts
without crictl: gRPC from python3-grpcio, the protobuf messages encoded by hand.

Run with the system python (python3-grpcio): python3 cri.py SOCKET CALL JSON_ARGS
prints a JSON result. Calls: runp, create, start, status, exec, update, stats, stop, rm, stopp, rmp.
"""

from __future__ import annotations

import json
import os
import sys

# the varints are pyoci's own (pyoci/pbwire.py: standard library only)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from pyoci.pbwire import read_varint, varint  # noqa: E402

SERVICE = "/runtime.v1.RuntimeService/"
NETWORK_NODE = 2  # NamespaceMode.NODE: the host's network namespace


# --- protobuf wire format ---------------------------------------------------------------

def f_int(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n) if n else b""


def f_bytes(field: int, data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def f_msg(field: int, *parts: bytes) -> bytes:
    return f_bytes(field, b"".join(parts))


def decode(data: bytes) -> dict[int, list]:
    """field number -> list of values (ints, or bytes for length-delimited fields)."""
    out: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, i = read_varint(data, i)
        elif wire == 2:
            n, i = read_varint(data, i)
            val, i = data[i:i + n], i + n
        elif wire == 1:
            val, i = int.from_bytes(data[i:i + 8], "little"), i + 8
        elif wire == 5:
            val, i = int.from_bytes(data[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(field, []).append(val)
    return out


def _signed32(n: int) -> int:
    n &= (1 << 32) - 1
    return n - (1 << 32) if n >= 1 << 31 else n


# --- messages -----------------------------------------------------------------------------

def sandbox_config(a: dict) -> bytes:
    """PodSandboxConfig: metadata, log_directory, linux.security_context with host
    network."""
    meta = f_msg(1, f_bytes(1, a["name"]), f_bytes(2, a.get("uid", a["name"])),
                 f_bytes(3, a.get("namespace", "default")))
    ns_opts = f_msg(1, f_int(1, NETWORK_NODE))
    linux = f_msg(8, f_bytes(1, a.get("cgroup_parent", "")) if a.get("cgroup_parent")
                  else b"", f_msg(2, ns_opts))
    # no hostname: a host-network pod has no UTS namespace of its own
    return meta + f_bytes(3, a["log_directory"]) + linux


def container_config(a: dict) -> bytes:
    meta = f_msg(1, f_bytes(1, a["name"]))
    image = f_msg(2, f_bytes(1, a["image"]))
    args = b"".join(f_bytes(3, c) for c in a.get("command", []))
    args += b"".join(f_bytes(4, c) for c in a.get("args", []))
    envs = b"".join(f_msg(6, f_bytes(1, k), f_bytes(2, v)) for k, v in a.get("env", {}).items())
    wd = f_bytes(5, a["workdir"]) if a.get("workdir") else b""
    return meta + image + args + wd + envs + f_bytes(11, a.get("log_path", a["name"] + ".log"))


def call(channel, method: str, request: bytes, timeout: float = 120) -> dict[int, list]:
    rpc = channel.unary_unary(SERVICE + method, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
    return decode(rpc(request, timeout=timeout))


def run(sock: str, what: str, a: dict) -> dict:
    import grpc

    with grpc.insecure_channel(f"unix://{sock}") as ch:
        if what == "runp":
            r = call(ch, "RunPodSandbox", f_msg(1, sandbox_config(a["sandbox"])) +
                     f_bytes(2, a.get("runtime_handler", "")))
            return {"id": r[1][0].decode()}
        if what == "create":
            r = call(ch, "CreateContainer", f_bytes(1, a["pod"]) +
                     f_msg(2, container_config(a["container"])) +
                     f_msg(3, sandbox_config(a["sandbox"])))
            return {"id": r[1][0].decode()}
        if what == "start":
            call(ch, "StartContainer", f_bytes(1, a["id"]))
            return {}
        if what == "status":
            st = decode(call(ch, "ContainerStatus", f_bytes(1, a["id"]))[1][0])
            states = ["CREATED", "RUNNING", "EXITED", "UNKNOWN"]
            return {"state": states[st.get(3, [0])[0]], "exit_code": _signed32(st.get(7, [0])[0]),
                    "reason": st.get(10, [b""])[0].decode()}
        if what == "exec":
            req = f_bytes(1, a["id"]) + b"".join(f_bytes(2, c) for c in a["cmd"]) + \
                f_int(3, a.get("timeout", 0))
            r = call(ch, "ExecSync", req)
            return {"stdout": r.get(1, [b""])[0].decode(errors="replace"),
                    "stderr": r.get(2, [b""])[0].decode(errors="replace"),
                    "exit_code": _signed32(r.get(3, [0])[0])}
        if what == "update":
            res = f_int(3, a.get("cpu_shares", 0)) + f_int(4, a.get("memory", 0))
            call(ch, "UpdateContainerResources", f_bytes(1, a["id"]) + f_msg(2, res))
            return {}
        if what == "stats":
            st = decode(call(ch, "ContainerStats", f_bytes(1, a["id"]))[1][0])

            def u64(msg: list, field: int) -> int:     # a UInt64Value field of a message
                inner = decode(msg[0]) if msg else {}
                wrapped = inner.get(field, [b""])[0]
                return decode(wrapped).get(1, [0])[0] if wrapped else 0

            return {"cpu_ns": u64(st.get(2, []), 2), "memory_working_set": u64(st.get(3, []), 2)}
        if what == "stop":
            call(ch, "StopContainer", f_bytes(1, a["id"]) + f_int(2, a.get("timeout", 0)))
            return {}
        if what == "rm":
            call(ch, "RemoveContainer", f_bytes(1, a["id"]))
            return {}
        if what == "stopp":
            call(ch, "StopPodSandbox", f_bytes(1, a["id"]))
            return {}
        if what == "rmp":
            call(ch, "RemovePodSandbox", f_bytes(1, a["id"]))
            return {}
    raise SystemExit(f"unknown call {what!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: cri.py SOCKET CALL JSON_ARGS\n")
        return 2
    try:
        print(json.dumps(run(argv[0], argv[1], json.loads(argv[2]))))
    except Exception as e:  # noqa: BLE001 - report the gRPC error on one line
        details = getattr(e, "details", None)
        sys.stderr.write(f"cri {argv[1]}: {details() if details else e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
