"""The static HTML report of a finished run: REPORT_DIR/index.html and REPORT_DIR/assets/.

The page (templates/report.html, rendered by Jinja2 with autoescape) has a summary of the run (clips
by status, mean metrics of the edits and of the input videos, seconds per stage), a table of every
clip, and per clip the input and the edit side by side as an animated GIF with per-frame metric
plots (PNG). With a `baseline` and/or `compare` runs (other runs of the same manifest, compare.py),
each clip and prompt this run and another edited shows instead input | baseline | this run | compared
runs playing in step, a frame strip and every run's metrics, and the top of the page every run's mean
metrics over the clips all of them scored. Every link is relative, so the
folder can be copied or zipped as is. Every value from the run (ids, prompts, errors, URLs, labels)
is escaped, and control characters (NUL, ESC, ...) are dropped before that: they have no business in
a page and some browsers treat them oddly.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.dataset import storage
from pipeline.dataset.manifest import safe_name
from pipeline.dataset.results import clip_key, read_results
from pipeline.dataset.stats import display as stats_display
from pipeline.dataset.stats import read_stats
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.stored_metrics import read_clip_metrics, read_video, summary_rows
from pipeline.dataset.tables import INPUT_PREFIX, SCORED
from pipeline.errors import InputError
from pipeline.quality.metrics import format_value
from pipeline.quality.names import METRIC_NAMES, METRIC_TITLES, PLOT_TITLES

from . import compare

if TYPE_CHECKING:
    import numpy as np

REPORT_DIR = "report"
ASSETS = "assets"
INDEX = "index.html"
TEMPLATE = "report.html"
STATUS_ORDER = ("ok", "filtered", "failed")
TINY_WARNING = (
    "Tiny models (--model tiny) give noise-like pictures, and metric values from the tiny CLIP "
    "(--clip-model tiny) are meaningless except as a test that everything runs."
)
# C0 controls but tab, newline and carriage return; DEL and the C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean_text(value: Any) -> str:
    """What a page may show of `value`: its text without control characters ('' for None)."""
    return _CONTROL.sub("", "" if value is None else str(value))


@dataclass(frozen=True)
class Column:
    """Another run of the same manifest shown beside this one: where it is, its name on the page, its
    rows by (id, prompt), and whether it comes before this run (the baseline) or after (--compare)."""

    output: str
    label: str
    matched: dict[tuple[str, str], dict]
    before: bool


def check_columns(
    output: str,
    opts: StorageOptions,
    *,
    baseline: str | None = None,
    baseline_label: str | None = None,
    compared: Sequence[tuple[str | None, str]] = (),
    label: str = compare.DEFAULT_LABEL,
) -> tuple[list[dict], list[Column], str]:
    """This run's rows, the other runs as columns (the baseline first, then the `compared` runs as
    (label or None, location), in order) and this run's label, refused in one line (InputError) before
    anything is written when another run is not a run, is this run or one given before, shares no clip
    and prompt with it, or two runs would carry the same label."""
    output = storage.normalize(output)
    others = [("baseline", baseline_label, baseline, True)] if baseline is not None else []
    others += [("compared run", name, where, False) for name, where in compared]
    seen: list[str] = []
    for what, _, where, _ in others:
        where = storage.normalize(where)
        if _same(output, where):
            raise InputError(f"{what} {where}: is the run itself; give another run of the same manifest")
        if any(_same(where, s) for s in seen):
            raise InputError(f"{what} {where}: is given twice; give each run once")
        seen.append(where)
    rows = read_results(output, opts).to_pylist()
    label = clean_text(label) or compare.DEFAULT_LABEL
    columns: list[Column] = []
    for (what, name, _, before), where in zip(others, seen, strict=True):
        try:
            theirs = read_results(where, opts).to_pylist()
        except InputError as e:
            raise InputError(f"{what} {e}") from None
        matched = compare.match_rows(rows, theirs)
        if not matched:
            raise InputError(
                f"{what} {where}: shares no clip and prompt (id, prompt) with {output}; give a run of the same manifest"
            )
        columns.append(Column(where, clean_text(name) or default_baseline_label(where), matched, before))
    labels = [label, *(c.label for c in columns)]
    for name in labels:
        if labels.count(name) > 1:
            raise InputError(f"two runs are labelled {name!r} on the page; give each its own label")
    return rows, columns, label


def _same(a: str, b: str) -> bool:
    return storage.is_under(a, b) and storage.is_under(b, a)


def default_baseline_label(baseline: str) -> str:
    """The baseline's folder name (the last part of its path or URL)."""
    return storage.normalize(baseline).rstrip("/").rsplit("/", 1)[-1] or "baseline"


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


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        finalize=clean_text,  # every {{ value }}: control characters dropped, then escaped
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(
    *,
    output: str,
    rows: list[dict[str, Any]],
    clips: dict[str, dict[str, Any]],
    clip_models: set[str],
    generated: str,
    comparison: dict[str, Any] | None = None,
    run_stats: dict[str, Any] | None = None,
) -> str:
    """The HTML. `rows` carry '_key'; `clips[key]` has 'preview', 'plot', 'link' (paths relative to the
    page, or None), 'links' ((label, path) of the other runs' videos) and 'problem', and with other runs
    'animation', 'strip', 'strip_step', 'panels' (their labels) and 'metrics' ((title, a formatted value
    per run) per metric) where this run and another edited the clip. `comparison` (`_comparison`):
    'label', 'runs' ((label, location) of the others), 'columns' (every run's label, in page order),
    'pairs', 'scored' (which runs), 'metrics' and 'steadier'. `run_stats`: the run's OUTPUT/stats.json
    (pipeline/dataset/stats.py), shown at the end of the page; None for a run that wrote none."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("status") or "?"] = counts.get(r.get("status") or "?", 0) + 1
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else len(STATUS_ORDER), s))
    stages = [c for c in (rows[0].keys() if rows else []) if c.startswith("seconds_")]
    page_rows = [
        {
            "key": r["_key"],
            "shown": r["_key"] in clips,
            "label": r.get("id") or r["_key"],
            "prompt": r.get("prompt"),
            "status": r.get("status") or "",
            "metrics": [(_num(r.get(n), n), _num(r.get(INPUT_PREFIX + n), n)) for n in METRIC_NAMES],
        }
        for r in rows
    ]
    page_clips = [
        {
            "key": r["_key"],
            "id": r.get("id"),
            "prompt": r.get("prompt"),
            "status": r.get("status") or "",
            "source_prompt": r.get("source_prompt"),
            "error": r.get("error"),
            **clips[r["_key"]],
        }
        for r in rows
        if r["_key"] in clips
    ]
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            name=os.path.basename(output.rstrip("/")) or output,
            output=output,
            generated=generated,
            tiny_clip="tiny" in clip_models,
            tiny_warning=TINY_WARNING,
            counts=[(s, counts[s]) for s in order],
            rows=page_rows,
            metric_titles=[METRIC_TITLES[n] for n in METRIC_NAMES],
            summary=[(label, [_num(v.get(n), n) for n in METRIC_NAMES]) for label, v in summary_rows(_table(rows))],
            has_metrics=any(r.get("clip_image") is not None for r in rows),
            seconds=[(c.removeprefix("seconds_"), f"{sum(float(r.get(c) or 0) for r in rows):.1f}") for c in stages],
            clips=page_clips,
            comparison=comparison,
            run_stats=_stats_lines(run_stats),  # OUTPUT/stats.json, at the end
        )
    )


def _stats_lines(run_stats: dict[str, Any] | None) -> dict[str, list[tuple[str, str]]] | None:
    """stats.json's lines for the page, as clean text (its error kinds come from the run's errors)."""
    if run_stats is None:
        return None
    shown = stats_display(run_stats)
    return {part: [(clean_text(a), clean_text(b)) for a, b in lines] for part, lines in shown.items()}


def _num(value: Any, name: str) -> str:
    return format_value(name, None if value is None else float(value))


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    names = ["status", *METRIC_NAMES, *(INPUT_PREFIX + n for n in METRIC_NAMES)]
    return pa.Table.from_pylist(
        [{n: r.get(n) for n in names} for r in rows],
        schema=pa.schema([("status", pa.string())] + [(n, pa.float64()) for n in names[1:]]),
    )


def build_report(
    output: str,
    opts: StorageOptions,
    dest: Path,
    *,
    baseline: str | None = None,
    baseline_label: str | None = None,
    compared: Sequence[tuple[str | None, str]] = (),
    label: str = compare.DEFAULT_LABEL,
    strip_frames: int = compare.STRIP_COLUMNS,
    preview_height: int = 192,
    preview_frames: int = 48,
    max_clips: int = 200,
    progress: bool = True,
) -> Path:
    """Write dest/index.html and dest/assets/ for the run in `output`; returns the page's path. With
    `baseline` and/or `compared` runs ((label or None, location): other runs of the same manifest), the
    clips this run and another edited are shown side by side, the baseline under `baseline_label`
    before this run (`label`), the compared runs after it, each label defaulting to the folder's name."""
    from tqdm import tqdm

    from pipeline.quality.metrics import Metrics

    from .plots import metrics_figure

    output = storage.normalize(output)
    # refused (one line) before anything is written
    rows, columns, label = check_columns(
        output, opts, baseline=baseline, baseline_label=baseline_label, compared=compared, label=label
    )
    before = [c for c in columns if c.before]
    after = [c for c in columns if not c.before]
    ordered = [*before, None, *after]  # None: this run
    dest.mkdir(parents=True, exist_ok=True)
    assets = dest / ASSETS
    if assets.exists():
        shutil.rmtree(assets)  # old previews of clips that are gone must not linger
    assets.mkdir(parents=True)
    clips: dict[str, dict[str, Any]] = {}
    clip_models: set[str] = set()
    for r in rows:
        r["_key"] = clip_key(r["output"]) if r.get("output") else _safe(r.get("id"), r.get("prompt"))
    shown = [r for r in rows if r.get("output") or r.get("status") == "failed"][:max_clips]
    for r in tqdm(shown, unit="clip", desc="report", disable=not progress):
        key = r["_key"]
        entry: dict[str, Any] = dict.fromkeys(("preview", "plot", "link", "problem", "animation"))
        entry["links"] = []
        clips[key] = entry
        if not r.get("output") or r.get("status") not in SCORED:
            continue
        if storage.is_local(r["output"]) and os.path.exists(r["output"]):
            entry["link"] = os.path.relpath(r["output"], dest)
        try:
            out_frames = read_video(r["output"], opts)
        except (InputError, OSError) as e:
            entry["problem"] = f"the output could not be read: {e}"
            continue
        in_frames = None
        if r.get("video") and storage.is_redacted(r["video"]):
            # The results keep no credentials (storage.redact_url), so this URL cannot be read back.
            entry["problem"] = "the input's URL carries credentials the results do not keep; showing the edit alone"
        elif r.get("video"):
            try:
                in_frames = read_video(r["video"], opts)
            except (InputError, OSError) as e:
                entry["problem"] = f"the input could not be read ({e}); showing the edit alone"
        fps = float(r.get("fps") or 8.0)
        pair = compare.pair_key(r)
        theirs = {c.label: c.matched.get(pair) for c in columns}
        frames = {c.label: _other_frames(theirs[c.label], entry, c.label, opts) for c in columns}
        if any(f is not None for f in frames.values()):
            for c in columns:
                if frames[c.label] is not None and storage.is_local(theirs[c.label]["output"]):
                    entry["links"].append((c.label, os.path.relpath(theirs[c.label]["output"], dest)))
            panels = [compare.Panel("input", in_frames)] if in_frames is not None else []
            panels += [compare.Panel(c.label, frames[c.label]) for c in before if frames[c.label] is not None]
            ref = len(panels)  # this run's panel: the others are shown at its size and length
            panels.append(compare.Panel(label, out_frames))
            panels += [compare.Panel(c.label, frames[c.label]) for c in after if frames[c.label] is not None]
            anim = compare.comparison_animation(
                panels,
                assets / f"{key}-compare.webp",
                fps=fps,
                height=preview_height,
                max_frames=preview_frames,
                ref=ref,
            )
            strip, step = compare.frame_strip(panels, assets / f"{key}-strip.png", columns=strip_frames, ref=ref)
            per_run = [r if c is None else (theirs[c.label] or {}) for c in ordered]
            entry.update(
                animation=f"{ASSETS}/{anim.name}",
                strip=f"{ASSETS}/{strip.name}",
                strip_step=step,
                panels=[p.label for p in panels],
                metrics=[
                    (METRIC_TITLES[n], [_num(x.get(n), n) for x in per_run])
                    for n in METRIC_NAMES
                    if n == "pixel_mse" or any(x.get(n) is not None for x in per_run)
                ],
            )
        else:
            gif = preview_gif(
                in_frames, out_frames, fps, assets / f"{key}.gif", height=preview_height, max_frames=preview_frames
            )
            entry["preview"] = f"{ASSETS}/{gif.name}"
        stored = read_clip_metrics(output, key, opts)
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
        comparison=_comparison(rows, columns, ordered, label) if columns else None,
        run_stats=read_stats(output, opts),
    )
    index = dest / INDEX
    storage.write_bytes(str(index), page.encode("utf-8"), StorageOptions())  # a reader never sees half a page
    return index


