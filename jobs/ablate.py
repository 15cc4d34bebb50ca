"""Run the paper's ablations on one video and print Table 1: the three metrics per variant.

    pix2video ablate clip.mp4 --prompt "a car made of lego" -o ablation/
    pix2video ablate clip.mp4 --prompt "..." --injections anchor+prev,none --latent-update on

Variants (docs/METHOD.md, "Ablation switches"; paper Fig. 5 and Table 1): self-attention injection from
anchor + previous frame (the method), anchor only, previous only, anchor + a random earlier frame, or
none (per-frame editing), each with the latent update on and off; then the paper's per-frame baseline,
SDEdit at --sdedit-strength (0.8), every frame noised with fresh noise and denoised on its own. The
models are loaded, the input prepared (depth, caption) and inverted once; only the editing runs per
variant.

Writes to OUTDIR: one mp4 per variant, and the table as table.csv, table.md and table.json (with the
settings and per-frame values). The first row is the input video itself, the baseline.

Tiny models (--model tiny, --clip-model tiny) give noise-like pictures and meaningless metric values:
use them to test the command, not to read the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from jobs import _common
from jobs._input import complete_input, read_input
from jobs._metrics import TINY_NOTE, add_clip_model_argument, clip_model
from pipeline.errors import InputError
from pipeline.method.config import INJECTIONS  # the paper's order, the method first
from pipeline.models.names import TINY
from pipeline.models.registry import resolve_model
from pipeline.quality.names import METRIC_NAMES, METRIC_TITLES

if TYPE_CHECKING:
    from pipeline.quality.metrics import Metrics

# The editor (diffusers), video writing (PyAV) and the toy world are imported where they are used:
# `pix2video ablate --help` and a usage error do not wait for them.

log = logging.getLogger(__name__)
INPUT_LABEL = "input video"
SDEDIT_STRENGTH = 0.8  # the paper's per-frame SDEdit baseline (diffusers' depth2img default strength too)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="VIDEO", nargs="?", help="video file or folder of frames")
    parser.add_argument("--prompt", metavar="TEXT", help="target prompt (required with VIDEO)")
    parser.add_argument(
        "--toy-clips",
        type=int,
        metavar="N",
        help="instead of VIDEO: N held-out toy-world clips (--model toy), each with a colour and a texture edit of "
        "its largest object, scored also against the ground truth (edit accuracy, mask IoU, warp error with the "
        "true flow, PSNR outside the object)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="ablation",
        metavar="OUTDIR",
        help="folder for the videos and tables (default ablation/)",
    )
    parser.add_argument(
        "--source-prompt", metavar="TEXT", help="what the input shows (default: a caption of the anchor frame)"
    )
    parser.add_argument("--depth", metavar="DIR", help="folder with one <frame stem>.npy raw depth map per frame")
    v = parser.add_argument_group("variants")
    v.add_argument(
        "--injections",
        default=",".join(INJECTIONS),
        metavar="LIST",
        help=f"comma-separated injection variants (default all: {','.join(INJECTIONS)})",
    )
    v.add_argument(
        "--latent-update",
        default="both",
        choices=("both", "on", "off"),
        help="latent update variants (default both)",
    )
    v.add_argument(
        "--sdedit-strength",
        type=float,
        default=SDEDIT_STRENGTH,
        metavar="S",
        help="the paper's per-frame baseline as one more row: SDEdit, each frame noised to strength S with fresh "
        f"noise from --seed and denoised alone with the prompt (default {SDEDIT_STRENGTH:g}; 0 leaves the row out)",
    )
    _common.add_model_arguments(parser)
    _common.add_edit_arguments(parser, switches=False)
    m = parser.add_argument_group("metrics")
    add_clip_model_argument(m)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


@dataclass
class Variant:
    injection: str
    latent_update: bool

    @property
    def label(self) -> str:
        return f"{self.injection}, {'update' if self.latent_update else 'no update'}"

    @property
    def slug(self) -> str:
        return f"{self.injection.replace('+', '-')}__{'update' if self.latent_update else 'no-update'}"


def variants(injections: str, latent_update: str) -> list[Variant]:
    """The grid the flags ask for, in the paper's order (injection first, update on before off)."""
    names = [n.strip() for n in injections.split(",") if n.strip()]
    bad = [n for n in names if n not in INJECTIONS]
    if bad or not names:
        raise InputError(f"--injections {injections!r}: give a comma-separated list of {', '.join(INJECTIONS)}")
    updates = {"both": (True, False), "on": (True,), "off": (False,)}[latent_update]
    return [Variant(n, u) for n in dict.fromkeys(names) for u in updates]


