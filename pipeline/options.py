"""Options that are also command-line flags: the field of an options dataclass says what its flag says.

    steps: int = option(50, help="DDIM steps (default %(default)s)")

`option(default, help=..., flag=..., choices=..., metavar=...)` is a `dataclasses.field` whose metadata
holds a `Flag`: the help text, the flag's name where it is not `--<field-name>` (a switch that turns a
True default off, e.g. `--no-latent-update`), the allowed values and the metavar. The command line
(jobs/_flags.py) makes each flag from its field, so a default, its type and its list of choices are
written once, beside the option itself; a `--config` file's keys are the field names, and so are the
environment variables' (`PIX2VIDEO_<FIELD>`, upper-cased). Help texts may say `%(default)s`, which the
help shows as the field's default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FLAG = "pix2video.flag"  # the metadata key


@dataclass(frozen=True)
class Flag:
    """What a field's flag says besides its default and type (those are the field's)."""

    help: str
    name: str | None = None  # None: --<field name, underscores as dashes>
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None


def option(
    default: Any,
    *,
    help: str,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with `default` that is also a flag (see the module's docstring)."""
    spec = Flag(help=help, name=flag, choices=tuple(choices) if choices is not None else None, metavar=metavar)
    return dataclasses.field(default=default, metadata={FLAG: spec})


def flag_of(field: dataclasses.Field) -> Flag | None:
    """The `Flag` of a field made with `option`, else None."""
    return field.metadata.get(FLAG)
