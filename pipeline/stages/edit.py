"""The edit stage: load the diffusion model once, then edit videos with all their prompts, one call at a
time, the way Ray's batch-inference pattern loads a model in a constructor and works in a method.

One per-video path, for every entry point:

    stage.prepare(frames, depth, shots, sources, config)   encode; invert each shot (from a cache if given)
    stage.edit(clips, config)                               every prompt of every clip, in one engine run
    stage.decode(clip, latents, config)                     frames (a masked edit composited over the input)

`pix2video edit` calls these three on one clip in memory. `edit_videos` calls them on precomputed
videos from the precompute store (`pipeline/stages/store.py`), with the store's inversion cache, and for
each (video, prompt) writes the mp4 (local temp file, then one atomic upload), then its marker, and
returns its results row: `actors/editor.py` runs it as a Ray actor, Ray Data as a UDF
(`ds.map_batches(EditStage, fn_constructor_kwargs=..., batch_size=1, num_gpus=1)`: `__call__`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import Unit
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.stored_metrics import score_written, stored_values
from pipeline.dataset.tables import FAILED, OK, ResultRow
from pipeline.errors import InputError, first_line
from pipeline.io.atomic import local_scratch, sweep_dead_scratch
from pipeline.io.flow import flow_problem, flow_shape
from pipeline.io.masks import read_mask
from pipeline.io.video import read_frames, write_video
from pipeline.method.config import EditConfig
from pipeline.method.editor import Pix2Video, Video
from pipeline.models import loading
from pipeline.models.speed import SpeedOptions
from pipeline.quality.clip import ClipScorer

from . import store
from .items import units_of
from .numerics import pin_numerics
from .options import EditSpec
from .record import PrecomputeRecord
from .store import load_array, save_array

log = logging.getLogger(__name__)

# A video's per-video stages on its rows after the first (they are charged once).
_PAID = {"seconds_decode": 0.0, "seconds_depth": 0.0, "seconds_caption": 0.0}

# (shot's first frame, shot video, source prompt) -> zT: where an inversion may come from instead (a cache).
Inverter = Callable[[int, Video, str], torch.Tensor]


@dataclass
class Clip:
    """One clip ready to edit: its encoded frames and, per shot, the shot's video and inversion."""

    video: Video  # the whole clip (its mask, for the composite)
    shots: list[tuple[Video, torch.Tensor]]  # (shot video, zT) per shot; [(video, zT)] without a cut
    source_prompts: list[str]  # per shot: given, or the caption of the shot's anchor frame

    def with_prompts(self, prompts: Sequence[Sequence[str]]) -> list[tuple[Video, torch.Tensor, list[str]]]:
        """The clip as `Pix2Video.edit_shots` takes it: `prompts[p][s]` is prompt p's text for shot s."""
        return [(shot, zT, [per_shot[s] for per_shot in prompts]) for s, (shot, zT) in enumerate(self.shots)]


def render_prompt(template: str, caption: str | None) -> str:
    """Fill `{caption}` (the source prompt: given, or the anchor frame's caption). Only that name is
    replaced, so other braces in a prompt stay as written."""
    return template.replace("{caption}", caption or "")


def result_row(unit: Unit, meta: PrecomputeRecord, **fields: Any) -> ResultRow:
    """A unit's results row, its sizes and per-video timings from the precompute record (the manifest's
    carried columns are added when the table is built)."""
    values: dict[str, Any] = {
        "key": unit.key,
        "id": unit.id,
        "video": storage.redact_url(unit.video),  # read with its credentials, never written with them
        "prompt": unit.prompt,
        "source_prompt": unit.source_prompt or meta.caption,
        "num_frames": meta.num_frames,
        "fps": meta.fps,
        "width": meta.width,
        "height": meta.height,
        "shots": list(meta.shots) if meta.shots is not None else None,  # first frames; null before precompute
        "mask": storage.redact_url(unit.mask) if unit.mask else None,
        "seconds_decode": meta.seconds_decode,
        "seconds_depth": meta.seconds_depth,
        "seconds_caption": meta.seconds_caption,
    }
    return ResultRow(**(values | fields))


def failed_row(unit: Unit, meta: PrecomputeRecord | None, error: str, **fields: Any) -> dict[str, Any]:
    """A failed results row (precompute failed, the video could not be edited, its editor kept dying)."""
    return result_row(unit, meta or PrecomputeRecord(), status=FAILED, error=error, **fields).as_dict()