def sdedit_strength(value: float) -> float | None:
    """--sdedit-strength: the SDEdit row's strength, or None (0: no such row)."""
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise InputError(f"--sdedit-strength must be between 0 and 1 (0 leaves the SDEdit row out), got {value:g}")
    return value or None


def sdedit_label(strength: float) -> str:
    return f"per-frame SDEdit (strength {strength:g})"


def table_rows(results: list[tuple[str, Metrics]]) -> list[dict[str, Any]]:
    return [{"variant": label, **m.row()} for label, m in results]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["variant", *METRIC_NAMES], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| Variant | " + " | ".join(METRIC_TITLES[n] for n in METRIC_NAMES) + " |",
        "|---|" + "---:|" * len(METRIC_NAMES),
    ]
    from pipeline.quality.metrics import format_value

    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(format_value(n, r.get(n)) for n in METRIC_NAMES) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from pipeline.io.video import write_output
    from pipeline.method.editor import Pix2Video
    from pipeline.models import loading
    from pipeline.quality.clip import ClipScorer
    from pipeline.quality.flow import input_flows
    from pipeline.quality.metrics import format_table, video_metrics

    if args.toy_clips is not None:
        if args.input or args.prompt:
            raise InputError("--toy-clips replaces VIDEO and --prompt (each toy clip has its own edit): give one")
        _common.check_positive("toy-clips", args.toy_clips)
        return run_toy(args)
    if not args.input or args.prompt is None:
        raise InputError("give a VIDEO and --prompt, or --toy-clips N for the toy world's held-out clips")
    if not args.prompt.strip():
        raise InputError("--prompt is empty: say what the video should become")
    grid = variants(args.injections, args.latent_update)
    sdedit = sdedit_strength(args.sdedit_strength)
    base = _common.edit_config(args, injection="anchor+prev", latent_update=True)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"-o {args.output}: exists and is not a folder; give a folder for the ablation outputs")
    started = time.perf_counter()
    data = read_input(args)  # the cheap, checkable part first (as `edit` does)
    # Every model before any long work, so a wrong --model or --clip-model fails in seconds.
    speed = _common.speed_options(args)
    # Through the module: tests replace it to check that bad input is refused before any model loads.
    models = loading.load_diffusion_models(resolve_model(args.model), dtype=args.dtype, device=args.device, speed=speed)
    scorer = ClipScorer.from_model(clip_model(args), device=models.device)
    complete_input(data, args, device=models.device, dtype=args.dtype)
    editor = Pix2Video(models)
    height, width = data.frames.shape[1:3]
    n = len(data.frames)
    video = editor.prepare(data.frames, data.depth)
    zT = editor.invert(video, data.source_prompt, base)  # once: it does not depend on the variant
    flows = input_flows(data.frames, width, height)  # once: Pixel-MSE warps every variant with the input's flow
    results: list[tuple[str, Metrics]] = [(INPUT_LABEL, video_metrics(data.frames, args.prompt, scorer, flows=flows))]
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    settings: dict[str, dict[str, Any]] = {}
    def add_row(label: str, slug: str, latents: Any, setting: dict[str, Any]) -> None:
        frames = list(editor.decode(latents, base.decode_batch))
        path = write_output(out_dir / f"{slug}.mp4", frames, data.fps, data.names)
        results.append((label, video_metrics(np.stack(frames), args.prompt, scorer, flows=flows)))
        outputs[label] = path.name
        settings[label] = setting

    for v in grid:
        cfg = replace(base, injection=v.injection, latent_update=v.latent_update)
        bar = tqdm(total=n, unit="frame", desc=v.label, disable=not args.progress)
        (latents,) = editor.edit(video, zT, [args.prompt], cfg, on_frame_done=lambda _j, _f, bar=bar: bar.update())
        bar.close()
        add_row(v.label, v.slug, latents, {"injection": v.injection, "latent_update": v.latent_update})
    if sdedit is not None:  # the paper's per-frame baseline: no inversion, fresh noise per frame
        (latents,) = editor.sdedit(video, [args.prompt], base, strength=sdedit)
        add_row(sdedit_label(sdedit), "sdedit", latents, {"sdedit_strength": sdedit})

    title = f"Ablation on {Path(args.input).name} ({n} frames, {width}x{height}): {args.prompt!r}"
    rows = table_rows(results)
    print(format_table(results, title=title))
    (out_dir / "table.csv").write_text(to_csv(rows), encoding="utf-8")
    (out_dir / "table.md").write_text(to_markdown(rows, title), encoding="utf-8")
    report = {
        "input": str(args.input),
        "prompt": args.prompt,
        "source_prompt": data.source_prompt,
        "model": args.model,
        "clip_model": clip_model(args),
        "size": [width, height],
        "num_frames": n,
        "config": {k: v for k, v in asdict(base).items() if k not in ("injection", "latent_update")},
        "rows": [
            {
                **row,
                "output": outputs.get(row["variant"]),
                **settings.get(row["variant"], {}),
                "per_frame": m.to_dict()["per_frame"],
            }
            for row, (_, m) in zip(rows, results, strict=True)
        ],
    }
    (out_dir / "table.json").write_text(json.dumps(report, indent=1, allow_nan=False), encoding="utf-8")
    seconds = time.perf_counter() - started
    print(f"wrote {out_dir}/table.csv, table.md, table.json and {len(outputs)} videos ({seconds:.1f} s)")
    if clip_model(args) == TINY or args.model == TINY:
        print(TINY_NOTE + " (and tiny diffusion models give noise-like pictures)")
    return 0


