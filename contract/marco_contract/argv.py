"""Options models ↔ command lines: one flag per field, named after the field.

The operator writes a stage's flags with :func:`to_argv`; the trainer reads them
with a parser built by :func:`add_arguments` and validated by
:func:`parse_options`. Both start from the same pydantic model
(`marco_contract.options`), so a field added there reaches the command line
and the trainer's CLI without a hand-written copy, with the model's type,
bounds, default and description (the ``--help`` text).

The rules, the same in both directions:

- field ``max_steps`` → ``--max-steps``; a field holding an options model
  (``lora``) contributes its own fields under a prefix (``--lora-r``);
- ``bool`` → ``--x`` / ``--no-x``;
- a list → one flag, its items comma-joined, or with ``Flag(repeat=True)`` the
  flag once per item (paths may hold commas, module names may not);
- ``Literal`` → the flag's choices;
- ``None`` → no flag: the reader then falls back to the same model's default.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Flag:
    """``Annotated`` metadata of a field whose flag differs from the default rule."""

    name: str | None = None  # e.g. "train-manifest" for the field train_manifests
    repeat: bool = False  # a list given as the flag once per item


@dataclass(frozen=True)
class _Shape:
    """What argparse needs to know about one field's type."""

    kind: Literal["scalar", "bool", "list", "model"]
    item: Any = str  # scalar or list item type; the model class for kind "model"
    choices: tuple[Any, ...] | None = None


def _shape(annotation: Any) -> _Shape:
    if get_origin(annotation) is Annotated:
        # Constraints (a list item's bound) do not change the flag's form.
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        # Optional[X]: the None is expressed by leaving the flag out.
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is Literal:
        choices = get_args(annotation)
        return _Shape("scalar", type(choices[0]), choices)
    if origin in (list, tuple):
        return _Shape("list", _shape(get_args(annotation)[0]).item)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Shape("model", annotation)
    if annotation is bool:
        return _Shape("bool", bool)
    if annotation in (int, float, str):
        return _Shape("scalar", annotation)
    if annotation is Path:
        return _Shape("scalar", str)
    raise TypeError(f"no command-line form for {annotation!r}")


def _flag_of(field: FieldInfo) -> Flag:
    return next((m for m in field.metadata if isinstance(m, Flag)), Flag())


def _flag_name(name: str, field: FieldInfo, prefix: str) -> str:
    return prefix + (_flag_of(field).name or name.replace("_", "-"))


def _text(value: Any) -> str:
    # str() of a float is its shortest round-tripping repr: float(_text(x)) == x.
    return str(value)


def to_argv(
    options: BaseModel, model: type[BaseModel] | None = None, prefix: str = ""
) -> list[str]:
    """The flags of ``options``'s fields (only ``model``'s fields when given: a spec
    section that extends an options model with operator-only fields)."""
    argv: list[str] = []
    for name, field in (model or type(options)).model_fields.items():
        value = getattr(options, name)
        if value is None:
            continue
        flag = _flag_name(name, field, prefix)
        shape = _shape(field.annotation)
        if shape.kind == "model":
            argv += to_argv(value, shape.item, prefix=f"{flag}-")
        elif shape.kind == "bool":
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        elif shape.kind == "list" and _flag_of(field).repeat:
            for item in value:
                argv += [f"--{flag}", _text(item)]
        elif shape.kind == "list":
            items = [_text(item) for item in value]
            if any("," in item for item in items):
                raise ValueError(f"--{flag}: an item holds a comma: {items}")
            argv += [f"--{flag}", ",".join(items)]
        else:
            argv += [f"--{flag}", _text(value)]
    return argv


def _splitter(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def split(text: str) -> list[Any]:
        return [item(part) for part in text.split(",") if part]

    return split


def _help(field: FieldInfo, default: Any) -> str:
    text = (field.description or "").replace("%", "%%")  # argparse %-formats help
    if default is None or default is argparse.SUPPRESS:
        return text
    shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
    return f"{text} (default: {shown})".strip()


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    prefix: str = "",
    exclude: Iterable[str] = (),
) -> None:
    """One flag per field of ``model`` (its default, type, choices and help)."""
    skip = set(exclude)
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = _flag_name(name, field, prefix)
        shape = _shape(field.annotation)
        if shape.kind == "model":
            add_arguments(parser, shape.item, prefix=f"{flag}-")
            continue
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        kwargs: dict[str, Any] = {"dest": flag.replace("-", "_"), "help": _help(field, default)}
        if shape.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif shape.kind == "list" and _flag_of(field).repeat:
            # argparse appends to a default list in place: start from None instead.
            kwargs.update(action="append", type=shape.item)
            default = None
        elif shape.kind == "list":
            kwargs["type"] = _splitter(shape.item)
        else:
            kwargs.update(type=shape.item, choices=shape.choices)
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(f"--{flag}", **kwargs)


def _values(model: type[BaseModel], namespace: argparse.Namespace, prefix: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        flag = _flag_name(name, field, prefix)
        shape = _shape(field.annotation)
        if shape.kind == "model":
            data[name] = _values(shape.item, namespace, f"{flag}-")
            continue
        value = getattr(namespace, flag.replace("-", "_"), None)
        if value is not None:  # left out: the model's default
            data[name] = value
    return data


def _flag_of_location(model: type[BaseModel], loc: Sequence[Any], prefix: str = "") -> str:
    field = model.model_fields.get(str(loc[0])) if loc else None
    if field is None:
        return "the options"
    flag = _flag_name(str(loc[0]), field, prefix)
    shape = _shape(field.annotation)
    if shape.kind == "model" and len(loc) > 1:
        return _flag_of_location(shape.item, loc[1:], f"{flag}-")
    return f"--{flag}"


def parse_options(model: type[M], namespace: argparse.Namespace) -> M:
    """The model of parsed flags; ValueError names the flag of the first bad value."""
    try:
        return model.model_validate(_values(model, namespace, ""))
    except ValidationError as error:
        first = error.errors()[0]
        flag = _flag_of_location(model, first["loc"])
        raise ValueError(
            f"invalid value for {flag}: {first['msg'].removeprefix('Value error, ')}"
        ) from error
