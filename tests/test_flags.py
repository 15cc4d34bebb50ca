"""Flags made from the option dataclasses (pipeline/options.py, jobs/_flags.py): one source for each
default, type and list of choices, one checker per flag, and the record of every flag a parser has."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from jobs import _common
from jobs._flags import BadValue, Kind, Parser, add_options, option_values, pairs
from jobs.cli import build_parser
from pipeline.dataset.storage import StorageOptions
from pipeline.errors import InputError
from pipeline.method.config import INJECTIONS, SCHEDULES, EditConfig
from pipeline.options import flag_of, option
from pipeline.stages.options import RunOptions

RUN = ["--manifest", "m.csv", "--output", "out"]


def _flagged(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if flag_of(f) is not None]


def test_edit_flags_are_the_config_fields_with_their_defaults() -> None:
    args = build_parser("edit").parse_args(["in.mp4", "-o", "out.mp4", "--prompt", "x"])
    names = [f.name for f in _flagged(EditConfig)]
    assert "steps" in names and "inversion_batch" not in names  # a field without option() has no flag
    for f in _flagged(EditConfig):
        assert getattr(args, f.name) == f.default, f.name
    assert _common.edit_config(args) == EditConfig()


def test_edit_flags_land_in_the_config() -> None:
    argv = ["in.mp4", "-o", "o.mp4", "--prompt", "x", "--steps", "7", "--injection", "prev", "--no-latent-update"]
    argv += ["--reverse", "--update-last-step", "3", "--mask-feather", "2", "--schedule", "sequential"]
    config = _common.edit_config(build_parser("edit").parse_args(argv))
    assert (config.steps, config.injection, config.latent_update, config.reverse) == (7, "prev", False, True)
    assert (config.update_last_step, config.mask_feather, config.schedule) == (3, 2, "sequential")


@pytest.mark.parametrize(("flag", "value"), [("--injection", "anchor+next"), ("--schedule", "fastest")])
def test_choices_come_from_the_method(flag: str, value: str) -> None:
    parser = build_parser("run")
    assert parser.flags[flag[2:]].action.choices == (INJECTIONS if flag == "--injection" else SCHEDULES)
    with pytest.raises(
        InputError, match=re.escape(f"argument {flag}: must be one of ") + f".*, got {re.escape(repr(value))}"
    ):
        parser.parse_args([*RUN, flag, value])


def test_ablate_leaves_out_the_switches_it_varies() -> None:
    flags = build_parser("ablate").flags
    assert "steps" in flags and "injection" not in flags
    assert flags["latent_update"].action.choices == ("both", "on", "off")  # ablate's own flag of that name


def test_run_options_take_every_flag_named_like_a_field() -> None:
    args = build_parser("run").parse_args(RUN)
    opts = _common.run_options(args, StorageOptions())
    for f in _flagged(RunOptions):
        assert getattr(opts, f.name) == f.default, f.name
    argv = [*RUN, "--prefetch", "5", "--max-attempts", "7", "--shots", "off", "--num-editors", "3"]
    argv += ["--precompute-cpus", "0.5", "--precompute-store", "store", "--max-frames", "9", "--overwrite"]
    opts = _common.run_options(build_parser("run").parse_args(argv), StorageOptions())
    assert (opts.prefetch, opts.max_attempts, opts.shots, opts.num_editors) == (5, 7, "off", 3)
    assert (opts.precompute_cpus, opts.precompute_store, opts.max_frames, opts.overwrite) == (0.5, "store", 9, True)
    assert opts.config == EditConfig() and opts.output == "out" and opts.videos_per_call is None


def test_relabel_has_no_editor_flags_and_default_options() -> None:
    parser = build_parser("relabel")
    assert "num_editors" not in parser.flags and "precompute_cpus" in parser.flags
    opts = _common.run_options(parser.parse_args(RUN), StorageOptions())
    assert opts.num_editors is None and opts.prefetch == 2 and opts.config == EditConfig()


def test_the_parser_records_each_flag_as_added() -> None:
    flags = build_parser("run").flags
    assert flags["storage_option"].appends and flags["prompt"].appends and not flags["steps"].appends
    assert flags["reverse"].switch and flags["progress"].switch and not flags["prefetch"].switch
    assert flags["steps"].action.type.name == "int" and flags["negative_prompt"].action.type.name == "str"
    assert flags["guidance_scale"].action.type.name == "float" and flags["reverse"].action.type.name == "bool"
    with pytest.raises(InputError, match="required: --manifest"):
        build_parser("run").parse_args(["--output", "o"])
    assert list(flags)[:2] == ["help", "manifest"]  # in the order they were added


@dataclasses.dataclass
class _Options:
    count: int | None = option(None, metavar="N", help="how many (default %(default)s)")
    ratio: float = option(0.5, help="a share")
    on: bool = option(False, help="a switch")
    off: bool = option(True, flag="--no-off", help="a switch that turns True off")
    plain: int = 3


def test_add_options_reads_the_fields() -> None:
    parser = Parser(prog="t")
    add_options(parser.add_argument_group("g"), _Options)
    assert set(parser.flags) == {"help", "count", "ratio", "on", "off"}
    args = parser.parse_args(["--count", "4", "--on", "--no-off"])
    assert option_values(_Options, args) == {"count": 4, "ratio": 0.5, "on": True, "off": False}
    assert "how many (default None)" in parser.format_help()


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (Kind("int"), [("3", 3), (3, 3), (None, None)], [2.5, "2.5", True, [1], "x"]),
        (Kind("float"), [("0.5", 0.5), (2, 2.0), ("nan", None)], ["x", False, {"a": 1}]),
        (Kind("str"), [("a", "a"), ("", "")], [123, 1.5, True, ["a"]]),
        (Kind("str", counts=True), [("auto", "auto"), (2, "2")], [True, ["a"]]),
        (Kind("bool"), [(True, True), (False, False), ("true", True), ("False", False)], ["no", "yes", 1, 0]),
        (Kind("str", choices=("a", "b")), [("a", "a")], ["c", 1]),
        (Kind("str", repeats=True), [(["a", "b"], ["a", "b"]), ("a", "a")], [[1], {"k": "v"}]),
        (pairs(), [({"k": {"n": 1}}, {"k": {"n": 1}}), (["k=v"], ["k=v"])], [[1], 5]),
    ],
    ids=["int", "float", "str", "count", "bool", "choices", "repeats", "pairs"],
)
def test_one_checker_takes_flag_text_and_yaml_values(kind: Kind, good: list, bad: list) -> None:
    for value, out in good:
        got = kind(value)
        assert got == out or (out is None and got != got), (value, got)  # nan != nan
        assert kind(got) == got or got != got  # what it returned passes again (jsonargparse re-checks)
    for value in bad:
        with pytest.raises(BadValue, match=r"must be .*got"):
            kind(value)


def test_a_switch_from_true_needs_its_flag_name() -> None:
    @dataclasses.dataclass
    class Bad:
        on: bool = option(True, help="nameless")

    with pytest.raises(TypeError, match="--no-"):
        add_options(argparse.ArgumentParser(), Bad)