def run_toy(args: argparse.Namespace) -> int:
    """The ablation table over held-out toy clips, with the ground-truth columns."""
    from pipeline.method.editor import Pix2Video
    from pipeline.models import loading
    from pipeline.models.depth import DepthEstimator
    from pipeline.quality.clip import ClipScorer
    from toyworld.benchmark import ATTRIBUTES, BENCH_SEED, VARIANTS, Variant, markdown_table, summarise, toy_ablation
    from toyworld.texture import find_reader

    wanted = {(v.injection, v.latent_update) for v in variants(args.injections, args.latent_update)}
    grid = [v for v in VARIANTS if v.sdedit_strength is None and (v.injection, v.latent_update) in wanted]
    sdedit = sdedit_strength(args.sdedit_strength)
    if sdedit is not None:  # the per-frame SDEdit baseline, one more row
        grid.append(Variant(sdedit_label(sdedit), "none", False, sdedit_strength=sdedit))
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"-o {args.output}: exists and is not a folder; give a folder for the ablation outputs")
    started = time.perf_counter()
    speed = _common.speed_options(args)
    models = loading.load_diffusion_models(resolve_model(args.model), dtype=args.dtype, device=args.device, speed=speed)
    scorer = ClipScorer.from_model(clip_model(args), device=models.device)
    depth = DepthEstimator.from_model(args.model, device=models.device)
    editor = Pix2Video(models)
    # The texture reader of the toy measures (a folder's texture/, or none: texture edits then get the
    # paper's metrics only).
    reader = find_reader(resolve_model(args.model))
    seeds = range(BENCH_SEED, BENCH_SEED + args.toy_clips)
    bar = tqdm(total=len(seeds) * len(ATTRIBUTES), unit="edit", desc="toy ablation", disable=not args.progress)
    base = _common.edit_config(args, injection="anchor+prev", latent_update=True)
    rows = toy_ablation(
        editor,
        seeds,
        depth=depth,
        scorer=scorer,
        config=base,
        variants=grid,
        reader=reader,
        on_clip=lambda *_: bar.update(),
    )
    bar.close()
    tables, summaries = [], {}
    for edit in ATTRIBUTES:
        summaries[edit] = summarise(rows, edit)
        title = (
            f"Ablation on {len(seeds)} held-out toy clips ({edit} edit of one object; {base.steps} steps, "
            f"guidance {base.guidance_scale:g}, update weight {base.update_weight:g})"
        )
        tables.append(markdown_table(summaries[edit], title))
    table = "\n".join(tables)
    print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(table, encoding="utf-8")
    report = {"model": args.model, "clip_model": clip_model(args), "config": asdict(base)}
    report.update(summary=summaries, rows=rows)
    (out_dir / "table.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"wrote {out_dir}/table.md and table.json ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    _common.main_for("ablate")
