"""json.loads / json.dumps on the interpreter's C accelerator `_json` alone.

The `json` package costs ~6 ms to import on every create/run (json.decoder pulls in `re`,
and with it `enum`, `functools`, `collections`...). Its work is done by `_json` anyway: the
C scanner and the C encoder, driven here with json's default settings, give the same
objects and the same text. Anything off the plain path (a BOM or UTF-16/32 input, invalid
JSON, `indent` with a type a state or config does not hold) is handed to `json` itself, so
results and error messages stay exactly json's.
"""

import _json

_WS = " \t\n\r"      # json.decoder's WHITESPACE


class _Decoder:
    """The settings _json's scanner reads: those of json.loads' default decoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float({"-Infinity": "-inf", "Infinity": "inf", "NaN": "nan"}[name])


_scanner: list = []


def _utf8(b: bytes | bytearray) -> bool:
    """json.detect_encoding(b) == "utf-8": no BOM, no NUL among the first bytes."""
    if b[:2] in (b"\xfe\xff", b"\xff\xfe") or b[:3] == b"\xef\xbb\xbf":
        return False
    if len(b) >= 4:
        return bool(b[0] and b[1])
    return not (len(b) == 2 and not (b[0] and b[1]))


MAX_DEPTH = 10000     # levels of nesting, as Go's encoding/json (runc) takes: beyond, an error


def _deep(fn, *args):
    """fn(*args) with room for MAX_DEPTH levels of nesting: the C scanner and encoder count
    each level against the recursion limit (1,000 by default). Raises ValueError beyond."""
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, MAX_DEPTH + 500))
    try:
        return fn(*args)
    except RecursionError:
        raise ValueError(f"exceeded max depth: more than {MAX_DEPTH} levels of nesting") \
            from None
    finally:
        sys.setrecursionlimit(old)


def loads(data):
    """json.loads(data) for str, bytes or bytearray."""
    try:
        return _loads(data)
    except RecursionError:
        return _deep(_loads, data)


def _loads(data):
    try:
        if isinstance(data, str):
            s = data
        elif isinstance(data, (bytes, bytearray)) and _utf8(data):
            s = data.decode("utf-8", "surrogatepass")
        else:
            s = None
        if s is not None and not s.startswith("\ufeff"):
            if not _scanner:
                # the scanner reads its settings from any object: typeshed wants a JSONDecoder
                _scanner.append(_json.make_scanner(_Decoder))  # type: ignore[arg-type]
            start = len(s) - len(s.lstrip(_WS))
            obj, end = _scanner[0](s, start)
            if not s[end:].strip(_WS):
                return obj
    except RecursionError:
        raise
    except Exception:  # noqa: BLE001 - invalid: json.loads raises its own error below
        pass
    import json

    return json.loads(data)


def _default(o: object):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


_encoders: dict = {}     # (item separator, key separator) -> (_json encoder, its markers)


def dumps(obj, indent: int | None = None, separators: tuple[str, str] = (", ", ": ")) -> str:
    """json.dumps(obj) (ASCII), with separators as json's (e.g. (",", ":")), or
    json.dumps(obj, indent=N) (then with json's default "," and ": ")."""
    try:
        return _dumps(obj, indent, separators)
    except RecursionError:
        return _deep(_dumps, obj, indent, separators)


def _dumps(obj, indent: int | None, separators: tuple[str, str]) -> str:
    if indent is None:
        got = _encoders.get(separators)
        if got is None:
            item, key = separators
            markers: dict = {}      # circular-reference check: left dirty by an error
            got = _encoders[separators] = (_json.make_encoder(
                markers, _default, _json.encode_basestring_ascii, None, key, item, False,
                False, True), markers)
        enc, markers = got
        try:
            return "".join(enc(obj, 0))
        except BaseException:
            markers.clear()
            raise
    try:
        return _indented(obj, " " * indent, 0)
    except _Unusual:
        import json

        return json.dumps(obj, indent=indent)


class _Unusual(Exception):
    """A value json.dumps' indented output is not mirrored for here."""


_CONST = {True: "true", False: "false", None: "null"}


def _indented(obj, unit: str, level: int) -> str:
    """json.dumps(obj, indent=len(unit)) for dicts with str keys, lists, str, int, bool,
    None (what states and configs hold); anything else raises _Unusual."""
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    if obj is None or obj is True or obj is False:
        return _CONST[obj]
    if isinstance(obj, int):
        return int.__repr__(obj)
    inner = "\n" + unit * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        if level > 100 or not all(isinstance(k, str) for k in obj):
            raise _Unusual
        items = [_json.encode_basestring_ascii(k) + ": " + _indented(v, unit, level + 1)
                 for k, v in obj.items()]
        return "{" + inner + ("," + inner).join(items) + "\n" + unit * level + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if level > 100:
            raise _Unusual
        return ("[" + inner + ("," + inner).join(_indented(v, unit, level + 1) for v in obj)
                + "\n" + unit * level + "]")
    raise _Unusual
