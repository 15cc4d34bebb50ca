"""The `pix2video` command: one sub-command per module in `jobs/`.

Every verb module defines `add_arguments(parser)` and `run(args) -> int`, and is also runnable as
`python -m jobs.<verb>` (what `ray job submit -- python -m jobs.run ...` uses).
Any flag can also come from a YAML file given with `--config`, keys spelled like the flags.

This module is the console script's entry, which `pix2video --help` imports alone: what only a verb
needs (its parser's flags, YAML, storage's redaction with fsspec, pyarrow, transformers) is imported
where it is used.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from actors.cluster import interrupt_on_sigterm, reproducible_numerics
from pipeline.errors import Failure, InputError

if TYPE_CHECKING:
    from jobs._flags import FlagRecord, Parser

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "edit": ("jobs.edit", "edit one video (file or folder of frames) with a text prompt"),
    "bench": ("jobs.bench", "measure speed and memory of the editor (schedules side by side); prints JSON"),
    "run": ("jobs.run", "edit every video of a dataset with every prompt on Ray; writes results.parquet"),
    "relabel": ("jobs.relabel", "precompute only: captions, frame counts, depth per video -> labels.parquet"),
    "augment": ("jobs.augment", "make edited copies of a dataset from prompt templates -> augmented.parquet"),
    "demo": ("jobs.demo", "run the whole pipeline on a generated sample dataset with tiny models"),
    "submit": ("jobs.submit", "submit a verb as a Ray job to a cluster and follow its logs"),
    "evaluate": ("jobs.evaluate", "the paper's metrics (CLIP-Text, CLIP-Image, Pixel-MSE) for a finished run"),
    "report": ("jobs.report", "static HTML report of a run: previews, per-frame metric plots, summary"),
    "ablate": ("jobs.ablate", "run the paper's ablation variants on one video; prints and writes Table 1"),
    "train-toy": ("jobs.train_toy", "render the toy world and train its models (the committed --model toy)"),
}


def _load_config(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {path!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"config file {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"config file {path!r} must hold a mapping of flag names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _apply_config(parser: Parser, argv: list[str]) -> None:
    """Turn YAML keys into parser defaults, so flags on the command line still win."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    values = _load_config(known.config)
    unknown = sorted(k for k in values if k not in parser.flags)
    if unknown:
        raise InputError(f"config file {known.config!r} has unknown keys: {', '.join(unknown)}")
    for dest, flag in parser.flags.items():
        if dest in values:
            flag.action.required = False
            values[dest] = _config_value(flag, values[dest], f"config file {known.config!r}")
    parser.set_defaults(**values)


def _config_value(flag: FlagRecord, value: object, where: str) -> object:
    """A config value checked and typed as its flag would be: argparse applies neither `type` nor
    `choices` to defaults, so `steps: 2.5`, `prompt: 123` or `reverse: "no"` would reach the verbs."""
    action = flag.action
    where = f"{where}: {action.dest}"
    if flag.switch:  # --reverse, --overwrite, --no-progress
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false (unquoted), got {value!r}")
        return value
    if flag.appends:
        if isinstance(value, dict) and action.dest == "storage_option":  # nested fsspec options
            return value
        return [_config_scalar(action, v, where) for v in (value if isinstance(value, list) else [value])]
    return _config_scalar(action, value, where)


def _config_scalar(action: argparse.Action, value: object, where: str) -> object:
    if value is None:
        return None
    kind = action.type
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is None:
        if numeric and action.metavar == "N":  # a count written as text on the command line
            value = str(value)
        if not isinstance(value, str):
            raise InputError(f"{where} must be text, got {type(value).__name__} {value!r}; quote it")
        out: object = value
    else:
        name = getattr(kind, "__name__", "value")
        expected = {"int": "a whole number", "float": "a number"}.get(name, f"a {name}")
        if not (isinstance(value, str) or numeric) or (kind is int and isinstance(value, float)):
            raise InputError(f"{where} must be {expected}, got {type(value).__name__} {value!r}")
        try:
            out = kind(value)
        except (TypeError, ValueError, InputError):
            raise InputError(f"{where} must be {expected}, got {value!r}") from None
    if action.choices is not None and out not in action.choices:
        raise InputError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {out!r}")
    return out


def build_parser(verb: str) -> Parser:
    from jobs._flags import Parser

    module_name, help_text = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = Parser(
        prog=f"pix2video {verb}",
        description=(module.__doc__ or help_text).strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="YAML file of option values (keys named like the flags)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run_verb(verb: str, argv: list[str]) -> int:
    """Parse `argv` for `verb`, run it, and turn user errors into one line on stderr."""
    from pipeline.dataset.storage import redact

    reproducible_numerics()  # as in the Ray workers: MKL's reproducible mode
    _quiet_environment()
    interrupt_on_sigterm()  # SIGTERM (timeout, Kubernetes, systemd) stops a verb as Ctrl-C does
    try:
        parser = build_parser(verb)
        _apply_config(parser, argv)
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for handler in logging.getLogger().handlers:  # no URL's password or signature in a log line
            handler.addFilter(_RedactFilter())
        _quiet_libraries()  # after parsing: --help and usage errors do not wait for transformers
        module = importlib.import_module(VERBS[verb][0])
        return int(module.run(args) or 0)
    except InputError as e:
        print(f"pix2video {verb}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"pix2video {verb}: error: {redact(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pix2video {verb}: interrupted", file=sys.stderr)
        return 130


class _RedactFilter(logging.Filter):
    """Log records as `storage.redact` shows text: URL credentials and known secrets become ***."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pipeline.dataset.storage import redact

        message = record.getMessage()
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


def _quiet_environment() -> None:
    """Per-file weight-loading bars and library chatter drown the one progress bar that matters: off,
    in the environment the libraries read when they are first imported."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def _quiet_libraries() -> None:
    """What the environment cannot say, before a verb runs. pyarrow is imported here, not at the top:
    `pix2video --help` imports this module only. (transformers' progress bars need no call: it reads
    HF_HUB_DISABLE_PROGRESS_BARS, set by `_quiet_environment`, when it is first imported.)"""
    # pyarrow's CSV reader starts a C++ thread to catch Ctrl-C while it reads; left running, it is
    # destroyed while the process exits and aborts it (exit 134, "terminate called without an active
    # exception"), a few times in a hundred after a usage error. Our own handlers stop the verb.
    import pyarrow

    pyarrow.enable_signal_handlers(False)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        width = max(len(v) for v in VERBS)
        lines = [f"  {v.ljust(width)}  {h}" for v, (_, h) in VERBS.items()]
        usage = "usage: pix2video VERB [options]   (pix2video VERB --help for a verb's options)\n\nverbs:\n"
        out = sys.stdout if (not argv or argv[0] in ("-h", "--help")) else sys.stderr
        if argv and argv[0] not in ("-h", "--help"):
            print(f"pix2video: unknown verb {argv[0]!r}", file=out)
        print(usage + "\n".join(lines), file=out)
        return 0 if out is sys.stdout else 2
    return run_verb(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
