"""The shim's protobuf message classes, built at import from the descriptor set protoc
compiled from proto/shim.proto (pyoci/shim/descriptors.py). Only the shim imports this: the
protobuf package stays off pyoci's own commands.

`pb.CreateTaskRequest`, `pb.TaskExit`... are the message classes by their .proto names."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

from pyoci import TYPE_CHECKING
from pyoci.shim.descriptors import FILE_DESCRIPTOR_SET

_pool = descriptor_pool.DescriptorPool()
_fds = descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET)
for _file in _fds.file:
    _pool.Add(_file)
PACKAGE = _fds.file[0].package


def _message_class(desc):
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.22
        from google.protobuf.message_factory import MessageFactory
        return MessageFactory(_pool).GetPrototype(desc)
    return GetMessageClass(desc)


_names = []
for _file in _fds.file:
    _fd = _pool.FindFileByName(_file.name)
    for _name, _desc in _fd.message_types_by_name.items():
        globals()[_name] = _message_class(_desc)
        _names.append(_name)
    for _name, _enum in _fd.enum_types_by_name.items():
        for _value in _enum.values:
            globals()[_value.name] = _value.number

if TYPE_CHECKING:
    # The names made above from the descriptors (message classes, enum values), for type
    # checkers (pyflakes does not take these declarations: hence its noqa: F821 below).
    import typing

    CREATED: int
    RUNNING: int
    STOPPED: int
    PAUSED: int
    PAUSING: int
    Timestamp: typing.Any
    Any: typing.Any

    def __getattr__(name: str) -> typing.Any: ...

# containerd.v1.types.Status
STATUS_NAMES = {"created": CREATED, "running": RUNNING, "stopped": STOPPED,  # noqa: F821
                "paused": PAUSED, "pausing": PAUSING}  # noqa: F821


def timestamp(t: float | None):
    """A Timestamp message for a time.time() value (None: the zero time)."""
    ts = Timestamp()  # noqa: F821
    if t:
        ts.seconds = int(t)
        ts.nanos = int((t - int(t)) * 1e9)
    return ts


def pack(type_url: str, msg) -> Any:  # noqa: F821
    """An Any with containerd's type URL (the bare message name, as typeurl registers it)."""
    return Any(type_url=type_url, value=msg.SerializeToString())  # noqa: F821
