"""Flags and plumbing shared by the dataset verbs (run, relabel, augment, demo).

Every flag can also come from the YAML file given with `--config` (keys named like the flags, e.g.
`storage_option: [key=..., secret=...]`, `num_editors: 4`) or a `PIX2VIDEO_<KEY>` variable
(jobs/_flags.py), so credentials can live in a file instead of the shell history. Storage option
values are never printed (`--print_config` writes them as ***). The flags of the method's
options (EditConfig) and of a run's (RunOptions) are made from those dataclasses' fields (jobs/_flags.py).

Modules that import torch (pipeline.models, pipeline.method, pipeline.stages and actors.runner, and
jobs._metrics through CLIP) are imported inside the functions that need them: every verb imports this
module to build its parser, and `pix2video VERB --help` or a usage error must not wait for torch.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from jobs._flags import REDACTED, add_options, option_values, pairs
from jobs._session import connect_ray, shutdown_ray
from pipeline.dataset.storage import StorageOptions, parse_storage_options
from pipeline.errors import InputError

if TYPE_CHECKING:
    from actors.runner import RunSummary
    from pipeline.dataset.manifest import Manifest
    from pipeline.method.config import EditConfig
    from pipeline.models.sizes import ModelSizes
    from pipeline.models.speed import SpeedOptions
    from pipeline.stages.options import RunOptions

log = logging.getLogger(__name__)


def add_io_arguments(parser: argparse.ArgumentParser, *, prompts: bool = True) -> None:
    from pipeline.stages.options import RunOptions

    parser.add_argument(
        "--manifest",
        required=True,
        metavar="URL",
        help="table (.parquet, .csv, .jsonl; local path, s3://, any fsspec URL) with a 'video' column and a "
        "'prompt' column (string or list), optional 'id', 'source_prompt' and label columns; or a folder "
        "or glob of videos (then give --prompt)",
    )
    parser.add_argument("--output", required=True, metavar="URL", help="output folder or prefix (local or s3://)")
    add_options(parser, RunOptions, only=("precompute_store",))
    if prompts:
        parser.add_argument(
            "--prompt",
            action="append",
            default=[],
            metavar="TEXT",
            help="target prompt for every video (repeatable; added to the manifest's prompts); "
            "'{caption}' is replaced by the source prompt",
        )


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("storage (remote URLs only; values are never printed)")
    g.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    g.add_argument("--profile", metavar="NAME", help="AWS credentials profile (default: $AWS_PROFILE)")
    g.add_argument("--anon", action="store_true", help="anonymous access (public buckets)")
    g.add_argument(
        "--storage-option",
        action="append",
        type=pairs(secret=True),  # a mapping in a --config file; --print_config writes its values as ***
        default=[],
        metavar="KEY=VALUE",
        help="any other fsspec option (repeatable), e.g. key=... secret=...; nested values "
        "(client_kwargs) go in a --config file",
    )


def add_model_arguments(parser: argparse.ArgumentParser, *, caption: bool = True) -> None:
    from pipeline.models.names import CAPTION_MODEL_HELP, DEFAULT_MODEL, MODEL_HELP

    g = parser.add_argument_group("models")
    g.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    if caption:
        g.add_argument(
            "--caption-model",
            default=None,
            help=CAPTION_MODEL_HELP + "; default 'tiny' when --model is tiny",
        )
    add_device_arguments(
        g, "the models", "model dtype: float32 reproduces the reference, the others are faster on a GPU"
    )
    g.add_argument(
        "--size",
        metavar="WxH",
        help="working size, sides multiples of the model's VAE factor x 2^(UNet downsamplings) (64 for SD2); "
        "default: the model folder's working size on the short side (model_index.json '_working_size'), "
        "else 512",
    )
    g.add_argument("--max-frames", type=int, metavar="N", help="fail videos longer than N frames (default: no limit)")


def add_device_arguments(group: Any, what: str, dtype_help: str) -> None:
    """--device and --dtype (the models' of a verb, or CLIP's for the metric verbs)."""
    from pipeline.models.names import DTYPES

    group.add_argument("--device", default=None, help=f"torch device for {what} (default: cuda if visible, else cpu)")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help=f"{dtype_help} (default %(default)s)")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The speed switches of the diffusion UNet and VAE (pipeline/models/speed.py): the same frames
    with each on or off, within float-order noise; auto = the device type's default."""
    from pipeline.models.names import ATTENTION_BACKENDS, SWITCHES

    g = parser.add_argument_group(
        "speed (same frames on or off; auto = the device's default: off everywhere until measured on a GPU, "
        "CPU defaults measured in BENCHMARKS.md)"
    )
    g.add_argument(
        "--channels-last",
        default="auto",
        choices=SWITCHES,
        help="UNet and VAE weights in NHWC memory order (cuDNN's fast convolutions); default auto: off on "
        "CPU (no gain measured there) and on CUDA (not yet measured: benchmarks/gpu_check.sh measures it)",
    )
    g.add_argument(
        "--attention",
        default="auto",
        choices=ATTENTION_BACKENDS,
        help="SDPA kernel inside the UNet, the feature injection included: auto = PyTorch's choice (flash "
        "attention where the inputs allow it, which they do in float16/bfloat16 on CUDA); flash, "
        "efficient, cudnn or math force one (an error where it cannot run)",
    )
    g.add_argument(
        "--compile",
        default="auto",
        choices=SWITCHES,
        help="torch.compile the UNet, batches padded to powers of two (one static shape each; the first "
        "call of each size compiles: minutes on a CPU); default auto: off on CPU (the compiling costs more "
        "than it saves there) and on CUDA (not yet measured)",
    )
    g.add_argument(
        "--cuda-graphs",
        default="auto",
        choices=SWITCHES,
        help="replay each compiled shape as a CUDA graph (torch.compile mode reduce-overhead; implies "
        "--compile; torch skips the graphs on a CPU); default auto: off (not yet measured)",
    )


