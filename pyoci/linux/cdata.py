"""ctypes' data types and CDLL on `_ctypes` alone: what pyoci needs of `ctypes` on its hot paths.

`ctypes` is a Python layer over its C module `_ctypes` that costs ~3 ms to import (with
`os`, `struct`, `types` and its class set-up) where `_ctypes` costs a fraction. The process
of `pyoci exec` that only re-executes itself (pyoci.linux.sealed: open_tree, mount_setattr)
needs no more than this, and neither do the process attributes, rlimits, the keyring, the
rootfs's new mounts and statfs on the create, run and exec paths (pyoci.linux.seccomp and
the eBPF device program, with pointers and arrays, use ctypes itself). The types here are
ctypes' own definitions (`_type_` codes); objects of real ctypes types mix with them freely
(the C side sees the same thing), and tests/test_imports.py checks them against ctypes.
"""

import _ctypes

Structure = _ctypes.Structure
byref = _ctypes.byref
sizeof = _ctypes.sizeof
get_errno = _ctypes.get_errno


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


class c_void_p(_ctypes._SimpleCData):
    _type_ = "P"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


c_int32 = c_int
c_uint32 = c_uint
c_size_t = c_ulong      # LP64 (Linux x86_64, arm64), as ctypes picks it
c_uint64 = c_ulong


def create_string_buffer(size: int):
    """ctypes.create_string_buffer(size): a zeroed char array (.raw, .value)."""
    return (c_char * size)()


class CDLL:
    """ctypes.CDLL(name, use_errno=True): `lib.name` is the C function (its restype c_int
    until set), made once and kept, as ctypes does."""

    def __init__(self, name: str | None) -> None:
        class _FuncPtr(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = c_int

        self._FuncPtr = _FuncPtr
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = self._FuncPtr((name, self))  # type: ignore[arg-type]  # any object with _handle
        func.__name__ = name  # type: ignore[attr-defined]
        setattr(self, name, func)
        return func