def _comparison(
    rows: list[dict[str, Any]], columns: list[Column], ordered: list[Column | None], label: str
) -> dict[str, Any]:
    """The top of a page with other runs: every run's mean metrics over the clips and prompts all of them
    scored (per metric), and on how many of them each run flickers less than the baseline (or, without
    one, than this run)."""
    both = [r for r in rows if all(compare.pair_key(r) in c.matched for c in columns)]
    per_row = [[r if c is None else c.matched[compare.pair_key(r)] for c in ordered] for r in both]
    labels = [label if c is None else c.label for c in ordered]
    ref = 0 if columns[0].before else labels.index(label)
    metrics, steadier = [], None
    for n in METRIC_NAMES:
        means = compare.column_means([[x.get(n) for x in runs] for runs in per_row], ref=ref)
        if means is None:
            continue
        metrics.append((n, METRIC_TITLES[n], means["pairs"], [_num(v, n) for v in means["means"]]))
        if n == "pixel_mse":
            cells = ["(reference)" if i == ref else f"{b} of {means['pairs']}" for i, b in enumerate(means["below"])]
            steadier = (labels[ref], cells)
    return {
        "label": label,
        "runs": [(c.label, c.output) for c in columns],
        "columns": labels,
        "pairs": len(both),
        "scored": "both runs" if len(labels) == 2 else f"all {len(labels)} runs",
        "metrics": metrics,
        "steadier": steadier,
    }


