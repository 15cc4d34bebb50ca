"""The editor actor: loads the diffusion model once, then edits videos (with all their prompts) per call.

Ray's batch-inference pattern: weights in `__init__`, one unit of work per method call. A call takes
one or more videos' precompute metas (all of one size) and their pending (video, prompt) units,
inverts each video once (the inversion depends only on frames, depth and source prompt), edits every
prompt of every video from those inversions in one engine run, so short clips share UNet batches,
and for each (video, prompt) writes the mp4 (local temp file, then one atomic upload) and then its
marker. How many videos a call takes is the runner's choice (`--videos-per-call`).

The class is plain Python; the runner turns it into a Ray actor with the resources and restart
options of the cluster (`num_gpus=1` on GPU clusters, `max_restarts`). The method itself (diffusers)
is imported in the actor's constructor: the driver imports this module too, and never edits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import Unit, short_hash
from pipeline.dataset.record import PrecomputeRecord
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.stored_metrics import score_written, stored_values
from pipeline.errors import InputError, first_line
from pipeline.io.masks import read_mask
from pipeline.io.shots import shot_ranges
from pipeline.models import loading

from .evaluation import load_scorer
from .precompute import load_array, pin_numerics, save_array

if TYPE_CHECKING:
    from pipeline.method.config import EditConfig
    from pipeline.method.editor import Video
    from pipeline.models.speed import SpeedOptions
    from pipeline.quality.clip import ClipScorer

log = logging.getLogger(__name__)

FRAMES = "frames"  # OUTPUT/frames/: the decoded frames of each unit, with EditSpec.keep_frames (tests)

# A video's per-video stages on its rows after the first (they are charged once).
_PAID = {"seconds_decode": 0.0, "seconds_depth": 0.0, "seconds_caption": 0.0}


@dataclass(frozen=True)
class EditSpec:
    """What every edit call needs besides the video: small, sent with each call."""

    output: str
    settings: str  # fingerprint of everything that changes the pixels (see runner.settings_fingerprint)
    model: str
    config: EditConfig
    reuse_inversion: bool = True  # False (--overwrite): recompute zT even when the store has it
    clip_model: str | None = None  # --metrics: score each clip as it is written (actors/evaluation.py)
    run: str = ""  # this run's token, written into each marker
    redo: bool = False  # --overwrite: a unit is done only when this run marked it (resume.is_done)
    keep_frames: bool = False  # tests only: also OUTPUT/frames/<key>.npy, the frames before H.264


@dataclass
class _Prepared:
    """One video of a call, ready to edit: its units still to do, encoded frames and inversion."""

    meta: PrecomputeRecord
    units: list[Unit]
    attempt: int
    video: Video  # the whole clip (its mask, for the composite)
    # (shot Video, zT) per shot (Pix2Video.invert_shots): [(video, zT)] without a cut
    shots: list[tuple[Video, torch.Tensor]]
    source_prompts: list[str]  # per shot: given, or the caption of the shot's anchor frame
    shot_prompts: list[list[str]]  # per unit, per shot: its prompt with {caption} filled in for that shot
    seconds_load: float
    seconds_invert: float
    charged: bool = False  # the per-video stages are on a written row already

    @property
    def source_prompt(self) -> str:
        return self.source_prompts[0]

    @property
    def prompts(self) -> list[str]:
        """The units' prompts as used in the first shot (the results' `prompt`)."""
        return [per_shot[0] for per_shot in self.shot_prompts]

    def clip(self, units: list[Unit]) -> list[tuple[Video, torch.Tensor, list[str]]]:
        """`units`' edit as Pix2Video.edit_shots takes a clip: (shot video, zT, prompts) per shot."""
        index = {u.key: i for i, u in enumerate(self.units)}
        return [
            (shot, zT, [self.shot_prompts[index[u.key]][s] for u in units]) for s, (shot, zT) in enumerate(self.shots)
        ]


def render_prompt(template: str, caption: str | None) -> str:
    """Fill `{caption}` (the source prompt: given, or the anchor frame's caption). Only that name is
    replaced, so other braces in a prompt stay as written."""
    return template.replace("{caption}", caption or "")


