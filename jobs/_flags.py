"""The verbs' parser (jsonargparse) and flags made from option dataclasses.

`add_options(group, EditConfig)` adds one flag per field made with `pipeline.options.option`, in field
order: its name (`--max-batch` for `max_batch`, or the field's own flag name), default, type (int, float,
text; a bool field is a switch), choices, metavar and help all come from the field, so each default is
written once.

`Parser` is a `jsonargparse.ArgumentParser`, so every flag has three more sources besides the command
line, with one checker per flag for all of them: a YAML file (`--config FILE`, keys named like the
flags' destinations, `--print_config` writes one), and the environment (`PIX2VIDEO_<DEST>`, e.g.
`PIX2VIDEO_STEPS`, `PIX2VIDEO_GUIDANCE_SCALE`). Later sources win: defaults, the environment, config
files (in the order given), then the flags on the command line wherever `--config` stands among them.
A value of the wrong type, from wherever it came, is one `InputError` line naming where: the flag, the
config file and its key, or the variable. The parser also keeps what each flag was made with
(`flags`: destination -> FlagRecord).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonargparse

from pipeline.errors import InputError
from pipeline.options import flag_of

ENV_PREFIX = "PIX2VIDEO"
REDACTED = "***"  # what --print_config writes for a storage option's value


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A value refused by its flag's checker: argparse shows an ArgumentTypeError's text as it is (a
    command-line value), jsonargparse takes a ValueError (a config or environment value)."""


@dataclass(frozen=True)
class Kind:
    """The checker of a flag's values, called on command-line text and on YAML and environment values
    alike (so it takes both `"3"` and `3`, returns the same value for either, and takes what it returned).

    `name`: int, float, str or bool; `choices`: the allowed values; `counts`: a text flag (metavar N)
    that also takes a YAML number (--videos-per-call auto|N); `repeats`: an appending flag, whose YAML
    value may be a list; `mapping`: it may also be a YAML mapping (--storage-option's nested options);
    `secret`: --print_config writes its values as ***."""

    name: str
    choices: tuple[Any, ...] | None = None
    counts: bool = False
    repeats: bool = False
    mapping: bool = False
    secret: bool = False

    @property
    def __name__(self) -> str:  # argparse names a type by it
        return self.name

    def __call__(self, value: Any) -> Any:
        if self.repeats and isinstance(value, list | tuple):
            return [self._one(v) for v in value]
        if self.mapping and isinstance(value, Mapping):
            return dict(value)
        return self._one(value)

    def _one(self, value: Any) -> Any:
        if value is None:  # an optional flag's default, or `null` in a config file
            return None
        if self.name == "bool":
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"  # a variable's text: jsonargparse 4.40 passes it on
            if not isinstance(value, bool):
                raise BadValue(f"must be true or false, got {value!r}")
            return value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.name == "str":
            if number and self.counts:
                value = str(value)
            if not isinstance(value, str):
                shown = type(value).__name__ + ("" if self.secret else f" {value!r}")  # no credential echoed
                raise BadValue(f"must be text, got {shown}; quote it")
            out: Any = value
        else:
            kind, expected = (int, "a whole number") if self.name == "int" else (float, "a number")
            if not (isinstance(value, str) or number) or (kind is int and isinstance(value, float)):
                raise BadValue(f"must be {expected}, got {type(value).__name__} {value!r}")
            try:
                out = kind(value)
            except (TypeError, ValueError):
                raise BadValue(f"must be {expected}, got {value!r}") from None
        if self.choices is not None and out not in self.choices:
            raise BadValue(f"must be one of {', '.join(map(str, self.choices))}, got {out!r}")
        return out


def pairs(*, secret: bool = False) -> Kind:
    """The type of a repeatable KEY=VALUE flag that a config file may also give as a mapping."""
    return Kind("str", repeats=True, mapping=True, secret=secret)


class _StoreTrue(argparse._StoreTrueAction):
    """A switch (--reverse, --overwrite): no value on the command line; true or false in a config file or
    the environment, checked as any other value (argparse's own switch never checks one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.type = Kind("bool")


class _StoreFalse(argparse._StoreFalseAction):
    """A switch that turns a True default off (--no-latent-update, --no-progress), as `_StoreTrue`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.type = Kind("bool")


