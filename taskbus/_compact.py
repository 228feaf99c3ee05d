"""Compact inputs: a task deep in a backlog holds a simple model input as its
field values.

A validated two-field model costs a queued task about 270 bytes besides its
values: the instance and its ``__dict__``. A `TaskRecord` that joins a long line
of the queue (`TaskRecord.compact`, called by `TaskQueue` past
`COMPACT_BACKLOG`) holds instead a `CompactInput`, a tuple of the field values and
the type's packer (64 bytes for two fields). ``record.input`` rebuilds the model,
not validated again, as a new equal instance on each read;
`TaskRecord.handler_input` rebuilds it when the task starts and keeps it, so
every attempt (and every later read) gets that one instance.

Only a *simple* model is held so: a plain `BaseModel` subclass (not a root model)
whose instances hold nothing but their fields: no ``extra="allow"``, no private
attributes, no ``model_post_init``, no ``__init__``, ``__new__`` or ``__slots__``
of its own. And only an instance the input validation just built from data, with
every field set: `TaskDefinition.validate_input` gives those the packer's
`fields_set`, the mark `InputPacker.pack` looks for. An instance the caller made,
or one with a default left unset or anything else stored on it, is held as it
is. Rebuilt instances share another set (`rebuilt_fields_set`), so one a handler
got and submits again is held as it is too. Such an instance is wholly its
``__dict__`` (validators ran before it was packed; their output is what is kept),
so the rebuilt one is equal, of the same class, with an equal fields-set.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

__all__ = ["CompactInput", "InputPacker", "is_compact", "packer_for", "packers"]


#: A simple model's field values in field order, then its `InputPacker` (a plain
#: tuple: a subclass of tuple would take one item more; no validated input holds
#: an `InputPacker`, so no other input is taken for one: see `is_compact`).
CompactInput = tuple[Any, ...]


#: The slot setters of a model instance (what pydantic's `model_construct` sets).
_slot = BaseModel.__dict__
_set_dict: Callable[[Any, dict[str, Any]], None] = _slot["__dict__"].__set__
_set_fields_set: Callable[[Any, set[str]], None] = _slot["__pydantic_fields_set__"].__set__
_set_extra: Callable[[Any, None], None] = _slot["__pydantic_extra__"].__set__
_set_private: Callable[[Any, None], None] = _slot["__pydantic_private__"].__set__
_new = object.__new__


class InputPacker:
    """Packs and rebuilds the instances of one simple model type."""

    __slots__ = ("__weakref__", "fields_set", "model", "names", "rebuilt_fields_set")

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.names = tuple(model.model_fields)
        #: The fields-set that validated inputs with every field set share: the mark
        #: of an instance that `pack` may take.
        self.fields_set = set(self.names)
        #: The fields-set that rebuilt instances share: an equal set, but not the mark,
        #: so an instance a handler got, submitted again as is, is kept as is.
        self.rebuilt_fields_set = set(self.names)

    def __repr__(self) -> str:
        return f"<InputPacker {self.model.__qualname__}>"

    def pack(self, value: Any) -> Any:
        """`value` as a `CompactInput` if it is a fresh, fully set instance; else `value`."""
        # Extras and private values stay None: a simple model has neither, and nothing
        # but `object.__setattr__` of those names could give it some.
        if value.__pydantic_fields_set__ is not self.fields_set:
            return value
        fields = value.__dict__
        if tuple(fields) != self.names:  # something else was stored on it: keep it whole
            return value
        return (*fields.values(), self)

    def unpack(self, packed: CompactInput) -> Any:
        """A new instance equal to the one packed, not validated again: what pydantic's
        `model_construct` sets, with the shared fields-set of rebuilt instances."""
        model = _new(self.model)
        # One name short of the values: the packer, last, is left out.
        _set_dict(model, dict(zip(self.names, packed)))  # noqa: B905
        _set_fields_set(model, self.rebuilt_fields_set)
        _set_extra(model, None)
        _set_private(model, None)
        return model


def is_compact(value: Any) -> bool:
    """Whether `value` is a `CompactInput`."""
    return value.__class__ is tuple and bool(value) and value[-1].__class__ is InputPacker


#: The live packer of each simple model type used as an input, by type. The task
#: definitions hold their packers (and queued inputs theirs): a type no definition
#: uses any more is forgotten here with its packer.
packers: dict[type, weakref.ReferenceType[InputPacker]] = {}


def packer_for(input_type: Any) -> InputPacker | None:
    """The packer for `input_type` if its instances can be held compactly, else None."""
    if not _is_simple_model(input_type):
        return None
    ref = packers.get(input_type)
    packer = None if ref is None else ref()
    if packer is None:
        packer = InputPacker(input_type)
        packers[input_type] = weakref.ref(packer, _forget(input_type))
    return packer


def _forget(model: type) -> Callable[[weakref.ReferenceType[InputPacker]], None]:
    def forget(ref: weakref.ReferenceType[InputPacker]) -> None:
        if packers.get(model) is ref:
            del packers[model]

    return forget


def _is_simple_model(input_type: Any) -> bool:
    """Whether an instance of `input_type` is wholly its ``__dict__`` (see the module)."""
    if not isinstance(input_type, type) or not issubclass(input_type, BaseModel):
        return False
    own_slots = any(
        "__slots__" in vars(cls)
        for cls in input_type.__mro__
        if cls is not BaseModel and issubclass(cls, BaseModel)
    )
    return not (
        own_slots
        or input_type.__pydantic_root_model__
        or input_type.model_config.get("extra") == "allow"
        or input_type.__private_attributes__
        or input_type.__pydantic_post_init__ is not None
        or input_type.__pydantic_custom_init__
        or input_type.__new__ is not object.__new__
        or not input_type.__pydantic_complete__
    )
