"""The keys of task files, declared as the fields of the dataclasses that read them.

A task type is a dataclass, and its ``__init__`` fields are the keys its task files may hold;
:func:`read_keys` is the one check of a file's mapping against them:

- a field without a default is a required key (:func:`file_key` with ``required=True``: a key
  every file must give although code may leave it out, such as ``name``);
- the field's type annotation is the type the value must have: ``str``, ``int``, ``bool``,
  ``float`` (an integer is taken, as a float), ``list[str]`` or ``tuple[str, ...]`` (a YAML
  list of strings, stored as a tuple for the latter), a union of these, ``dict`` (a YAML
  mapping, taken as it is: the code that reads the file checks what it holds), or any of
  them ``| None``;
- :func:`file_key` documents the key (``help``) and names it where the file's key differs
  from the field's name; :func:`key_rows` lists the keys with their types and defaults;
- a field marked :func:`not_from_file` (set by code: derived in ``__post_init__``, a data
  object built from other keys) is no key, and stays none where a subclass redeclares it
  with another default.

A file may also set the keys of a task's parts (its data files, a classifier's settings):
:func:`read_keys` takes several dataclasses, whose keys the file holds side by side, and
:func:`build` makes each from the values read. A key left out or given as ``null`` takes the
field's default. Every problem is one :class:`~itra_bench.errors.UserError` naming the file
and the key.
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from itra_bench.errors import UserError
from itra_bench.vocabulary import RENAMED_TASK_FILE_KEYS, current_task_file

T = TypeVar("T")

# Keys of a field's metadata.
_HELP = "help"
_KEY = "key"
_FROM_FILE = "from_file"
_REQUIRED = "required"


def file_key(default: Any = MISSING, *, help: str = "", name: str | None = None,
             required: bool = False, default_factory: Callable[[], Any] | Any = MISSING,
             metadata: Mapping[str, Any] | None = None) -> Any:
    """A dataclass field that task files set: ``help`` documents it, ``name`` is the file's
    key where it is not the field's name, ``required`` makes the key required in files
    although the field has a default. ``metadata`` is merged into the field's."""
    meta = {**(metadata or {}), _HELP: help, _FROM_FILE: True}
    if name is not None:
        meta[_KEY] = name
    if required:
        meta[_REQUIRED] = True
    return field(default=default, default_factory=default_factory, metadata=meta)


def not_from_file(default: Any = MISSING, *, init: bool = True,
                  default_factory: Callable[[], Any] | Any = MISSING,
                  metadata: Mapping[str, Any] | None = None) -> Any:
    """A dataclass field that no task file sets (code sets it). ``metadata`` is merged into
    the field's."""
    return field(default=default, default_factory=default_factory, init=init,
                 metadata={**(metadata or {}), _FROM_FILE: False})


@dataclass(frozen=True)
class KeySpec:
    """One key of a file's mapping: the value it takes and the argument it fills.

    ``accepts``: the type(s) the value must be an instance of (``list``: a list of strings);
    ``convert`` turns an accepted value into the stored one (None: kept as it is).
    """

    key: str
    accepts: type | tuple[type, ...]
    required: bool
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    convert: Callable[[Any], Any] | None = None
    #: The ``__init__`` argument the value fills ("": the key itself).
    argument: str = ""
    type_name: str = ""
    help: str = ""


def check_keys(doc: Mapping[str, Any], specs: Sequence[KeySpec], path: Path, what: str
               ) -> dict[str, Any]:
    """The values of ``specs`` in the mapping ``doc`` of the file ``path`` (a ``what``), by
    key, with defaults filled in; an unknown key (with a close match suggested), a missing
    required key or a value of the wrong type is a UserError naming the file and the key."""
    keys = [s.key for s in specs]
    for key in doc:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{path}: unknown key {key!r}{hint} for {what}; "
                            f"valid keys: {', '.join(keys)}")
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.key not in doc or doc[spec.key] is None:
            if spec.required:
                raise UserError(f"{path}: missing required key {spec.key!r} for {what}")
            values[spec.key] = (spec.default_factory() if spec.default_factory is not None
                                else spec.default)
            continue
        value, typ = doc[spec.key], spec.accepts
        if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
            want = typ.__name__ if isinstance(typ, type) else "number"
            raise UserError(f"{path}: key {spec.key!r} must be a {want}, got "
                            f"{type(value).__name__} ({value!r})")
        if typ is list and not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: key {spec.key!r} must be a list of strings")
        values[spec.key] = value if spec.convert is None else spec.convert(value)
    return values


def read_keys(types: type | Sequence[type], doc: Mapping[str, Any], path: Path, what: str,
              *, omit: Collection[str] = ()) -> dict[str, Any]:
    """The values that the task file ``path`` (a ``what``, for messages) gives the fields of
    the dataclass ``types``, or of several whose keys the file holds side by side, by field
    name: every key checked against its field (see the module), converted, and defaults
    filled in. A field two of them share (a subclass's and its base's) is one key, where it
    first comes. ``omit``: fields that are no keys here. A key's old name
    (:data:`itra_bench.vocabulary.RENAMED_TASK_FILE_KEYS`: ``protocol`` for ``task_type``)
    is read as the key, with a note."""
    specs = _specs((types,) if isinstance(types, type) else tuple(types), frozenset(omit))
    if any(s.key in RENAMED_TASK_FILE_KEYS.values() for s in specs):
        doc = current_task_file(dict(doc), path)
    values = check_keys(doc, specs, path, what)
    return {spec.argument: values[spec.key] for spec in specs}