def write_report(output: str, opts: StorageOptions, report_dir: str | None = None, **kw: Any) -> str:
    """The report of the run in `output`, in `report_dir` if given, else OUTPUT/report (for a remote
    OUTPUT: built in a temporary folder and uploaded there). Returns where the page is."""
    output = storage.normalize(output)
    upload = None
    if report_dir:
        dest = Path(report_dir)
    elif storage.is_local(output):
        dest = Path(output) / REPORT_DIR
    else:
        dest = Path(tempfile.mkdtemp(prefix="pix2video-report-"))  # removed below, whatever happens
        upload = storage.join(output, REPORT_DIR)
    try:
        index = build_report(output, opts, dest, **kw)  # makes `dest` once the results table is read
    except BaseException:
        if upload is not None:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    if upload is None:
        return str(index.resolve())
    try:
        for path in sorted(dest.rglob("*")):
            if path.is_file():
                storage.put_file(str(path), storage.join(upload, *path.relative_to(dest).parts), opts)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return storage.join(upload, INDEX)


def _other_frames(
    row: dict[str, Any] | None, entry: dict[str, Any], name: str, opts: StorageOptions
) -> np.ndarray | None:
    """Another run's edit of a clip this run edited, or None (with the reason in entry['problem'] when it
    has an output that cannot be read)."""
    if row is None or not row.get("output") or row.get("status") not in SCORED:
        return None
    try:
        return read_video(row["output"], opts)
    except (InputError, OSError) as e:
        said = f"the {name} edit could not be read ({e}); it is not shown"
        entry["problem"] = f"{entry['problem']}; {said}" if entry["problem"] else said
        return None


def _safe(*parts: Any) -> str:
    return safe_name("__".join(str(p) for p in parts if p))
