"""`dataclass` and `field` for pyoci's plain records, without the `dataclasses` module.

`dataclasses` imports `inspect` (and with it ast, dis, tokenize...): on this runtime's hot
path that alone costs several milliseconds per command. pyoci's records only need what is
here: an `__init__` taking the annotated fields in order (defaults and `default_factory`),
`__repr__` and `__eq__`. Annotations are read as written (`from __future__ import
annotations`), never evaluated; `ClassVar` fields are not supported. The `__init__` is one
generic function rather than source compiled per class (as dataclasses does): compiling
costs ~0.2 ms per record at import time, on every command.
"""

from __future__ import annotations

from pyoci import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:
    def dataclass_transform(**_kwargs: object):
        """typing.dataclass_transform without typing: at run time it only marks the function."""
        return lambda decorator: decorator

_MISSING: Any = object()


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING) -> Any:
    """A field's default (`default=`) or a callable making a fresh one per instance."""
    return _Field(default, default_factory)


class _Field:
    """What `field()` returns: the default or the factory of one field."""

    __slots__ = ("default", "factory")

    def __init__(self, default: object, factory: Callable[[], Any]):
        self.default = default
        self.factory = factory


# Type checkers see the records as dataclasses (typed __init__, fields, eq): PEP 681.
@dataclass_transform(eq_default=True, field_specifiers=(field,))
def dataclass(cls: type[_T]) -> type[_T]:
    """Add `__init__`, `__repr__` and `__eq__` for the class's annotated fields."""
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults: dict[str, object] = {}                     # name -> default value
    factories: dict[str, Callable[[], Any]] = {}         # name -> default_factory
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            if value.factory is not _MISSING:
                factories[name] = value.factory
                delattr(cls, name)
                continue
            value = value.default
            if value is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        if value is _MISSING:
            if defaults or factories:
                raise TypeError(f"non-default field {name!r} follows a default one")
        else:
            defaults[name] = value
    fields = tuple(names)
    qualname = f"{cls.__qualname__}.__init__()"

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(fields):
            raise TypeError(f"{qualname} takes {len(fields) + 1} positional arguments but "
                            f"{len(args) + 1} were given")
        values = dict(zip(fields, args))
        for k, v in kwargs.items():
            if k not in fields:
                raise TypeError(f"{qualname} got an unexpected keyword argument {k!r}")
            if k in values:
                raise TypeError(f"{qualname} got multiple values for argument {k!r}")
            values[k] = v
        missing = []
        for n in fields:
            if n in values:
                v = values[n]
            elif n in defaults:
                v = defaults[n]
            elif n in factories:
                v = factories[n]()
            else:
                missing.append(repr(n))
                continue
            setattr(self, n, v)
        if missing:
            raise TypeError(f"{qualname} missing required argument(s): {', '.join(missing)}")

    __init__.__qualname__ = qualname[:-2]
    built: Any = cls    # the methods are added to the class here, as dataclasses does
    built.__init__ = __init__

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in fields)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in fields)

    built.__repr__ = __repr__
    built.__eq__ = __eq__
    built.__hash__ = None   # as dataclasses with eq=True
    built.__record_fields__ = fields
    return cls


def fields(record: object) -> tuple[str, ...]:
    """The names of a record's fields, in order (dataclasses.fields, names only)."""
    return type(record).__record_fields__  # type: ignore[attr-defined]  # set by dataclass()
