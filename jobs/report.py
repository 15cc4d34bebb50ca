"""Write a static HTML report of a finished run: OUTPUT/report/index.html (opens from disk, no server).

    pix2video report OUTPUT                      # metrics shown where `evaluate`/`--metrics` computed them
    pix2video report OUTPUT --metrics            # compute missing metrics first (as `pix2video evaluate`)

The page has a summary table of the run (clips by status, mean metrics of the edits and of the input
videos, seconds per stage), a table of every clip, and per clip the input and the edit side by side as
an animated GIF (plays in any browser or image viewer) with per-frame metric plots (PNG). Every link is
relative, so the folder can be copied or zipped as is. For an s3:// OUTPUT the report is written to
--report-dir if given, else built locally and uploaded to OUTPUT/report/.

Tiny models (--model tiny) give noise-like pictures, and metric values from the tiny CLIP
(--clip-model tiny) are meaningless: such a report only shows that the pipeline runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import _common, evaluate
from pipeline.errors import InputError
from pipeline.quality.metrics import METRIC_NAMES, METRIC_TITLES, PLOT_TITLES, format_value

if TYPE_CHECKING:
    import numpy as np

    from actors.storage import StorageOptions

log = logging.getLogger(__name__)

REPORT_DIR = "report"
ASSETS = "assets"
INDEX = "index.html"
STATUS_ORDER = ("ok", "filtered", "failed")
TINY_WARNING = (
    "Tiny models (--model tiny) give noise-like pictures, and metric values from the tiny CLIP "
    "(--clip-model tiny) are meaningless except as a test that everything runs."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="output folder or URL of a finished run/augment")
    parser.add_argument(
        "--report-dir",
        metavar="DIR",
        help="local folder for the report (default OUTPUT/report; for s3:// outputs: built here and uploaded)",
    )
    parser.add_argument(
        "--metrics", action="store_true", help="compute missing metrics first (as `pix2video evaluate`)"
    )
    evaluate.add_clip_arguments(parser, device=True)
    g = parser.add_argument_group("previews")
    g.add_argument("--preview-height", type=int, default=192, metavar="PX", help="height of the previews (default 192)")
    g.add_argument(
        "--preview-frames", type=int, default=48, metavar="N", help="frames per preview, from the start (default 48)"
    )
    g.add_argument(
        "--max-clips",
        type=int,
        default=200,
        metavar="N",
        help="clips shown in detail (default 200; all are in the table)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _common.add_storage_arguments(parser)


# ------------------------------------------------------------------------------------ previews


def preview_gif(
    input_frames: np.ndarray | None, output_frames: np.ndarray, fps: float, path: Path, *, height: int, max_frames: int
) -> Path:
    """Animated GIF: input | edit side by side (input resized to the edit's size), `height` pixels high."""
    import numpy as np
    from PIL import Image

    from pipeline.io.frames import resize_frames

    out = output_frames[:max_frames]
    h, w = out.shape[1:3]
    panels = [out]
    if input_frames is not None:
        panels.insert(0, resize_frames(input_frames[: len(out)], w, h))
        if len(panels[0]) < len(out):  # shorter input (should not happen): hold its last frame
            pad = np.repeat(panels[0][-1:], len(out) - len(panels[0]), axis=0)
            panels[0] = np.concatenate([panels[0], pad])
    gap = np.full((len(out), h, max(2, w // 32), 3), 255, dtype=np.uint8)
    strip = np.concatenate([panels[0], gap, panels[1]], axis=2) if len(panels) == 2 else out
    scale = height / h
    size = (max(1, round(strip.shape[2] * scale)), max(1, round(h * scale)))
    images = [Image.fromarray(f).resize(size, Image.BICUBIC) for f in strip]
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(20, round(1000 / fps)) if fps and fps > 0 else 125
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return path


# ------------------------------------------------------------------------------------ the page


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _num(value: Any, name: str) -> str:
    v = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)
    return format_value(name, v)


def _link(path: str, label: str) -> str:
    return f'<a href="{_e(path)}">{_e(label)}</a>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0; }
.meta { color: #666; margin-top: 4px; }
.warn { background: #fff4d6; border: 1px solid #e0c060; padding: 8px 12px; margin: 12px 0; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.input { color: #777; }
.clip { border-top: 1px solid #ddd; padding: 12px 0; }
.clip img { display: block; margin: 6px 0; max-width: 100%; }
.status-ok { color: #1a7f37; } .status-failed { color: #c62828; } .status-filtered { color: #b26a00; }
.error { font-family: monospace; color: #c62828; white-space: pre-wrap; }
"""


def render_page(
    *,
    output: str,
    rows: list[dict[str, Any]],
    clips: dict[str, dict[str, Any]],
    clip_models: set[str],
    generated: str,
) -> str:
    """The HTML. `clips[key]` has 'preview' and 'plot' (paths relative to the page, or None) and 'link'."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("status") or "?"] = counts.get(r.get("status") or "?", 0) + 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pix2video report: {_e(os.path.basename(output.rstrip('/')) or output)}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>pix2video report</h1>",
        f'<p class="meta">run: <code>{_e(output)}</code> · generated {_e(generated)}</p>',
    ]
    if "tiny" in clip_models:
        parts.append(f'<p class="warn"><b>Metrics from the tiny CLIP.</b> {_e(TINY_WARNING)}</p>')

    # Summary of the run.
    summary = evaluate.summary_rows(_table(rows))
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else len(STATUS_ORDER), s))
    parts.append('<h2>Summary</h2><table id="summary"><tr><th>status</th>')
    parts.append("".join(f"<th>{_e(s)}</th>" for s in order) + "<th>total</th></tr><tr><td>clips</td>")
    parts.append("".join(f'<td class="num">{counts[s]}</td>' for s in order))
    parts.append(f'<td class="num">{len(rows)}</td></tr></table>')
    parts.append('<table id="metrics-summary"><tr><th></th>')
    parts.append("".join(f"<th>{_e(METRIC_TITLES[n])}</th>" for n in METRIC_NAMES) + "</tr>")
    for label, values in summary:
        parts.append(f"<tr><td>{_e(label)}</td>")
        parts.append("".join(f'<td class="num">{_num(values.get(n), n)}</td>' for n in METRIC_NAMES) + "</tr>")
    parts.append("</table>")
    if not any(r.get("clip_image") is not None for r in rows):
        parts.append(
            '<p class="meta">No metrics yet: run <code>pix2video evaluate OUTPUT</code> or '
            "<code>pix2video report OUTPUT --metrics</code>.</p>"
        )
    stages = [c for c in (rows[0].keys() if rows else []) if c.startswith("seconds_")]
    if stages:
        parts.append('<table id="seconds"><tr>')
        parts.append("".join(f"<th>{_e(c.removeprefix('seconds_'))} (s)</th>" for c in stages) + "</tr><tr>")
        parts.append(
            "".join(f'<td class="num">{sum(float(r.get(c) or 0) for r in rows):.1f}</td>' for c in stages) + "</tr>"
        )
        parts.append("</table>")

    # Every clip.
    parts.append('<h2>Clips</h2><table id="clips"><tr><th>#</th><th>id</th><th>prompt</th><th>status</th>')
    parts.append(
        "".join(f"<th>{_e(METRIC_TITLES[n])}<br><span class='input'>input</span></th>" for n in METRIC_NAMES) + "</tr>"
    )
    for i, r in enumerate(rows):
        key = r.get("_key")
        ident = _link(f"#clip-{key}", r.get("id") or key) if key in clips else _e(r.get("id"))
        status = r.get("status") or ""
        parts.append(
            f'<tr><td class="num">{i + 1}</td><td>{ident}</td><td>{_e(r.get("prompt"))}</td>'
            f'<td class="status-{_e(status)}">{_e(status)}</td>'
        )
        for n in METRIC_NAMES:
            parts.append(
                f'<td class="num">{_num(r.get(n), n)}<br>'
                f'<span class="input">{_num(r.get(evaluate.INPUT_PREFIX + n), n)}</span></td>'
            )
        parts.append("</tr>")
    parts.append("</table>")

    for r in rows:
        key = r.get("_key")
        if key not in clips:
            continue
        c = clips[key]
        status = r.get("status") or ""
        parts.append(f'<div class="clip" id="clip-{_e(key)}"><h3>{_e(r.get("id"))}: {_e(r.get("prompt"))}</h3>')
        parts.append(
            f'<p>status <span class="status-{_e(status)}">{_e(status)}</span>'
            f" · source prompt: {_e(r.get('source_prompt'))}" + (f" · {c['link']}" if c.get("link") else "") + "</p>"
        )
        if r.get("error"):
            parts.append(f'<p class="error">{_e(r["error"])}</p>')
        if c.get("preview"):
            parts.append(
                f'<img class="preview" src="{_e(c["preview"])}" alt="input (left) and edit (right) of {_e(key)}">'
                '<p class="meta">left: input · right: edit</p>'
            )
        if c.get("plot"):
            parts.append(f'<img class="plot" src="{_e(c["plot"])}" alt="per-frame metrics of {_e(key)}">')
        if c.get("problem"):
            parts.append(f'<p class="meta">{_e(c["problem"])}</p>')
        parts.append("</div>")
    parts.append(f'<p class="meta">{_e(TINY_WARNING)} Metrics: see <code>pix2video evaluate --help</code>.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    names = ["status", *METRIC_NAMES, *(evaluate.INPUT_PREFIX + n for n in METRIC_NAMES)]
    return pa.Table.from_pylist(
        [{n: r.get(n) for n in names} for r in rows],
        schema=pa.schema([("status", pa.string())] + [(n, pa.float64()) for n in names[1:]]),
    )


# ------------------------------------------------------------------------------------ the verb


def build_report(
    output: str,
    opts: StorageOptions,
    dest: Path,
    *,
    preview_height: int = 192,
    preview_frames: int = 48,
    max_clips: int = 200,
    progress: bool = True,
) -> Path:
    """Write dest/index.html and dest/assets/ for the run in `output`; returns the page's path."""
    from tqdm import tqdm

    from actors import storage
    from actors.results import RESULTS, read_table
    from pipeline.quality.metrics import Metrics
    from pipeline.quality.plots import metrics_figure

    output = storage.normalize(output)
    results = storage.join(output, RESULTS)
    if not storage.exists(results, opts):
        raise InputError(f"{results}: no results table; give the OUTPUT of a finished `pix2video run` or `augment`")
    rows = read_table(results, opts).to_pylist()
    assets = dest / ASSETS
    if assets.exists():
        shutil.rmtree(assets)  # old previews of clips that are gone must not linger
    assets.mkdir(parents=True)
    clips: dict[str, dict[str, Any]] = {}
    clip_models: set[str] = set()
    shown = [r for r in rows if r.get("output") or r.get("status") == "failed"][:max_clips]
    for r in rows:
        r["_key"] = evaluate.clip_key(r["output"]) if r.get("output") else _safe(r.get("id"), r.get("prompt"))
    for r in tqdm(shown, unit="clip", desc="report", disable=not progress):
        key = r["_key"]
        entry: dict[str, Any] = {"preview": None, "plot": None, "link": None, "problem": None}
        clips[key] = entry
        if not r.get("output") or r.get("status") not in evaluate.SCORED:
            continue
        if storage.is_local(r["output"]) and os.path.exists(r["output"]):
            entry["link"] = _link(os.path.relpath(r["output"], dest), "edited video")
        try:
            out_frames = evaluate.read_video(r["output"], opts)
        except (InputError, OSError) as e:
            entry["problem"] = f"the output could not be read: {e}"
            continue
        try:
            in_frames = evaluate.read_video(r["video"], opts) if r.get("video") else None
        except (InputError, OSError) as e:
            in_frames = None
            entry["problem"] = f"the input could not be read ({e}); showing the edit alone"
        gif = preview_gif(
            in_frames,
            out_frames,
            float(r.get("fps") or 8.0),
            assets / f"{key}.gif",
            height=preview_height,
            max_frames=preview_frames,
        )
        entry["preview"] = f"{ASSETS}/{gif.name}"
        stored = evaluate.read_clip_metrics(output, key, opts)
        if stored:
            clip_models.add(stored.get("clip_model", ""))
            per_frame = {
                "edit": Metrics.from_dict(stored["edit"]).per_frame,
                "input": Metrics.from_dict(stored["input"]).per_frame,
            }
            png = metrics_figure(per_frame, assets / f"{key}-metrics.png", PLOT_TITLES)
            entry["plot"] = f"{ASSETS}/{png.name}"
    page = render_page(
        output=output,
        rows=rows,
        clips=clips,
        clip_models=clip_models,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )
    index = dest / INDEX
    tmp = dest / f".{INDEX}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)  # a reader never sees half a page
    return index


def _safe(*parts: Any) -> str:
    from actors.manifest import safe_name

    return safe_name("__".join(str(p) for p in parts if p))


def run(args: argparse.Namespace) -> int:
    from actors import storage

    for name in ("preview_height", "preview_frames", "max_clips"):
        _common.check_positive(name.replace("_", "-"), getattr(args, name))
    opts = _common.storage_options(args)
    output = storage.normalize(args.output)
    if args.metrics:
        ev = evaluate.evaluate_run(
            output,
            opts,
            clip_model=evaluate.clip_model(args),
            device=args.device,
            dtype=args.dtype,
            progress=args.progress,
        )
        evaluate.print_evaluation("report", ev)
    upload = None
    if args.report_dir:
        dest = Path(args.report_dir)
    elif storage.is_local(output):
        dest = Path(output) / REPORT_DIR
    else:
        dest = Path(tempfile.mkdtemp(prefix="pix2video-report-"))
        upload = storage.join(output, REPORT_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    index = build_report(
        output,
        opts,
        dest,
        preview_height=args.preview_height,
        preview_frames=args.preview_frames,
        max_clips=args.max_clips,
        progress=args.progress,
    )
    if upload is not None:
        for path in sorted(dest.rglob("*")):
            if path.is_file():
                storage.put_file(str(path), storage.join(upload, *path.relative_to(dest).parts), opts)
        shutil.rmtree(dest, ignore_errors=True)
        print(f"report: {storage.join(upload, INDEX)}")
    else:
        print(f"report: {index.resolve()} (open it in a browser; no server needed)")
    return 0


if __name__ == "__main__":
    _common.main_for("report")