def speed_options(args: argparse.Namespace) -> SpeedOptions:
    """SpeedOptions from the flags of `add_speed_arguments` (its defaults for a verb without them), checked."""
    from pipeline.models.speed import SpeedOptions

    given = {name: value for name, value in option_values(SpeedOptions, args).items() if value is not None}
    speed = SpeedOptions(**given)
    speed.validate()
    return speed


def add_clip_arguments(parser: argparse.ArgumentParser, *, device: bool) -> None:
    """--clip-model (and --device/--dtype for verbs that have no model flags of their own)."""
    from jobs._metrics import add_clip_model_argument

    g = parser.add_argument_group("metrics")
    add_clip_model_argument(g)
    if device:
        add_device_arguments(g, "CLIP", "CLIP's dtype")


def add_edit_arguments(parser: argparse.ArgumentParser, *, switches: bool = True) -> None:
    """The method's options. `switches=False` leaves out --injection and --no-latent-update, for
    `ablate`, which varies them itself. The speed switches come with them (every verb that edits)."""
    from pipeline.method.config import EditConfig

    add_speed_arguments(parser)
    g = parser.add_argument_group("editing (see `pix2video edit --help`)")
    add_options(g, EditConfig, exclude=() if switches else ("injection", "latent_update"))


def add_shots_argument(parser: argparse.ArgumentParser) -> None:
    """--shots for the dataset verbs that edit (run, augment); a manifest's `shots` column wins per clip."""
    from pipeline.stages.options import RunOptions

    add_options(parser, RunOptions, only=("shots",))


def add_cluster_arguments(parser: argparse.ArgumentParser, *, editors: bool = True, precompute: bool = True) -> None:
    g = parser.add_argument_group("Ray")
    g.add_argument(
        "--address",
        default=None,
        help="local (start Ray here, on 127.0.0.1), auto (the running cluster), ray://HEAD:10001 or "
        "HEAD:6379; default: $RAY_ADDRESS if set (submitted jobs), else local",
    )
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    g.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local Ray instance (default: detected)")
    if editors:
        from pipeline.stages.options import MAX_VIDEOS_PER_CALL, RunOptions

        add_options(g, RunOptions, only=("num_editors", "gpus_per_editor", "cpus_per_editor", "prefetch"))
        # Text, not RunOptions.videos_per_call's int: `auto` (None there) or a count, see `videos_per_call`.
        g.add_argument(
            "--videos-per-call",
            default="auto",
            metavar="N",
            help="videos of one size an editor call takes, edited together so short clips share UNet batches "
            "(each video x prompt holds its own feature store). auto (default): 1 with --schedule sequential, "
            f"else videos until frames x prompts reach 2 x --max-batch, at most {MAX_VIDEOS_PER_CALL}. A call's "
            "videos are consecutive in the manifest, never chosen by timing: the same command gives the same pixels",
        )
    if precompute:
        from pipeline.stages.options import RunOptions

        add_options(g, RunOptions, only=("precompute_cpus", "precompute_gpus"))
    g.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="a local Ray instance serves the run's live metrics on http://127.0.0.1:PORT/metrics (Prometheus; "
        "default: a port Ray picks, logged at the start)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# Their debug logs print request headers (the access key id is in every signature): never below INFO.
