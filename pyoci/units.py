"""The Go-style value parsers runc's command line uses: docker/go-units' RAMInBytes (update's
memory flags) and time.ParseDuration (events --interval). Plain string checks: `re` costs
milliseconds to import."""

# docker/go-units v0.4.0 RAMInBytes, as vendored by runc 1.1
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _size_parts(s: str) -> tuple[str, str] | None:
    """(number, unit letter or "") where s matches go-units' sizeRegex
    `^(\\d+(\\.\\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$` (Python's `$`: a final newline
    too), else None. The number is
    the longest run of digits and dots (nothing after it may be either), so no
    backtracking is needed."""
    body = s[:-1] if s.endswith("\n") else s
    i = 0
    while i < len(body) and (body[i] == "." or body[i].isdecimal()):
        i += 1
    number, tail = body[:i], body[i:]
    if not all(part.isdecimal() for part in number.split(".")):   # "", "1.", ".5", "1..2"
        return None
    tail = tail[1:] if tail[:1] == " " else tail
    unit = tail[0] if tail[:1] and tail[0] in "kKmMgGtTpP" else ""
    tail = tail[len(unit):]
    for allowed in ("iI", "bB"):
        if tail[:1] and tail[0] in allowed:
            tail = tail[1:]
    return (number, unit) if not tail else None


def ram_in_bytes(s: str) -> int:
    """A human size ("512m", "1.5 GiB", "100kb", "1024") in bytes, binary units, as
    docker/go-units' RAMInBytes; ValueError with its message otherwise."""
    parts = _size_parts(s)
    if parts is None:
        raise ValueError(f"invalid size: '{s}'")
    number, unit = parts
    try:
        size = float(number)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{number}": invalid syntax') \
            from None
    return int(size * _BINARY.get(unit.lower(), 1))


_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
# tried in this order: "ms" before "m" (the first unit that matches is taken)
_DUR_UNIT_ORDER = ("ns", "us", "\u00b5s", "\u03bcs", "ms", "s", "m", "h")

def parse_duration(s: str) -> float:
    """A Go time.Duration string ("5s", "1m30s", "250ms", "0") in seconds; ValueError."""
    body = s[1:] if s[:1] in "+-" else s
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(s)
    total, pos = 0.0, 0
    while pos < len(body):
        number, pos = _dur_number(body, pos)
        unit = next((u for u in _DUR_UNIT_ORDER if body.startswith(u, pos)), None)
        if not number or unit is None:
            raise ValueError(s)
        total += float(number) * _DUR_UNITS[unit]
        pos += len(unit)
    return -total if s.startswith("-") else total


def _dur_number(body: str, pos: int) -> tuple[str, int]:
    """The match of `\\d+\\.?\\d*|\\.\\d+` at pos ("" if none) and where it ends. Greedy
    is exact: a unit never starts with a digit or a dot, so a shorter number never helps."""
    def digits(i: int) -> int:
        while i < len(body) and body[i].isdecimal():
            i += 1
        return i

    end = digits(pos)
    if end > pos:                           # \d+ \.? \d*
        if body[end:end + 1] == ".":
            end = digits(end + 1)
    elif body[pos:pos + 1] == ".":          # \. \d+
        end = digits(pos + 1)
        if end == pos + 1:
            end = pos
    return body[pos:end], end
