"""Varints of protobuf's wire format, for the few messages pyoci writes and reads without
the protobuf package (CRIU's RPC in pyoci.criu; the shim's `delete` answer, which must not
import protobuf)."""


def varint(n: int) -> bytes:
    """n as a base-128 varint; a negative n (int32/int64) as ten bytes of two's complement."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, index after it) of the varint at data[i]."""
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i