_STORAGE_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3fs", "fsspec", "urllib3", "gcsfs", "adlfs")


def storage_options(args: argparse.Namespace) -> StorageOptions:
    """StorageOptions from the flags of `add_storage_arguments` (every verb that calls this has them)."""
    for name in _STORAGE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.getLogger(name).getEffectiveLevel(), logging.INFO))

    opts = parse_storage_options(
        endpoint_url=args.endpoint_url,
        profile=args.profile or os.environ.get("AWS_PROFILE"),
        anon=args.anon,
        pairs=args.storage_option,
    )
    # A file from --print_config holds *** for each value: as a credential it would fail at the first request.
    left_out = [key for key, value in opts.extra.items() if _holds_redacted(value)]
    if left_out:
        raise InputError(
            f"storage option {left_out[0]!r} is {REDACTED!r}, as --print_config writes a value it leaves out: "
            "give the real value (in the config file, or with --storage-option KEY=VALUE)"
        )
    return opts


def _holds_redacted(value: object) -> bool:
    if isinstance(value, dict):
        return any(_holds_redacted(v) for v in value.values())
    return value == REDACTED


def edit_config(args: argparse.Namespace, **overrides: Any) -> EditConfig:
    """EditConfig from the flags of `add_edit_arguments` (each named like its field); `overrides` for
    fields a verb sets itself (ablate: the injection and the latent update, which its own flags vary)."""
    from pipeline.method.config import EditConfig

    cfg = EditConfig(**(option_values(EditConfig, args) | overrides))
    cfg.validate()
    return cfg


def caption_model(args: argparse.Namespace) -> str:
    from pipeline.models.names import BUILTIN, DEFAULT_CAPTION_MODEL

    if args.caption_model:  # every verb that captions has add_model_arguments' --caption-model
        return args.caption_model
    return args.model if args.model in BUILTIN else DEFAULT_CAPTION_MODEL


def model_sizes(model: str) -> ModelSizes:
    """The `--model`'s VAE factor, size multiple and working size (`pipeline.models.sizes.ModelSizes`),
    from its config files: no weights are loaded, so a bad --size fails in seconds."""
    from pipeline.models.registry import resolve_model
    from pipeline.models.sizes import read_model_sizes

    return read_model_sizes(resolve_model(model))


def parse_size(text: str | None, model: str | None = None) -> tuple[int, int] | None:
    """--size as (width, height), sides multiples of the model's size multiple (SD2's 64 without
    `model`); None when not given."""
    if not text:
        return None
    if model is not None:
        return model_sizes(model).parse_size(text)
    from pipeline.io.frames import parse_size as parse

    return parse(text)


def check_positive(name: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):  # NaN passes every comparison
        raise InputError(f"--{name} must be {'at least 0' if allow_zero else 'positive'}, got {value}")
    if value >= 2**31:  # counts the tables store as int32, shares and CPUs no machine has
        raise InputError(f"--{name} {value} is out of range (at most {2**31 - 1})")