class EditorActor:
    """One model on one device; edits the videos of a call together, frames in order."""

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        dtype: str = "float32",
        storage_options: StorageOptions | None = None,
        fault: dict[str, Any] | None = None,
        threads: float = 1.0,
        speed: SpeedOptions | None = None,  # None: the device's defaults
    ) -> None:
        from pipeline.method.editor import Pix2Video  # diffusers: in the actor's process only

        self.threads = threads  # the actor's CPUs: its torch intra-op threads, set again at every call
        pin_numerics(threads)
        t0 = time.perf_counter()
        # Through the module: tests replace it to check that nothing loads a model before its time.
        path = loading.resolve_model(model)
        self.models = loading.load_diffusion_models(path, dtype=dtype, device=device, speed=speed)
        self.editor = Pix2Video(self.models)
        self.opts = storage_options or StorageOptions()
        self.seconds_load_model = time.perf_counter() - t0
        self.fault = fault or {}
        self._last_end: float | None = None  # when the previous call returned: idle time is measured from it
        self._scorer: ClipScorer | None = None  # CLIP for --metrics, loaded at the first clip that needs it

    def ping(self) -> dict[str, Any]:
        """Cheap call: answers once the actor (re)started; used by the runner after a crash."""
        return {
            "pid": os.getpid(),
            "device": str(self.models.device),
            "seconds_load_model": self.seconds_load_model,
        }

    def edit_videos(
        self,
        videos: list[tuple[PrecomputeRecord, list[Unit]]],
        spec: EditSpec,
        attempts: list[int] | None = None,
    ) -> dict[str, Any]:
        """Edit several precomputed videos of one size, each with the prompts of its units; returns
        the units' results rows.

        With a batching schedule the videos share the engine's UNet batches (`Pix2Video.edit_many`):
        short clips fill a GPU together that each would leave half empty. Units already marked done
        (by an earlier attempt that died after some prompts) are skipped. Failures are data: a video
        that cannot be loaded or inverted fails its own units; if the shared edit raises, the videos
        are edited one by one, so a bad one fails only its own rows.
        """
        started = time.perf_counter()
        pin_numerics(self.threads)  # nothing that ran before (or a library) changes this call's arithmetic
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
                self._edit(p, units, spec, rows)
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
        rows += [_row(u, meta, status="failed", error=msg, attempts=attempt) for u in units if u.key not in done]

    def _prepare(self, meta: PrecomputeRecord, units: list[Unit], spec: EditSpec, attempt: int) -> _Prepared:
        """Load one video from the store, encode it, and get its inversion (stored, or computed)."""
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
        video = self.editor.prepare(frames, list(depth), video_id=units[0].id, mask=mask)
        del frames  # a masked video keeps them for the composite
        seconds_load = time.perf_counter() - t0

        # Each shot is a video of its own (pipeline/io/shots.py), with its own source prompt: the given
        # one, or its own anchor frame's caption; `{caption}` is filled per shot with it.
        shots = meta.shots or [0]
        given = units[0].source_prompt
        captions = meta.shot_captions if len(meta.shot_captions or []) == len(shots) else None
        sources = [given] * len(shots) if given else (captions or [meta.caption or ""] * len(shots))
        t0 = time.perf_counter()
        pairs = []
        for (start, stop), source in zip(shot_ranges(shots, video.num_frames), sources, strict=True):
            shot = video if len(shots) == 1 else video.segment(start, stop)
            pairs.append((shot, self._inversion(meta, shot, source, spec, None if len(shots) == 1 else start)))
        seconds_invert = time.perf_counter() - t0
        prompts = [[render_prompt(u.prompt, source) for source in sources] for u in units]
        return _Prepared(meta, units, attempt, video, pairs, sources, prompts, seconds_load, seconds_invert)

    def _edit(self, p: _Prepared, units: list[Unit], spec: EditSpec, rows: list[dict[str, Any]]) -> None:
        """Edit `units` of one video, appending each finished unit's row to `rows` as it is marked done."""
        config = spec.config
        # The sequential schedule runs prompts one after the other anyway, so edit them one at a time
        # and write each as soon as it is done (a crash then loses one prompt, not all); a batched
        # (wavefront) schedule gets all prompts at once so the engine can batch across them.
        batched = config.engine_settings().max_batch > 1
        groups = [units] if batched else [[u] for u in units]
        for group in groups:
            t0 = time.perf_counter()
            (latents,) = self.editor.edit_shots([p.clip(group)], config)
            seconds_edit = (time.perf_counter() - t0) / len(group)
            self._write(p, group, latents, [seconds_edit] * len(group), len([p]), spec, rows)

    def _edit_together(self, prepared: list[_Prepared], spec: EditSpec, rows: list[dict[str, Any]]) -> None:
        """Edit every prepared video in one engine run (shared UNet batches), then write each video's
        outputs; a write that fails fails only its own video."""
        t0 = time.perf_counter()
        latents = self.editor.edit_shots([p.clip(p.units) for p in prepared], spec.config)
        seconds = time.perf_counter() - t0
        # The UNet calls were shared, so no unit has an edit time of its own: each (video, prompt)
        # is charged the group's edit time in proportion to its frames. The column still sums to the
        # run's edit time, and a video's rows cost what its share of the batches did.
        frames = sum(p.video.num_frames * len(p.units) for p in prepared)
        for p, video_latents in zip(prepared, latents, strict=True):
            share = seconds * p.video.num_frames / frames
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
        from pipeline.io.video import read_frames, write_video  # when called: tests replace read_frames

        config, meta = spec.config, p.meta
        prompts_of = dict(zip((u.key for u in p.units), p.shot_prompts, strict=True))
        for unit, z, edit_s in zip(units, latents, seconds_edit, strict=True):
            t0 = time.perf_counter()
            url = resume.output_url(spec.output, unit.key)
            with tempfile.TemporaryDirectory(prefix="pix2video-") as tmp:
                local = os.path.join(tmp, "out.mp4")
                # A masked edit is composited over the input frames here (Pix2Video.decode).
                frames = self.editor.decode(z, config.decode_batch, video=p.video, config=config)
                if spec.keep_frames:  # tests: the decoded frames as they are before H.264
                    frames = list(frames)
                    save_array(storage.join(spec.output, FRAMES, f"{unit.key}.npy"), np.stack(frames), self.opts)
                write_video(local, frames, meta.fps, width=meta.width, height=meta.height)
                storage.put_file(local, url, self.opts)
                # --metrics: the frames as stored (after H.264, what `evaluate` would read back).
                written = read_frames(local).frames if spec.clip_model else None
            self._maybe_crash("after_output")
            # Per-video stages are paid once: charge them to the video's first row only.
            first = not p.charged
            row = _row(
                unit,
                meta if first else dataclasses.replace(meta, **_PAID),
                status="ok",
                prompt=prompts_of[unit.key][0],
                source_prompt=p.source_prompt,
                shots=list(meta.shots or [0]),
                shot_source_prompts=list(p.source_prompts),
                shot_prompts=list(prompts_of[unit.key]),
                anchor_refresh=config.anchor_refresh,
                output=url,
                attempts=p.attempt,
                group_size=group_size,
                seconds_load=p.seconds_load if first else 0.0,
                seconds_invert=p.seconds_invert if first else 0.0,
                seconds_edit=edit_s,
                seconds_write=time.perf_counter() - t0,
            )
            scores = self._score(spec, unit, row, written, meta) if written is not None else {}
            resume.mark_done(spec.output, unit.key, row, spec.settings, self.opts, run=spec.run)
            rows.append(row | scores)  # the marker holds no metrics: `evaluate` may replace them
            p.charged = True

    def _score(
        self, spec: EditSpec, unit: Unit, row: dict[str, Any], written: np.ndarray, meta: PrecomputeRecord
    ) -> dict[str, Any]:
        """The metric columns of a clip just written, from the frames in memory (the input's are the
        store's, at the working size, as `evaluate` resizes them); stored as `evaluate` stores them.
        A failure here costs the clip its metrics (the run's `evaluate` step retries), never its row."""
        try:
            if self._scorer is None:
                self._scorer = load_scorer(spec.clip_model, str(self.models.device))
            source = load_array(meta.frames, self.opts)
            stored = score_written(spec.output, unit.key, row, written, source, self._scorer, self.opts)
        except Exception as e:  # noqa: BLE001 - metrics are an extra; the edit is done
            log.warning("no metrics for %s: %s: %s", unit.key, type(e).__name__, first_line(e))
            return {}
        return stored_values(stored)

    def _inversion(
        self, meta: PrecomputeRecord, video: Video, source_prompt: str, spec: EditSpec, start: int | None = None
    ) -> torch.Tensor:
        """zT for this video (or the shot of it that begins at frame `start`): from the precompute store
        when an earlier run saved it, else computed (and saved, so a rerun with new prompts skips the
        inversion). A masked video is always inverted: its edit needs the whole trajectory, which the
        store does not keep (S latents per frame)."""
        config = spec.config
        # Everything zT depends on besides the store's frames and depth (keyed by the store's folder):
        # not the injection, guidance or latent update, so runs that vary those share one inversion.
        # The device kind too: a store shared by CPU and GPU runs (--precompute-store) keeps one of each.
        device = torch.device(self.models.device).type
        ident: tuple = (spec.model, self.models.dtype, config.steps, source_prompt, device)
        if start is not None:  # a shot: its frames (a clip without a cut keeps the name of before)
            ident += ((start, start + video.num_frames),)
        key = short_hash(repr(ident), 12)
        url = storage.join(meta.store, f"inversion-{key}.npy")
        if spec.reuse_inversion and video.mask is None:
            try:
                # A copy in torch's own (64-byte aligned) memory, not a view of numpy's buffer, whose
                # alignment depends on what this process allocated before.
                return torch.tensor(load_array(url, self.opts), device=self.models.device)
            except FileNotFoundError:
                pass
        self._maybe_crash("before_invert")
        zT = self.editor.invert(video, source_prompt, config)
        save_array(url, zT.float().cpu().numpy().astype(np.float32), self.opts)
        return zT

    def _maybe_crash(self, where: str) -> None:
        """Fault injection for tests: kill this worker process once, at `where`.

        `fault = {"at": where, "flag": path}`: the first process to get here creates `flag` and dies
        the hard way (as an OOM kill would), later ones go on. Never set by the command line.
        """
        if self.fault.get("at") != where:
            return
        flag = self.fault["flag"]
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def _row(unit: Unit, meta: PrecomputeRecord, *, status: str, **fields: Any) -> dict[str, Any]:
    """A results row (without the carried columns, which the driver adds from the manifest)."""
    row = {
        "key": unit.key,
        "id": unit.id,
        "video": storage.redact_url(unit.video),  # read with its credentials, never written with them
        "prompt": unit.prompt,
        "source_prompt": unit.source_prompt or meta.caption,
        "status": status,
        "error": None,
        "output": None,
        "num_frames": meta.num_frames,
        "fps": meta.fps,
        "width": meta.width,
        "height": meta.height,
        "shots": list(meta.shots) if meta.shots is not None else None,  # first frames; null before precompute
        "mask": storage.redact_url(unit.mask) if unit.mask else None,
        "anchor_refresh": None,  # set on an edited row: the --anchor-refresh K it was made with
        "group_size": None,  # videos edited in the same call (sharing UNet batches); None if failed
        "seconds_decode": meta.seconds_decode,
        "seconds_depth": meta.seconds_depth,
        "seconds_caption": meta.seconds_caption,
        "seconds_load": 0.0,
        "seconds_invert": 0.0,
        "seconds_edit": 0.0,
        "seconds_write": 0.0,
    }
    row.update(fields)
    return row


def failed_row(unit: Unit, meta: PrecomputeRecord | None, error: str) -> dict[str, Any]:
    """A failed results row made on the driver (precompute failed, or the editor kept dying)."""
    return _row(unit, meta or PrecomputeRecord(), status="failed", error=error)