class _Append(argparse._AppendAction):
    """argparse's append, onto a config file's value too (a list, a single text or a mapping)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        if isinstance(current, Mapping):
            raise argparse.ArgumentError(self, "cannot add KEY=VALUE to the mapping a config file gave")
        if current is not None and not isinstance(current, list):
            setattr(namespace, self.dest, [current])
        super().__call__(parser, namespace, values, option_string)


_ACTIONS = {"store_true": _StoreTrue, "store_false": _StoreFalse, "append": _Append}
_TYPES = {int: "int", float: "float", str: "str", None: "str"}


def _strict(kwargs: dict[str, Any]) -> dict[str, Any]:
    """add_argument's keywords with our checker as the type and our switch and append actions."""
    action = kwargs.get("action", "store")
    if action in ("store_true", "store_false"):
        return {**kwargs, "action": _ACTIONS[action]}
    if action not in ("store", "append") or isinstance(kwargs.get("type"), Kind):
        out = dict(kwargs)
    elif kwargs.get("type") in _TYPES:
        choices = kwargs.get("choices")
        counts = kwargs.get("metavar") == "N"  # a count, or a word such as auto
        kind = Kind(_TYPES[kwargs.get("type")], tuple(choices) if choices else None, counts, action == "append")
        out = {**kwargs, "type": kind}
    else:
        return kwargs  # argparse's own (REMAINDER, a type of its own)
    if action == "append":
        out["action"] = _Append
    return out


@dataclass(frozen=True)
class FlagRecord:
    """One flag of a parser: the Action `add_argument` returned, and whether each use appends."""

    action: argparse.Action
    appends: bool

    @property
    def switch(self) -> bool:
        """A flag that takes no value (--reverse, --overwrite, --no-progress, -h)."""
        return self.action.nargs == 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """argparse's help, the description as written: the help texts say their defaults themselves."""


