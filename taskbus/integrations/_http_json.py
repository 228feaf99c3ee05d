"""Snapshots and events as JSON bytes, for any value a handler may return.

A result is whatever a handler returned: an object pydantic does not know is
written as its repr (as `model_dump_json(fallback=repr)` does), and a value
pydantic cannot write at all (bytes that are not UTF-8, a string with a lone
surrogate, a cycle, nesting past pydantic's depth limit) makes that one field
its bounded repr (in a list of models, such as a page of snapshots, each model
is written on its own, the same way). Encoding never raises, so one odd result cannot break an
answer or end an event stream.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

__all__ = ["model_json", "safe_repr"]

logger = logging.getLogger("taskbus.http")

#: A value written as its repr is cut to this many characters.
MAX_REPR = 4096


def safe_repr(value: object) -> str:
    """repr(value), bounded; a placeholder when repr itself fails."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__, or one nested too deep
        logger.exception("repr() of a %s result failed", type(value).__qualname__)
        return f"<unrepresentable {type(value).__qualname__}>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def model_json(model: BaseModel) -> bytes:
    """`model` as compact JSON bytes (UTF-8), whatever its fields hold."""
    try:
        return model.__pydantic_serializer__.to_json(model, fallback=safe_repr)
    except (ValueError, RecursionError):
        return _field_by_field(model)


def _field_by_field(model: BaseModel) -> bytes:
    cls = type(model)
    parts: list[bytes] = []
    for name in (*cls.model_fields, *cls.model_computed_fields):
        value: Any = getattr(model, name)
        if isinstance(value, list) and all(isinstance(item, BaseModel) for item in value):
            parts.append(b'"%s":[%s]' % (name.encode("ascii"), b",".join(map(model_json, value))))
            continue
        try:
            encoded = to_json(value, fallback=safe_repr, inf_nan_mode="null")
        except (ValueError, RecursionError) as exc:
            logger.warning("%s.%s is not JSON (%s); sent as its repr", cls.__name__, name, exc)
            encoded = json.dumps(safe_repr(value)).encode("ascii")
        parts.append(b'"%s":%s' % (name.encode("ascii"), encoded))
    return b"{" + b",".join(parts) + b"}"
