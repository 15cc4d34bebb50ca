"""The quality-metric flags and printouts shared by the verbs (run, augment, edit, evaluate, report,
ablate, demo). The work is below: actors/evaluation.py (a run's metrics), pipeline/quality (the math).

Ray (actors.evaluation), pyarrow's tables and PyAV are imported in the functions that use them: the verbs
import this module to build their parsers, and `--help` or a usage error does not wait for them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from jobs import _session
from pipeline.dataset.storage import StorageOptions
from pipeline.models.names import BUILTIN, CLIP_MODEL_HELP, DEFAULT_CLIP_MODEL, TINY

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from actors.evaluation import Evaluation
    from pipeline.quality.clip import ClipScorer

TINY_NOTE = "note: the tiny CLIP gives meaningless metric values; they only show that the code runs"
CLIP_DEFAULT_NOTE = "; default 'tiny' when --model is tiny"
RUN_METRICS_HELP = (
    "score every clip as it is written (in the editor actors) and add columns clip_text, clip_image, "
    "pixel_mse (and input_* baselines) to results.parquet"
)
EDIT_METRICS_HELP = "print CLIP-Text, CLIP-Image and Pixel-MSE of the written output, and of the input as the baseline"


def clip_model(args: argparse.Namespace) -> str:
    """--clip-model, else the tiny or toy CLIP for tiny or toy runs (offline) and the real one otherwise."""
    if args.clip_model:  # every verb that scores has --clip-model
        return args.clip_model
    model = getattr(args, "model", None)  # evaluate and report have no --model
    return model if model in BUILTIN else DEFAULT_CLIP_MODEL


def add_clip_model_argument(group: Any) -> None:
    group.add_argument("--clip-model", default=None, help=CLIP_MODEL_HELP + CLIP_DEFAULT_NOTE)


def add_metrics_arguments(
    parser: argparse.ArgumentParser, *, filtering: bool = False, metrics_help: str = RUN_METRICS_HELP
) -> None:
    """--metrics and --clip-model (run, augment, edit), and the filter bounds (augment)."""
    g = parser.add_argument_group("quality metrics (see `pix2video evaluate --help`)")
    g.add_argument("--metrics", action="store_true", help=metrics_help)
    add_clip_model_argument(g)
    if filtering:
        g.add_argument(
            "--min-clip-text",
            type=float,
            metavar="X",
            help="mark clips with CLIP-Text below X as 'filtered': kept on disk, left out of augmented.parquet "
            "(implies --metrics)",
        )
        g.add_argument(
            "--max-pixel-mse",
            type=float,
            metavar="Y",
            help="mark clips with Pixel-MSE above Y as 'filtered' (implies --metrics)",
        )


def wants_metrics(args: argparse.Namespace) -> bool:
    """--metrics, or a filter bound (which needs them)."""
    bounds = (getattr(args, "min_clip_text", None), getattr(args, "max_pixel_mse", None))
    return bool(getattr(args, "metrics", False)) or any(b is not None for b in bounds)


def print_evaluation(verb: str, ev: Evaluation) -> None:
    from pipeline.dataset.stored_metrics import summary_rows
    from pipeline.dataset.tables import METRIC_COLUMNS
    from pipeline.quality.metrics import format_table

    scored = ev.computed + ev.reused
    print(
        f"pix2video {verb}: metrics for {scored} clips ({ev.computed} computed, {ev.reused} up to date), "
        f"CLIP model {ev.clip_model}"
    )
    if ev.unreadable:
        print(f"{len(ev.unreadable)} clips could not be read and have no metrics: {', '.join(ev.unreadable[:5])}")
    print(format_table(summary_rows(ev.table)))
    print(f"results: {ev.results} (columns {', '.join(METRIC_COLUMNS)})")
    if ev.clip_model == TINY:
        print(TINY_NOTE)


def evaluate(args: argparse.Namespace, opts: StorageOptions, verb: str, *, overwrite: bool = False) -> Evaluation:
    """`evaluate` and `report --metrics`: score what is left of the run in args.output on Ray (a local
    instance is started only when some clip needs scoring, and stopped after), then print the result."""
    from actors.evaluation import evaluate_run

    started = False

    def connect() -> None:
        nonlocal started
        started = _session.connect_ray(args)

    try:
        ev = evaluate_run(
            args.output,
            opts,
            clip_model=clip_model(args),
            device=args.device,
            dtype=args.dtype,
            overwrite=overwrite,
            progress=args.progress,
            connect=connect,
        )
    finally:
        _session.shutdown_ray(started)
    print_evaluation(verb, ev)
    return ev


def after_run(
    args: argparse.Namespace, opts: StorageOptions, verb: str, connect: Callable[[], object] | None = None
) -> list[str]:
    """For `run`/`augment`/`demo` after the dataset is done: with --metrics (or a bound), score what the
    editors did not, apply --min-clip-text/--max-pixel-mse, print what happened. Returns the keys filtered."""
    from actors.evaluation import score_run

    if not wants_metrics(args):
        return []
    min_ct, max_mse = getattr(args, "min_clip_text", None), getattr(args, "max_pixel_mse", None)
    ev = score_run(
        args.output,
        opts,
        clip_model=clip_model(args),
        min_clip_text=min_ct,
        max_pixel_mse=max_mse,
        progress=args.progress,  # run, augment and demo's runs all have --no-progress
        connect=connect,
    )
    print_evaluation(verb, ev)
    if min_ct is not None or max_mse is not None:
        bounds = [
            f"CLIP-Text < {min_ct}" if min_ct is not None else "",
            f"Pixel-MSE > {max_mse}" if max_mse is not None else "",
        ]
        print(
            f"filtered: {len(ev.filtered)} clips ({' or '.join(b for b in bounds if b)}); status 'filtered' in "
            "results.parquet, their videos kept on disk"
        )
    return ev.filtered


def scorer_for(args: argparse.Namespace, device: Any = None) -> ClipScorer | None:
    """The CLIP scorer when --metrics was given (loaded before the editing, so a bad --clip-model fails fast)."""
    from pipeline.quality.clip import ClipScorer

    return ClipScorer.from_model(clip_model(args), device=device) if args.metrics else None


def print_edit_metrics(output_path: str, input_frames: np.ndarray, prompt: str, scorer: ClipScorer) -> None:
    """Score the output as written (after encoding: what the user gets) against the input frames."""
    from pipeline.io.video import read_frames
    from pipeline.quality.metrics import edit_metrics, format_table

    edit, base = edit_metrics(read_frames(output_path).frames, input_frames, prompt, scorer)
    print(format_table([("edit", edit), ("input video (baseline)", base)], title=f"metrics (CLIP {scorer.source})"))
    if scorer.source == TINY:
        print(TINY_NOTE)