@dataclass
class _Prepared:
    """One video of a call, ready to edit: its units still to do and its clip."""

    meta: PrecomputeRecord
    units: list[Unit]
    attempt: int
    clip: Clip
    shot_prompts: list[list[str]]  # per unit, per shot: its prompt with {caption} filled in for that shot
    seconds_load: float
    seconds_invert: float
    charged: bool = False  # the per-video stages are on a written row already

    def prompts(self, units: list[Unit]) -> list[list[str]]:
        index = {u.key: i for i, u in enumerate(self.units)}
        return [self.shot_prompts[index[u.key]] for u in units]


class EditStage:
    """One model on one device; edits the videos of a call together, frames in order."""

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "float32",
        storage_options: StorageOptions | None = None,
        threads: float | None = None,  # the CPUs given (a Ray actor's); None: torch's own thread count
        speed: SpeedOptions | None = None,  # None: the device's defaults
        spec: EditSpec | None = None,  # Ray Data's `__call__` edits with it
    ) -> None:
        self.threads = threads  # the stage's CPUs: its torch intra-op threads, set again at every call
        sweep_dead_scratch()  # what editors killed mid-write on this machine left in the temporary folder
        if threads is not None:
            pin_numerics(threads)
        t0 = time.perf_counter()
        # Through the module: tests replace it to check that nothing loads a model before its time.
        models = loading.load_diffusion_models(loading.resolve_model(model), dtype=dtype, device=device, speed=speed)
        self.editor = Pix2Video(models)
        self.opts = storage_options or StorageOptions()
        self.spec = spec
        self.seconds_load_model = time.perf_counter() - t0
        self._last_end: float | None = None  # when the previous call returned: idle time is measured from it
        self._scorer: ClipScorer | None = None  # CLIP for --metrics, loaded at the first clip that needs it

    @property
    def models(self) -> loading.DiffusionModels:
        return self.editor.models

    # ------------------------------------------------------------------ the per-video path

    def prepare(
        self,
        frames: np.ndarray,
        depth: Sequence[np.ndarray],
        shots: Sequence[int],
        source_prompts: Sequence[str],
        config: EditConfig,
        *,
        mask: np.ndarray | None = None,
        video_id: str = "",
        inverter: Inverter | None = None,
        flow: np.ndarray | None = None,
    ) -> Clip:
        """Encode a clip and invert each shot (`pipeline.io.shots`: its first frames) under its own
        source prompt; `inverter` may give a shot's zT instead (the store's cache); `flow` the stored
        optical flow (`pipeline.io.flow`; None: estimated from the frames). With `config`'s steps beyond
        the paper off, no flow is used or estimated: the paper's method never reads it."""
        uses_flow = config.engine_settings().uses_flow
        video = self.editor.prepare(
            frames,
            list(depth),
            video_id=video_id,
            mask=mask,
            flow=flow if uses_flow else None,
            estimate_flow=uses_flow,
        )
        pairs = self.editor.invert_shots(video, shots, source_prompts, config, invert=inverter)
        return Clip(video, pairs, list(source_prompts))

    def edit(
        self,
        clips: Sequence[tuple[Clip, Sequence[Sequence[str]]]],
        config: EditConfig,
        on_frame_done: Callable[[int, int, int], None] | None = None,
    ) -> list[list[torch.Tensor]]:
        """Every (clip, prompts) in one engine run (short clips share UNet batches); per clip, per prompt,
        the edited latents. `prompts[p][s]`: prompt p's text for shot s."""
        return self.editor.edit_shots([clip.with_prompts(prompts) for clip, prompts in clips], config, on_frame_done)

    def decode(self, clip: Clip, latents: torch.Tensor, config: EditConfig) -> Sequence[np.ndarray]:
        """The edited frames (uint8), a masked edit composited over the input."""
        return self.editor.decode(latents, config.decode_batch, video=clip.video, config=config)

    # ------------------------------------------------------------------ precomputed videos

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data: a batch of precomputed `video_items` rows (`record` from `PrecomputeStage`, `units`),
        edited with `spec`; one results row per unit (`rows`, as JSON) per video."""
        if self.spec is None:
            raise ValueError("EditStage needs spec=EditSpec(...) (RunOptions.edit_spec()) to edit a batch")
        videos = [
            (PrecomputeRecord.from_json(json.loads(record)), units_of(units))
            for record, units in zip(batch["record"], batch["units"], strict=True)
        ]
        rows: dict[str, dict[str, Any]] = {}
        for meta, units in videos:
            if not meta.ok:  # precompute failed: every unit a failed row, as `run` makes them
                rows |= {u.key: failed_row(u, meta, meta.error or "precompute failed") for u in units}
        ready = [(meta, units) for meta, units in videos if meta.ok]
        if ready:
            rows |= {r["key"]: r for r in self.edit_videos(ready, self.spec)["rows"]}
        out = [json.dumps([rows[u.key] for u in units if u.key in rows], default=str) for _, units in videos]
        return {**batch, "rows": np.array(out, dtype=object)}

    def edit_videos(
        self,
        videos: list[tuple[PrecomputeRecord, list[Unit]]],
        spec: EditSpec,
        attempts: list[int] | None = None,
    ) -> dict[str, Any]:
        """Edit several precomputed videos of one size, each with the prompts of its units; returns
        the units' results rows (and the call's idle and busy seconds).

        With a batching schedule the videos share the engine's UNet batches: short clips fill a GPU
        together that each would leave half empty. Units already marked done (by an earlier attempt
        that died after some prompts) are skipped. Failures are data: a video that cannot be loaded or
        inverted fails its own units; if the shared edit raises, the videos are edited one by one, so a
        bad one fails only its own rows.
        """
        started = time.perf_counter()
        if self.threads is not None:  # nothing that ran before (or a library) changes this call's arithmetic
            pin_numerics(self.threads)
        idle = 0.0 if self._last_end is None else started - self._last_end
        attempts = attempts or [1] * len(videos)
        rows: list[dict[str, Any]] = []
        prepared: list[_Prepared] = []
        for (meta, units), attempt in zip(videos, attempts, strict=True):
            try:
                todo = []
                for u in units:  # an earlier attempt that died may have finished some prompts
                    row = resume.is_done(
                        spec.output, u.key, spec.settings, self.opts, run=spec.run if spec.redo else None
                    )
                    if row is None:
                        todo.append(u)
                    else:
                        rows.append({**row, "key": u.key})
                if todo:
                    prepared.append(self._prepare(meta, todo, spec, attempt))
            except Exception as e:  # this video fails; the others go on
                self._fail(meta, units, attempt, e, rows)
        batched = spec.config.engine_settings().max_batch > 1
        if batched and len(prepared) > 1:
            try:
                self._edit_together(prepared, spec, rows)
                prepared = []
            except Exception as e:
                log.warning(
                    "editing %d videos together failed (%s: %s); editing them one by one",
                    len(prepared),
                    type(e).__name__,
                    storage.redact(first_line(e), self.opts),
                )
        for p in prepared:
            done = {r["key"] for r in rows}
            units = [u for u in p.units if u.key not in done]
            if not units:
                continue
            try:
                self._edit_alone(p, units, spec, rows)
            except Exception as e:
                self._fail(p.meta, units, p.attempt, e, rows)
        self._last_end = time.perf_counter()
        return {"rows": rows, "idle": idle, "busy": self._last_end - started, "pid": os.getpid()}

    def _fail(
        self, meta: PrecomputeRecord, units: list[Unit], attempt: int, e: Exception, rows: list[dict[str, Any]]
    ) -> None:
        """Failed rows for those of `units` that have no row yet: failures are data."""
        msg = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {first_line(e)}"
        msg = storage.redact(msg, self.opts)
        done = {r["key"] for r in rows}
        rows += [failed_row(u, meta, msg, attempts=attempt) for u in units if u.key not in done]

    def _prepare(self, meta: PrecomputeRecord, units: list[Unit], spec: EditSpec, attempt: int) -> _Prepared:
        """Load one video from the store and prepare its clip (inversions stored, or computed and stored)."""
        t0 = time.perf_counter()
        mask = None
        if units[0].mask:  # a masked edit: checked against the clip (a bad mask fails this video's rows)
            mask = read_mask(
                units[0].mask,  # its error names it; _fail redacts any credentials
                num_frames=int(meta.num_frames),
                size=(int(meta.src_width), int(meta.src_height)),
                working_size=(int(meta.width), int(meta.height)),
                storage_options=self.opts.for_url(units[0].mask),
            )
        frames = load_array(meta.frames, self.opts)
        depth = load_array(meta.depth, self.opts)
        flow = self._stored_flow(meta, frames.shape, spec.config)
        seconds_load = time.perf_counter() - t0

        # Each shot is a video of its own (pipeline/io/shots.py), with its own source prompt: the given
        # one, or its own anchor frame's caption; `{caption}` is filled per shot with it.
        shots = meta.shots or [0]
        given = units[0].source_prompt
        captions = meta.shot_captions if len(meta.shot_captions or []) == len(shots) else None
        sources = [given] * len(shots) if given else (captions or [meta.caption or ""] * len(shots))
        t0 = time.perf_counter()

        def cached(start: int, shot: Video, source: str) -> torch.Tensor:
            span = None if len(shots) == 1 else (start, start + shot.num_frames)
            return self._inversion(meta, shot, source, spec, span)

        clip = self.prepare(
            frames, depth, shots, sources, spec.config, mask=mask, video_id=units[0].id, inverter=cached, flow=flow
        )
        del frames  # a masked video keeps them for the composite
        seconds_invert = time.perf_counter() - t0
        prompts = [[render_prompt(u.prompt, source) for source in sources] for u in units]
        return _Prepared(meta, units, attempt, clip, prompts, seconds_load, seconds_invert)

    def _stored_flow(
        self, meta: PrecomputeRecord, frames_shape: tuple[int, ...], config: EditConfig
    ) -> np.ndarray | None:
        """The store's flow of this video, read only for an edit with the steps beyond the paper on (the
        paper's method never reads it, so a damaged flow.npy cannot fail it). None: the editor estimates
        it from the stored frames, as for a store of before the flow, or one whose flow.npy cannot be
        read or does not fit the clip (a warning names it; the flow is a function of the frames alone)."""
        if not meta.flow or not config.engine_settings().uses_flow:
            return None
        n, height, width = frames_shape[:3]
        try:
            flow = load_array(meta.flow, self.opts)
            problem = flow_problem(flow, flow_shape(n, height, width, self.editor.sizes.vae_factor))
        except (OSError, ValueError, EOFError) as e:
            problem = f"it cannot be read ({first_line(e) or type(e).__name__})"
        if problem is None:
            return flow
        log.warning("%s: %s; estimated again from the stored frames", storage.redact(meta.flow, self.opts), problem)
        return None

    def _edit_alone(self, p: _Prepared, units: list[Unit], spec: EditSpec, rows: list[dict[str, Any]]) -> None:
        """Edit `units` of one video, appending each finished unit's row to `rows` as it is marked done."""
        # The sequential schedule runs prompts one after the other anyway, so edit them one at a time
        # and write each as soon as it is done (a crash then loses one prompt, not all); a batched
        # (wavefront) schedule gets all prompts at once so the engine can batch across them.
        batched = spec.config.engine_settings().max_batch > 1
        for group in [units] if batched else [[u] for u in units]:
            t0 = time.perf_counter()
            (latents,) = self.edit([(p.clip, p.prompts(group))], spec.config)
            seconds_edit = (time.perf_counter() - t0) / len(group)
            self._write(p, group, latents, [seconds_edit] * len(group), 1, spec, rows)

    def _edit_together(self, prepared: list[_Prepared], spec: EditSpec, rows: list[dict[str, Any]]) -> None:
        """Edit every prepared video in one engine run (shared UNet batches), then write each video's
        outputs; a write that fails fails only its own video."""
        t0 = time.perf_counter()
        latents = self.edit([(p.clip, p.prompts(p.units)) for p in prepared], spec.config)
        seconds = time.perf_counter() - t0
        # The UNet calls were shared, so no unit has an edit time of its own: each (video, prompt)
        # is charged the group's edit time in proportion to its frames. The column still sums to the
        # run's edit time, and a video's rows cost what its share of the batches did.
        frames = sum(p.clip.video.num_frames * len(p.units) for p in prepared)
        for p, video_latents in zip(prepared, latents, strict=True):
            share = seconds * p.clip.video.num_frames / frames
            try:
                self._write(p, p.units, video_latents, [share] * len(p.units), len(prepared), spec, rows)
            except Exception as e:
                self._fail(p.meta, p.units, p.attempt, e, rows)

    def _write(
        self,
        p: _Prepared,
        units: list[Unit],
        latents: list[torch.Tensor],
        seconds_edit: list[float],
        group_size: int,
        spec: EditSpec,
        rows: list[dict[str, Any]],
    ) -> None:
        """Decode and write each unit's mp4 (local temp file, one atomic upload), then its marker."""
        config, meta = spec.config, p.meta
        for unit, z, edit_s, prompts in zip(units, latents, seconds_edit, p.prompts(units), strict=True):
            t0 = time.perf_counter()
            url = resume.output_url(spec.output, unit.key)
            with local_scratch() as tmp:
                local = os.path.join(tmp, "out.mp4")
                self._encode(unit, self.decode(p.clip, z, config), local, meta)
                self._put_output(local, url)
                # --metrics: the frames as stored (after H.264, what `evaluate` would read back).
                written = read_frames(local).frames if spec.clip_model else None
            # Per-video stages are paid once: charge them to the video's first row only.
            first = not p.charged
            row = result_row(
                unit,
                meta if first else dataclasses.replace(meta, **_PAID),
                status=OK,
                prompt=prompts[0],
                source_prompt=p.clip.source_prompts[0],
                shots=list(meta.shots or [0]),
                shot_source_prompts=list(p.clip.source_prompts),
                shot_prompts=list(prompts),
                anchor_refresh=config.anchor_refresh,
                output=url,
                attempts=p.attempt,
                group_size=group_size,
                seconds_load=p.seconds_load if first else 0.0,
                seconds_invert=p.seconds_invert if first else 0.0,
                seconds_edit=edit_s,
                seconds_write=time.perf_counter() - t0,
            ).as_dict()
            scores = self._score(spec, unit, row, written, meta) if written is not None else {}
            resume.mark_done(spec.output, unit.key, row, spec.settings, self.opts, run=spec.run)
            rows.append(row | scores)  # the marker holds no metrics: `evaluate` may replace them
            p.charged = True

    def _encode(self, unit: Unit, frames: Sequence[np.ndarray], path: str, meta: PrecomputeRecord) -> None:
        """One unit's frames as an H.264 mp4 at a local path."""
        write_video(path, frames, meta.fps, width=meta.width, height=meta.height)

    def _put_output(self, local: str, url: str) -> None:
        """The finished mp4 into its place: one atomic upload (or rename), then the marker follows."""
        storage.put_file(local, url, self.opts)

    def _score(
        self, spec: EditSpec, unit: Unit, row: dict[str, Any], written: np.ndarray, meta: PrecomputeRecord
    ) -> dict[str, Any]:
        """The metric columns of a clip just written, from the frames in memory (the input's are the
        store's, at the working size, as `evaluate` resizes them); stored as `evaluate` stores them.
        A failure here costs the clip its metrics (the run's `evaluate` step retries), never its row."""
        try:
            if self._scorer is None:
                self._scorer = ClipScorer.from_model(spec.clip_model, device=str(self.models.device))
            source = load_array(meta.frames, self.opts)
            stored = score_written(spec.output, unit.key, row, written, source, self._scorer, self.opts)
        except Exception as e:  # noqa: BLE001 - metrics are an extra; the edit is done
            log.warning("no metrics for %s: %s: %s", unit.key, type(e).__name__, first_line(e))
            return {}
        return stored_values(stored)

    def _inversion(
        self, meta: PrecomputeRecord, video: Video, source_prompt: str, spec: EditSpec, span: tuple[int, int] | None
    ) -> torch.Tensor:
        """zT for this video (or its shot `span`): from the precompute store when an earlier run saved
        it, else computed (and saved, so a rerun with new prompts skips the inversion). A masked video is
        always inverted: its edit needs the whole trajectory, which the store does not keep."""
        device = torch.device(self.models.device).type
        caching = spec.config.inversion_cache().identity()  # a cached inversion is another zT
        key = store.inversion_key(
            spec.model, str(self.models.dtype), spec.config.steps, source_prompt, device, span, caching
        )
        url = store.inversion_url(meta.store, key)
        if spec.reuse_inversion and video.mask is None:
            try:
                # A copy in torch's own (64-byte aligned) memory, not a view of numpy's buffer, whose
                # alignment depends on what this process allocated before.
                return torch.tensor(load_array(url, self.opts), device=self.models.device)
            except FileNotFoundError:
                pass
        # Contiguous, as the stored copy comes back: the inversion may end in another memory format
        # (channels-last), and the edit's first kernels then take other paths, a grey level off in
        # some values; a retry or rerun that loads the stored zT must edit what this call edits.
        zT = self.editor.invert(video, source_prompt, spec.config)
        if video.mask is None:  # a masked edit keeps this very tensor: the editor finds its trajectory by it
            zT = zT.contiguous()
        save_array(url, zT.float().cpu().numpy().astype(np.float32), self.opts)
        return zT
