"""Typed values: validation and coercion of hack parameters and Recipe fields.

A hack's ``Params`` and the :class:`~ablate.hacks.recipe.Recipe` declare their fields with
ordinary annotations; this module checks a value against such an annotation:

* ``bool``, ``int``, ``float``, ``str`` (a bool is not an int; an int is a float; a float
  is finite and within float32's range: nan, inf and 1e308 are refused; write
  ``float | None`` for "no limit");
* ``Literal["a", "b"]`` — one of the listed values;
* ``X | None`` / ``Optional[X]`` and other unions — any arm;
* ``tuple[X, Y]`` (fixed length) and ``tuple[X, ...]``, element by element;
* ``Annotated[X, Bounds(ge=0, lt=1)]`` — ``X`` within bounds (any metadata object with
  ``ge``/``gt``/``le``/``lt`` attributes works, e.g. ``annotated_types.Ge``);
* a frozen dataclass type (the Recipe's nested values) — an instance of it.

:func:`check` is strict (values written by code: the Recipe, parameter defaults);
:func:`coerce` first converts what a command line or a TOML file gives (``"0.1"``,
``"true"``, ``"none"``, ``"0.5,0.9"``, lists) and then checks. Both raise
:class:`~ablate.errors.ConfigError` naming the value's place and its type.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from ablate.errors import ConfigError

_NONE_WORDS = ("none", "null")
# Floats feed float32 tensors: lr = 1e308 passed, then failed inside every run ("value
# cannot be converted to type float without overflow"). A large value that fits (lr = 1e20)
# is an experiment: the run diverges, an outcome the grid records.
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Bounds:
    """Numeric bounds for ``Annotated[float, Bounds(...)]``: ``ge``/``gt`` below,
    ``le``/``lt`` above (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        parts = [f"{op} {v}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                             ("<", self.lt)) if v is not None]
        return " and ".join(parts)


def type_name(typ: Any) -> str:
    """A readable name of an annotation (``float``, ``Literal['a', 'b']``, ``int | None``)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Annotated:
        bounds = [str(m) for m in args[1:] if _bounds_of(m)]
        return type_name(args[0]) + (f" ({', '.join(bounds)})" if bounds else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        return f"tuple[{', '.join(type_name(a) for a in args)}]"
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def supported(typ: Any) -> bool:
    """Whether :func:`check` understands ``typ`` (hack parameters must be JSON-ready)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ in (bool, int, float, str, type(None)):
        return True
    if origin is Annotated:
        return supported(args[0])
    if origin is Literal:
        return all(isinstance(a, (bool, int, float, str)) for a in args)
    if origin in (Union, types.UnionType):
        return all(supported(a) for a in args)
    if origin is tuple:
        return bool(args) and all(a is Ellipsis or supported(a) for a in args)
    return False


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """``{field: annotation}`` of a dataclass, with ``Annotated`` metadata kept."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check(value: Any, typ: Any, where: str) -> Any:
    """Return ``value`` if it has type ``typ`` (ints become floats for float fields)."""
    return _convert(value, typ, where, coerce=False)


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert ``value`` (a CLI string, a TOML value) to ``typ`` and check it."""
    return _convert(value, typ, where, coerce=True)


def check_fields(obj: Any, where: str) -> None:
    """Check every field of a dataclass instance against its annotation."""
    for name, typ in field_types(type(obj)).items():
        check(getattr(obj, name), typ, f"{where}.{name}")


# --------------------------------------------------------------------------------------
def _fail(value: Any, typ: Any, where: str, why: str = "") -> ConfigError:
    return ConfigError(f"{where} must be {type_name(typ)}, got {value!r}" + (f" ({why})" if why else ""))


def _bounds_of(meta: Any) -> dict[str, float]:
    return {op: getattr(meta, op) for op in ("ge", "gt", "le", "lt")
            if getattr(meta, op, None) is not None}


def _convert(value: Any, typ: Any, where: str, coerce: bool) -> Any:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Annotated:
        value = _convert(value, args[0], where, coerce)
        for meta in args[1:]:
            for op, bound in _bounds_of(meta).items():
                ok = {"ge": value >= bound, "gt": value > bound, "le": value <= bound,
                      "lt": value < bound}[op]
                if not ok:
                    raise _fail(value, typ, where, f"out of range: needs {meta}")
        return value
    if typ is type(None):
        if value is None or (coerce and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        raise _fail(value, typ, where)
    if origin in (Union, types.UnionType):
        # None first, so "none" on a command line means None for `float | None`; a plain
        # `str` arm takes any other string.
        ordered = sorted(args, key=lambda a: a is not type(None))
        if str in args:
            ordered = [a for a in ordered if a is not type(None)] + [type(None)] * (type(None) in args)
        for arm in ordered:
            try:
                return _convert(value, arm, where, coerce)
            except ConfigError:
                continue
        raise _fail(value, typ, where)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
            if coerce and isinstance(value, str) and not isinstance(choice, str):
                try:
                    if _convert(value, type(choice), where, True) == choice:
                        return choice
                except ConfigError:
                    pass
        raise _fail(value, typ, where)
    if origin is tuple:
        if coerce and isinstance(value, str):  # "1,2"; "[1, 2]" and "(1, 2)" alike
            text = value.strip()
            if text[:1] + text[-1:] in ("[]", "()"):
                text = text[1:-1]
            value = tuple(x.strip() for x in text.split(",")) if text.strip() else ()
        elif coerce and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple):
            raise _fail(value, typ, where, "a tuple")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", coerce) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(value, typ, where, f"needs {len(args)} values")
        return tuple(_convert(v, a, f"{where}[{i}]", coerce) for i, (v, a) in enumerate(zip(value, args)))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if coerce and isinstance(value, str):
            text = value.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
        raise _fail(value, typ, where, "true or false")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if coerce and isinstance(value, float) and value.is_integer():
            return int(value)
        if coerce and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _fail(value, typ, where)
    if typ is float:
        number = None
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif coerce and isinstance(value, str):
                number = float(value.strip())
        except ValueError:
            pass
        except OverflowError:  # an int beyond any float
            number = math.inf
        if number is None:
            raise _fail(value, typ, where)
        if not math.isfinite(number):  # nan or inf: no setting means that (`float | None` does)
            raise _fail(value, typ, where, "not a finite number")
        if abs(number) > FLOAT32_MAX:
            raise _fail(value, typ, where, f"beyond ±{FLOAT32_MAX:.4g}, the float32 range that "
                        "training computes in, where it would be inf")
        return number
    if typ is str:
        if isinstance(value, str):
            return value
        raise _fail(value, typ, where)
    if isinstance(typ, type):  # e.g. a nested frozen dataclass of the Recipe
        if isinstance(value, typ):
            return value
        raise _fail(value, typ, where)
    raise ConfigError(f"{where}: unsupported type annotation {type_name(typ)}")
