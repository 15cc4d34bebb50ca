"""A finished run's OUTPUT folder made without Ray or diffusion: for the metric and report tests.

Two input videos (moving shapes) with "edits" whose quality is known in advance: a colour-inverted copy
(follows the input's motion exactly: low Pixel-MSE) and a copy with one frame replaced by noise
(flickers: high Pixel-MSE); plus a failed row, as `pix2video run` writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fixtures.clips import moving_shapes
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.tables import RESULTS, write_table
from pipeline.dataset.tables import RESULTS_SCHEMA as SCHEMA
from pipeline.io.video import write_video

FRAMES, SIZE, FPS = 4, 64, 8.0


def make_run(output: Path) -> dict[str, np.ndarray]:
    """Write OUTPUT/videos/*.mp4, inputs/*.mp4 and OUTPUT/results.parquet; return the frames written."""
    import pyarrow as pa

    inputs = output.parent / f"{output.name}-inputs"
    frames = {name: moving_shapes(FRAMES, SIZE, SIZE, seed=i) for i, name in enumerate(["a", "b"])}
    smooth = 255 - frames["a"]
    noisy = frames["b"].copy()
    noisy[2] = np.random.default_rng(0).integers(0, 256, noisy[2].shape, dtype=np.uint8)
    rows = []
    specs = [
        ("a", "a red car", smooth, "ok", None),
        ("b", "a dog in the snow", noisy, "ok", None),
        ("b", "van gogh painting", None, "failed", "RuntimeError: out of memory"),
    ]
    for vid, prompt, edit, status, error in specs:
        video = inputs / f"{vid}.mp4"
        if not video.exists():
            write_video(video, frames[vid], FPS)
        key = f"{vid}__{prompt.replace(' ', '-')}"
        out = None
        if edit is not None:
            out = output / "videos" / f"{key}.mp4"
            write_video(out, edit, FPS)
        row = {f.name: None for f in SCHEMA}
        row.update(
            id=vid,
            video=str(video),
            prompt=prompt,
            source_prompt="shapes",
            status=status,
            error=error,
            output=str(out) if out else None,
            num_frames=FRAMES,
            fps=FPS,
            width=SIZE,
            height=SIZE,
            attempts=1,
            seconds_edit=1.5,
        )
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=SCHEMA).append_column("label", pa.array(["x", "y", "y"]))
    write_table(table, str(output / RESULTS), StorageOptions())
    return {"a": frames["a"], "b": frames["b"], "smooth": smooth, "noisy": noisy}