class Parser(jsonargparse.ArgumentParser):
    """The parser of one verb: jsonargparse's, with a checker per flag (see the module's docstring),
    one-line `InputError`s, and a record of each flag added to it or to one of its argument groups
    (`flags`: destination -> FlagRecord, in the order they were added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: dict[str, FlagRecord] = {}  # before argparse's own __init__, which adds -h
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, env_prefix=ENV_PREFIX, default_env=True, exit_on_error=False, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # jsonargparse compiles this method's source into its argument groups' class too: `self` is then
        # a group, whose `parser` keeps the record.
        action = super().add_argument(*args, **_strict(kwargs))
        record = getattr(self, "parser", self).flags
        record[action.dest] = FlagRecord(action, appends=kwargs.get("action") in ("append", "extend"))
        return action

    def add_config_argument(self) -> None:
        """--config FILE (repeatable) and --print_config."""
        self.add_argument(
            "--config",
            action=ConfigFile,
            metavar="FILE",
            help="YAML file of option values, keys named like the flags (--guidance-scale: guidance_scale); "
            "flags on the command line win; repeatable, later files win. --print_config writes one",
        )
        printer = next(a for a in self._actions if "--print_config" in a.option_strings)
        printer.help = (
            "write the options as a --config YAML file to stdout (storage option values as ***) and exit; "
            "--print_config=skip_default leaves out those at their defaults"
        )

    def env_var(self, dest: str) -> str:
        """The environment variable of the flag with destination `dest` (PIX2VIDEO_STEPS for steps)."""
        return f"{ENV_PREFIX}_{dest}".upper()

    def parse_args(self, args: Sequence[str] | None = None, *more: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """The namespace of `args` (see the module's docstring); a bad value or usage is an InputError."""
        try:
            ns = super().parse_args(_config_first(list(sys.argv[1:] if args is None else args)), *more, **kwargs)
        except argparse.ArgumentError as e:
            raise InputError(self._named(_one_line(str(e)))) from None
        for dest, flag in self.flags.items():  # a config file's single text for a repeatable flag
            if flag.appends and isinstance(getattr(ns, dest, None), str):
                setattr(ns, dest, [getattr(ns, dest)])
        return ns

    def _named(self, message: str) -> str:
        """`message` with the destinations of missing flags as their names (--prompt, not prompt)."""
        head, sep, names = message.partition("the following arguments are required: ")
        if not sep:
            return message
        flags = {dest: (r.action.option_strings or [r.action.metavar or dest])[-1] for dest, r in self.flags.items()}
        return head + sep + ", ".join(flags.get(n.strip(), n.strip()) for n in names.split(","))

    def error(self, message: str, ex: Exception | None = None) -> Any:  # no usage text: one line
        raise argparse.ArgumentError(None, message)

    def _load_env_vars(self, env: Any, defaults: bool) -> Any:
        """jsonargparse's reading of the PIX2VIDEO_* variables, with a bad one named."""
        try:
            return super()._load_env_vars(env, defaults)
        except (argparse.ArgumentError, TypeError, ValueError) as e:
            for action in self._actions:  # which one: each set variable alone
                name = self.env_var(action.dest)
                if name in env:
                    try:
                        super()._load_env_vars({name: env[name]}, defaults)
                    except (argparse.ArgumentError, TypeError, ValueError) as one:
                        message = f"environment variable {name}: {_one_line(str(one))}"
                        raise argparse.ArgumentError(None, message) from None
            raise argparse.ArgumentError(None, f"environment variables {ENV_PREFIX}_*: {_one_line(str(e))}") from None

    def dump(self, namespace: Any, *args: Any, **kwargs: Any) -> str:
        """The YAML of `namespace` (--print_config) with each secret flag's values as ***, and URL
        credentials and known secrets redacted everywhere else."""
        from pipeline.dataset.storage import redact

        shown = namespace.clone()
        for dest, flag in self.flags.items():
            kind = flag.action.type
            if isinstance(kind, Kind) and kind.secret and shown.get(dest):
                shown[dest] = _redacted(shown[dest])
        return redact(super().dump(shown, *args, **kwargs))


class ConfigFile(jsonargparse.ActionConfigFile):
    """--config FILE: jsonargparse's, with a bad file, key or value one line naming the file."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: str | None = None) -> None:
        where = f"config file {values!r}"
        if os.path.isfile(values) and not Path(values).read_text(errors="replace").strip():
            return  # an empty file: no options (jsonargparse refuses it)
        known = {action.dest for action in parser._actions}
        before = set(vars(cfg))
        try:
            self.apply_config(parser, cfg, self.dest, values)
        except (argparse.ArgumentError, TypeError, ValueError) as e:
            message = _one_line(str(e))
            if "does not exist" in message or "not a valid" in message.lower():
                message = "does not exist or is not a YAML mapping"
            raise argparse.ArgumentError(None, f"{where}: {message}") from None
        unknown = sorted(k for k in set(vars(cfg)) - before - known)
        if unknown:
            raise argparse.ArgumentError(None, f"{where} has unknown keys: {', '.join(unknown)}")


def _config_first(args: list[str]) -> list[str]:
    """`args` with every `--config FILE` moved to the front, in their order: the flags on the command
    line then win over a file wherever it stands (not after `--`, which ends the verb's own flags)."""
    end = args.index("--") if "--" in args else len(args)
    configs: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = args[i]
        if arg == "--config" and i + 1 < end:
            configs += args[i : i + 2]
            i += 2
            continue
        (configs if arg.startswith("--config=") else rest).append(arg)
        i += 1
    return configs + rest + args[end:]


_KEY = re.compile(r'Parser key "([^"]+)":\s*')


_REQUIRED = re.compile(r'Key "([^"]+)" is required but not included in config object')
_BOOLEAN = re.compile(r"(argument \S+: )?Invalid boolean value for environment variable \S+: (.*)", re.S)


def _one_line(message: str) -> str:
    """jsonargparse's message in one line, its `Parser key "steps": ...` as `steps ...`."""
    message = _KEY.sub(lambda m: m.group(1) + " ", message.strip().removeprefix("Validation failed: "))
    if m := _REQUIRED.match(message):  # jsonargparse 4.40's wording
        message = f"the following arguments are required: {m.group(1)}"
    if m := _BOOLEAN.match(message):
        message = f"must be true or false, got {m.group(2).strip()!r}"
    elif message.startswith("Unexpected config"):
        message = "must hold a mapping of option names to values"
    elif message.startswith("Problems parsing config"):
        message = "is not valid YAML: " + message.removeprefix("Problems parsing config").lstrip(" :")
    return " ".join(message.split())


def _redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    key, sep, _ = str(value).partition("=")
    return f"{key}={REDACTED}" if sep else REDACTED


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
    kind = _field_type(field)
    kwargs: dict[str, Any] = {"dest": field.name, "help": flag.help}
    if kind is bool:
        # A switch turns the field's default over: --reverse (False -> True), --no-latent-update (True -> False).
        if field.default and not flag.name:
            raise TypeError(f"option {field.name}: a switch that turns True off needs its flag name (--no-...)")
        kwargs["action"] = "store_false" if field.default else "store_true"
    else:
        kwargs["default"] = field.default
        kwargs["type"] = kind
        if flag.choices is not None:
            kwargs["choices"] = flag.choices
        if flag.metavar is not None:
            kwargs["metavar"] = flag.metavar
    group.add_argument(name, **kwargs)


_FIELD_TYPES: dict[str, type | None] = {"int": int, "float": float, "str": str, "bool": bool}


def _field_type(field: dataclasses.Field) -> type | None:
    """int, float, str or bool from the field's annotation: `int`, `int | None`, ..."""
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    kinds = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
    if len(kinds) != 1 or kinds[0] not in _FIELD_TYPES:
        raise TypeError(f"option {field.name}: a flag of type {annotation!r} is not supported")
    return _FIELD_TYPES[kinds[0]]


def option_values(cls: type, args: Any) -> dict[str, Any]:
    """{field: value} for every field of the dataclass `cls` that `args` has (a flag named like it)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