def videos_per_call(value: object) -> int | None:
    """--videos-per-call (flag text or a --config value): a positive count, or None for auto."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--videos-per-call must be 'auto' or a positive number, got {value!r}")
    return n


def run_options(args: argparse.Namespace, opts: StorageOptions) -> RunOptions:
    """RunOptions from the parsed flags (shared by run, relabel and augment): every flag named like one
    of its fields fills that field (a verb without the flag leaves the field's default); the fields
    below are made from flags of another form."""
    from jobs import _metrics
    from pipeline.stages.options import RunOptions

    given = option_values(RunOptions, args)  # the fields this verb has flags for (relabel: no editors)
    for name in ("num_editors", "max_frames", "prefetch", "max_attempts"):
        check_positive(name.replace("_", "-"), given.get(name))
    # A local Ray instance's size: --num-cpus 0 named here, not blamed on --precompute-cpus later.
    check_positive("num-cpus", getattr(args, "num_cpus", None))
    check_positive("num-gpus", getattr(args, "num_gpus", None), allow_zero=True)
    for name in ("gpus_per_editor", "cpus_per_editor", "precompute_cpus", "precompute_gpus"):
        check_positive(name.replace("_", "-"), given.get(name), allow_zero=True)
    if getattr(args, "metrics_port", None) is not None:  # before anything is written: one line, exit 2
        from actors.metrics import check_metrics_port

        check_metrics_port(args.metrics_port, args.address or os.environ.get("RAY_ADDRESS"))
    made = {  # in this order: a command with several bad values is refused for the first
        "caption_model": caption_model(args),
        "config": edit_config(args),  # `args.config` is the --config file, not the method's options
        "size": parse_size(args.size, args.model),
        "videos_per_call": videos_per_call(given.get("videos_per_call")),
        "storage": opts,
        "clip_model": _metrics.clip_model(args) if _metrics.wants_metrics(args) else None,
        "speed": speed_options(args),
        "precompute_store": given.get("precompute_store") or None,  # an empty URL: the default place
        "shots": given.get("shots") or RunOptions.shots,  # `shots: null` in a --config file: the default
    }
    return RunOptions(**(given | made))


def execute(
    args: argparse.Namespace,
    manifest: Manifest,
    run_opts: RunOptions,
    verb: str,
    *,
    session: RaySession | None = None,
) -> tuple[RunSummary, list[str]]:
    """Run the dataset (run, augment, demo), connecting to Ray only when there is work; print the
    summary; then, with --metrics or a filter bound, score what the editors did not (on the same Ray
    connection). Disconnects if Ray was started here, unless the caller's `session` (several runs on
    one Ray instance: the demo) owns the connection. Returns (RunSummary, keys filtered)."""
    from actors.runner import run_dataset
    from jobs import _metrics

    if session is not None:
        summary = run_dataset(manifest, run_opts, connect=session.connect)
        print_summary(verb, summary)
        return summary, _metrics.after_run(args, run_opts.storage, verb, connect=session.connect)

    started = False

    def connect() -> None:
        nonlocal started
        if not started:
            started = connect_ray(args)

    try:
        summary = run_dataset(manifest, run_opts, connect=connect)
        print_summary(verb, summary)
        filtered = _metrics.after_run(args, run_opts.storage, verb, connect=connect)
        return summary, filtered
    finally:
        shutdown_ray(started)


class RaySession:
    """One Ray connection for several runs (the demo's two): made as the flags say when the first run
    has work, closed (a local instance stopped) by `close`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.connected, self.started = args, False, False

    def connect(self) -> None:
        if not self.connected:
            self.started, self.connected = connect_ray(self.args), True

    def close(self) -> None:
        shutdown_ray(self.started)
        self.connected = self.started = False


def print_summary(verb: str, summary: RunSummary) -> None:
    idle = "" if summary.editor_idle_share is None else f", editors idle {summary.editor_idle_share:.1%} once warm"
    print(
        f"pix2video {verb}: {summary.ok} of {summary.total} videos x prompts ok, {summary.failed} failed "
        f"({summary.skipped} done before this run) in {summary.seconds:.1f} s, "
        f"{summary.frames_per_second:.2f} frames/s{idle}"
    )
    print(f"results: {summary.results}")
    if summary.failed:
        print("failed rows have status 'failed' and the reason in 'error'; rerun the same command to retry them")


def main_for(verb: str) -> None:
    """`python -m jobs.<verb> ...` (what `ray job submit -- python -m jobs.run ...` runs)."""
    from jobs.cli import run_verb

    sys.exit(run_verb(verb, sys.argv[1:]))