def build(cls: type[T], values: Mapping[str, Any], **given: Any) -> T:
    """An instance of the dataclass ``cls`` made of those of ``values`` that are its
    ``__init__`` fields (what :func:`read_keys` returned), and of ``given``."""
    names = {f.name for f in fields(cls) if f.init}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names and k not in given}, **given)


def from_file(cls: type[T], doc: Mapping[str, Any], path: Path, what: str, **given: Any) -> T:
    """The dataclass ``cls`` of the task file's mapping ``doc`` (:func:`read_keys` and
    :func:`build`), with ``given`` for fields that are no keys."""
    return build(cls, read_keys(cls, doc, path, what), **given)


class KeyRow(NamedTuple):
    """One key of a task file, for documentation."""

    key: str
    type: str
    #: The value a file that leaves the key out gets (None when the key is required).
    default: Any
    required: bool
    help: str


def key_rows(types: type | Sequence[type], *, omit: Collection[str] = ()) -> list[KeyRow]:
    """The keys a task file read by :func:`read_keys` with these arguments may hold, in
    order: key, type, default, whether required, and help."""
    specs = _specs((types,) if isinstance(types, type) else tuple(types), frozenset(omit))
    return [KeyRow(s.key, s.type_name,
                   None if s.required else
                   s.default_factory() if s.default_factory is not None else s.default,
                   s.required, s.help) for s in specs]


@cache
def _specs(classes: tuple[type, ...], omit: frozenset[str]) -> tuple[KeySpec, ...]:
    """The keys of the dataclasses ``classes``, in order (a later class's field of a key
    already listed takes that place)."""
    specs: dict[str, KeySpec] = {}
    for cls in classes:
        for f in fields(cls):  # type: ignore[arg-type]
            if not f.init or f.name in omit or not _meta(cls, f.name, _FROM_FILE, True):
                continue
            spec = _spec(cls, f)
            known = specs.get(spec.key)
            if known is not None and known.argument != spec.argument:
                raise TypeError(f"{cls.__qualname__}.{f.name}: task-file key {spec.key!r} is "
                                f"also read into field {known.argument!r}")
            specs[spec.key] = spec
    return tuple(specs.values())


def _meta(cls: type, name: str, key: str, default: Any) -> Any:
    """Metadata ``key`` of field ``name`` of ``cls``, from its nearest declaration that sets
    it: a subclass redeclaring a field with another default keeps its base's metadata."""
    for klass in cls.__mro__:
        declared = vars(klass).get("__dataclass_fields__", {}).get(name)
        if declared is not None and key in declared.metadata:
            return declared.metadata[key]
    return default


def _spec(cls: type, f: Field[Any]) -> KeySpec:
    where = f"{cls.__qualname__}.{f.name}"
    accepts, convert, type_name = _value_type(_annotation(cls, f.name), where)
    required = f.default is MISSING and f.default_factory is MISSING
    return KeySpec(
        key=_meta(cls, f.name, _KEY, f.name), accepts=accepts,
        required=required or bool(_meta(cls, f.name, _REQUIRED, False)),
        default=None if f.default is MISSING else f.default,
        default_factory=None if f.default_factory is MISSING else f.default_factory,
        convert=convert, argument=f.name, type_name=type_name,
        help=_meta(cls, f.name, _HELP, ""))


def _annotation(cls: type, name: str) -> Any:
    """The type annotation of field ``name`` where ``cls`` or its nearest base declares it,
    evaluated in that class's module (annotations are strings under
    ``from __future__ import annotations``)."""
    for klass in cls.__mro__:
        annotations = vars(klass).get("__annotations__", {})
        if name not in annotations:
            continue
        hint = annotations[name]
        if isinstance(hint, str):
            module = sys.modules.get(klass.__module__)
            try:
                # What typing.get_type_hints does, for this one field.
                hint = eval(hint, dict(vars(module)) if module else {})  # noqa: S307
            except Exception as exc:
                raise TypeError(f"{klass.__qualname__}.{name}: its type annotation "
                                f"{annotations[name]!r} cannot be evaluated ({exc})") from None
        return hint
    raise TypeError(f"{cls.__qualname__}.{name}: no type annotation")


def _value_type(hint: Any, where: str
                ) -> tuple[type | tuple[type, ...], Callable[[Any], Any] | None, str]:
    """What a value of a field typed ``hint`` may be: accepted type(s), conversion, name."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _value_type(members[0], where)
        parts = [_value_type(m, where) for m in members]
        if any(p[0] is list for p in parts):
            raise TypeError(f"{where}: a task-file key cannot be a list or something else")
        accepts = tuple(dict.fromkeys(t for p in parts
                                      for t in (p[0] if isinstance(p[0], tuple) else (p[0],))))
        return accepts, None, " | ".join(p[2] for p in parts)
    if hint is float:
        return (int, float), float, "float"
    if hint in (str, int, bool):
        return hint, None, hint.__name__
    if origin is list and args == (str,):
        return list, list, "list[str]"
    if origin is tuple and args == (str, ...):
        return list, tuple, "list[str]"
    if dict in (hint, origin):
        return dict, None, "dict"
    raise TypeError(f"{where}: a task file cannot give a {hint!r} (str, int, float, bool, "
                    "list[str], tuple[str, ...], a union of them, dict, optionally | None); "
                    "mark the field not_from_file()")
