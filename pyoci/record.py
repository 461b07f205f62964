"""`dataclass` and `field` for pyoci's plain records, without the `dataclasses` module.

`dataclasses` imports `inspect` (and with it ast, dis, tokenize...): on this runtime's hot
path that alone costs several milliseconds per command. pyoci's records only need what is
here: an `__init__` taking the annotated fields in order (defaults and `default_factory`),
`__repr__` and `__eq__`. Annotations are read as written (`from __future__ import
annotations`), never evaluated; `ClassVar` fields are not supported.
"""

from __future__ import annotations

_MISSING = object()


def field(*, default: object = _MISSING, default_factory: object = _MISSING) -> object:
    """A field's default (`default=`) or a callable making a fresh one per instance."""
    return _Field(default, default_factory)


class _Field:
    """What `field()` returns: the default or the factory of one field."""

    __slots__ = ("default", "factory")

    def __init__(self, default: object, factory: object):
        self.default = default
        self.factory = factory


def dataclass(cls: type) -> type:
    """Add `__init__`, `__repr__` and `__eq__` for the class's annotated fields."""
    names = list(cls.__dict__.get("__annotations__", {}))
    args, body, ns = [], [], {"_MISSING": _MISSING}
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            if value.factory is not _MISSING:
                ns[f"_f_{name}"] = value.factory
                args.append(f"{name}=_MISSING")
                body.append(f"self.{name} = _f_{name}() if {name} is _MISSING else {name}")
                delattr(cls, name)
                continue
            value = value.default
            if value is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        if value is _MISSING:
            if args and "=" in args[-1]:
                raise TypeError(f"non-default field {name!r} follows a default one")
            args.append(name)
        else:
            ns[f"_d_{name}"] = value
            args.append(f"{name}=_d_{name}")
        body.append(f"self.{name} = {name}")
    src = (f"def __init__(self, {', '.join(args)}):\n    "
           + "\n    ".join(body or ["pass"]) + "\n")
    exec(src, ns)  # noqa: S102 - generated from the class's own field names, as dataclasses
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init
    fields = tuple(names)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in fields)

    cls.__repr__ = __repr__
    cls.__eq__ = __eq__
    cls.__hash__ = None   # as dataclasses with eq=True
    cls.__record_fields__ = fields
    return cls
