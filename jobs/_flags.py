"""Flags made from option dataclasses, and the record of every flag a verb's parser has.

`add_options(group, EditConfig)` adds one flag per field made with `pipeline.options.option`, in field
order: its name (`--max-batch` for `max_batch`, or the field's own flag name), default, type (int, float,
text; a bool field is a switch), choices, metavar and help all come from the field, so each default is
written once. `Parser` keeps what each flag was made with, as `add_argument` returns it, for its groups'
flags too: `--config` (jobs/cli.py) checks a YAML value as the flag would, without argparse's internals.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.options import flag_of

# A field's annotation (a string under `from __future__ import annotations`) -> the flag's `type`;
# None: text, argparse's own (a YAML value must then be text too).
_TYPES: dict[str, type | None] = {"int": int, "float": float, "str": None, "bool": bool}


@dataclass(frozen=True)
class FlagRecord:
    """One flag of a parser: the Action `add_argument` returned, and whether each use appends."""

    action: argparse.Action
    appends: bool

    @property
    def switch(self) -> bool:
        """A flag that takes no value (--reverse, --overwrite, --no-progress, -h)."""
        return self.action.nargs == 0


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that records each flag added to it or to one of its argument groups
    (`flags`: destination -> FlagRecord, in the order they were added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: dict[str, FlagRecord] = {}  # before argparse's own __init__, which adds -h
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._record(super().add_argument(*args, **kwargs), kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recording(super().add_mutually_exclusive_group(*args, **kwargs))

    def _recording(self, group: Any) -> Any:
        """`group`, its add_argument recording into this parser's `flags` as the parser's own does."""
        add = group.add_argument

        def add_argument(*a: Any, **kw: Any) -> argparse.Action:
            return self._record(add(*a, **kw), kw)

        group.add_argument = add_argument
        return group

    def _record(self, action: argparse.Action, kwargs: dict[str, Any]) -> argparse.Action:
        self.flags[action.dest] = FlagRecord(action, appends=kwargs.get("action") in ("append", "extend"))
        return action


def add_options(group: Any, cls: type, *, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> None:
    """A flag for each option field of the dataclass `cls` (see the module's docstring): all of them in
    field order, less `exclude`, or the fields named in `only`, in that order."""
    fields = {f.name: f for f in dataclasses.fields(cls) if flag_of(f) is not None}
    names = only if only is not None else tuple(name for name in fields if name not in exclude)
    for name in names:
        _add_option(group, fields[name])


def _add_option(group: Any, field: dataclasses.Field) -> None:
    flag = flag_of(field)
    name = flag.name or "--" + field.name.replace("_", "-")
    kind = _flag_type(field)
    kwargs: dict[str, Any] = {"dest": field.name, "help": flag.help}
    if kind is bool:
        # A switch turns the field's default over: --reverse (False -> True), --no-latent-update (True -> False).
        if field.default and not flag.name:
            raise TypeError(f"option {field.name}: a switch that turns True off needs its flag name (--no-...)")
        kwargs["action"] = "store_false" if field.default else "store_true"
    else:
        kwargs["default"] = field.default
        if kind is not None:
            kwargs["type"] = kind
        if flag.choices is not None:
            kwargs["choices"] = flag.choices
        if flag.metavar is not None:
            kwargs["metavar"] = flag.metavar
    group.add_argument(name, **kwargs)


def _flag_type(field: dataclasses.Field) -> type | None:
    """int, float, bool or None (text) from the field's annotation: `int`, `int | None`, ..."""
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    kinds = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
    if len(kinds) != 1 or kinds[0] not in _TYPES:
        raise TypeError(f"option {field.name}: a flag of type {annotation!r} is not supported")
    return _TYPES[kinds[0]]


def option_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """{field: value} for every field of the dataclass `cls` that `args` has (a flag named like it)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
