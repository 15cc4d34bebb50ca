"""The `pix2video` command: one sub-command per module in `jobs/`.

Every verb module defines `add_arguments(parser)` and `run(args) -> int`, and is also runnable as
`python -m jobs.<verb>` (what `ray job submit -- python -m jobs.run ...` uses).
Any flag can also come from a YAML file given with `--config` (keys named like the flags' destinations,
`--print_config` writes one) or from an environment variable `PIX2VIDEO_<KEY>`: the parser is
jsonargparse's (jobs/_flags.py).

This module is the console script's entry, which `pix2video --help` imports alone: what only a verb
needs (its parser's flags, YAML, storage's redaction with fsspec, pyarrow, transformers) is imported
where it is used.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING

from actors.cluster import interrupt_on_sigterm, reproducible_numerics
from pipeline.errors import Failure, InputError

if TYPE_CHECKING:
    from jobs._flags import Parser

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


def build_parser(verb: str) -> Parser:
    from jobs._flags import Parser

    module_name, help_text = VERBS[verb]
    module = importlib.import_module(module_name)
    parser = Parser(prog=f"pix2video {verb}", description=(module.__doc__ or help_text).strip(), epilog=_EPILOG)
    module.add_arguments(parser)
    parser.add_config_argument()
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


_EPILOG = """\
Every option can also come from a --config YAML file (keys: the long flag without its dashes, inner
dashes as underscores: guidance_scale, num_editors; a switch's key holds its value: latent_update: false
for --no-latent-update) or from an environment variable PIX2VIDEO_<KEY> in capitals (PIX2VIDEO_STEPS=20,
PIX2VIDEO_LATENT_UPDATE=false). Flags beat config files, config files beat the environment.
"""


def run_verb(verb: str, argv: list[str]) -> int:
    """Parse `argv` for `verb`, run it, and turn user errors into one line on stderr."""
    from pipeline.dataset.storage import redact

    reproducible_numerics()  # as in the Ray workers: MKL's reproducible mode
    _quiet_environment()
    interrupt_on_sigterm()  # SIGTERM (timeout, Kubernetes, systemd) stops a verb as Ctrl-C does
    try:
        args = build_parser(verb).parse_args(argv)
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
