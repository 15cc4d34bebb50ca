"""The precompute stage: one video's decode, resize, shot cuts, per-frame depth (DPT, batched) and a
caption of each shot's anchor frame (BLIP) where the manifest gives no source prompt, into the
precompute store (`pipeline/stages/store.py`).

    stage = PrecomputeStage(spec)                          # one-time setup; models load at first need
    record = stage.run(name, video, need_caption=True)     # one video per call, ok or failed

`actors/precompute.py` runs it as a Ray task (retries, resources); Ray Data runs it as a UDF
(`ds.map_batches(PrecomputeStage, fn_constructor_kwargs={"spec": spec}, batch_size=1)`: `__call__`
takes a batch of `video_items` rows and adds each one's record). A rerun with other prompts reuses
the store; a store that holds the video finds its shots and captions again only when what made them
changed, never its frames and depth.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.dataset import storage
from pipeline.dataset.storage import StorageOptions
from pipeline.errors import InputError, first_line
from pipeline.io.flow import video_flow
from pipeline.io.frames import resize_frames
from pipeline.io.shots import DETECTOR, check_shots, detect_shots, shot_anchors
from pipeline.io.video import Frames, read_frames
from pipeline.models.caption import Captioner
from pipeline.models.depth import DepthEstimator
from pipeline.models.registry import resolve_model
from pipeline.models.sizes import read_model_sizes

from . import store
from .numerics import pin_numerics
from .options import PrecomputeSpec, device_kind
from .record import PrecomputeRecord
from .store import load_array, save_array

log = logging.getLogger(__name__)

# Errors worth a retry (Ray's `retry_exceptions`): the network, not the video.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


# One model per process: a reused worker (Ray task, Ray Data actor) loads the weights once, not once
# per video.
@functools.lru_cache(maxsize=2)
def depth_estimator(model: str, device: str | None, dtype: str) -> DepthEstimator:
    return DepthEstimator.from_model(model, dtype=dtype, device=device)


@functools.lru_cache(maxsize=2)
def captioner(model: str, device: str | None, dtype: str) -> Captioner:
    return Captioner.from_model(model, dtype=dtype, device=device)


def caption_shots(model: Captioner, frames: np.ndarray, shots: Sequence[int], anchor_last: bool) -> list[str]:
    """The caption of each shot's anchor frame: each shot is a video of its own."""
    return list(model(np.stack(shot_anchors(frames, shots, anchor_last))))


def decode(video: str, max_frames: int | None, opts: StorageOptions) -> Frames:
    """A video file, a folder of images, or any fsspec URL of a video file."""
    if storage.is_local(video):
        return read_frames(video, max_frames=max_frames)
    fs, path = storage.filesystem(video, opts)
    try:
        with fs.open(path, "rb") as f:
            return read_frames(f, max_frames=max_frames)
    except FileNotFoundError:
        raise InputError(f"{video}: no such file; check the URL") from None


def _caption_of(spec: PrecomputeSpec) -> list[Any]:
    return [spec.caption_model, "last" if spec.anchor_last else "first", spec.dtype, device_kind(spec.device)]


def _shots_of(spec: PrecomputeSpec, given: Sequence[int] | None) -> list[Any]:
    """What the clip's shots are to come from (kept in meta.json as `shots_of`)."""
    if given is not None:
        return ["given", [int(s) for s in given]]
    return ["off"] if spec.shots == "off" else ["auto", DETECTOR]


def _find_shots(wanted: list[Any], frames: np.ndarray | None, num_frames: int, video: str) -> list[int]:
    """The clip's shots as `wanted` says: given (checked against its length), none, or detected."""
    if wanted[0] == "given":
        return check_shots(wanted[1], num_frames, f"{storage.redact_url(video)}: column 'shots'")
    if wanted[0] == "off":
        return [0]
    return detect_shots(frames)


class PrecomputeStage:
    """One video per call into the precompute store; see the module's docstring."""

    def __init__(self, spec: PrecomputeSpec, storage_options: StorageOptions | None = None) -> None:
        self.spec = spec
        self.opts = storage_options or StorageOptions()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data: a batch of `video_items` rows, each given its record (`record`, as meta.json's JSON)."""
        records = []
        for i, name in enumerate(batch["name"]):
            shots = batch["shots"][i]
            record = self.run(
                str(name),
                str(batch["video"][i]),
                need_caption=bool(batch["need_caption"][i]),
                shots=None if shots is None or len(shots) == 0 else [int(s) for s in shots],
            )
            records.append(json.dumps(record.to_json()))
        return {**batch, "record": np.array(records, dtype=object)}

    def run(
        self,
        name: str,
        video: str,
        need_caption: bool,
        refresh: bool = False,
        shots: Sequence[int] | None = None,
    ) -> PrecomputeRecord:
        """Fill the store for one video and return its record (small: it goes back to the driver).

        `refresh` (--overwrite) ignores what the store holds and rebuilds it. `shots`: the manifest's
        first frames of the clip's shots (checked against its length here); None: `spec.shots` decides
        (detect, or one shot). With a caption asked for, every shot's anchor frame is captioned.

        A bad video (missing, corrupt, empty, too long) is data: the record says `status: failed` with a
        one-line error. Network errors are raised, so a retry can take them.
        """
        spec, opts = self.spec, self.opts
        pin_numerics(spec.threads)
        folder = spec.folder(name)
        timings = {"seconds_decode": 0.0, "seconds_depth": 0.0, "seconds_caption": 0.0}
        meta = None if refresh else store.read_record(folder, video, spec.identity(), opts)
        if meta is not None:
            meta = dataclasses.replace(meta, **store.locations(folder), **timings)  # this run spent nothing on it
        wanted = _shots_of(spec, shots)
        shots_ok = meta is not None and meta.shots is not None and meta.shots_of == wanted
        caption_ok = meta is not None and meta.caption and meta.caption_of == _caption_of(spec)
        caption_ok = caption_ok and shots_ok and len(meta.shot_captions or []) == len(meta.shots)
        if meta is not None and shots_ok and (not need_caption or caption_ok):
            return dataclasses.replace(meta, cached=True)

        try:
            frames: np.ndarray | None = None
            if meta is None:
                meta, frames = self._frames_and_depth(name, video, folder, timings)
            if meta.shots is None or meta.shots_of != wanted:
                t0 = time.perf_counter()
                if frames is None and wanted[0] == "auto":
                    frames = load_array(meta.frames, opts)
                found = _find_shots(wanted, frames, int(meta.num_frames), video)
                if found != meta.shots:  # the captions were of other shots' anchors
                    meta.shot_captions = [meta.caption] if found == [0] and meta.caption else None
                meta.shots, meta.shots_of = found, wanted
                timings["seconds_decode"] += time.perf_counter() - t0  # detection: part of reading the clip
            captioned = meta.caption and meta.caption_of == _caption_of(spec)
            if need_caption and not (captioned and len(meta.shot_captions or []) == len(meta.shots)):
                if frames is None:
                    frames = load_array(meta.frames, opts)
                model = captioner(spec.caption_model, spec.device, spec.dtype)
                t0 = time.perf_counter()
                meta.shot_captions = caption_shots(model, frames, meta.shots, spec.anchor_last)
                meta.caption = meta.shot_captions[0]
                meta.caption_of = _caption_of(spec)
                timings["seconds_caption"] = time.perf_counter() - t0
            meta = dataclasses.replace(meta, status="ok", error=None, **timings)
            store.write_record(meta, opts)
            return dataclasses.replace(meta, cached=False)
        except InputError as e:
            return self._failed(storage.redact(str(e)), name, video, timings)
        except TRANSIENT_ERRORS:
            raise
        except FileNotFoundError:
            return self._failed(f"{storage.redact_url(video)}: no such file; check the URL", name, video, timings)
        except Exception as e:  # a video that breaks a model must not stop the other videos
            return self._failed(storage.redact(f"{video}: {type(e).__name__}: {first_line(e)}"), name, video, timings)

    def _frames_and_depth(
        self, name: str, video: str, folder: str, timings: dict[str, float]
    ) -> tuple[PrecomputeRecord, np.ndarray]:
        """Decode, resize and estimate depth: the folder's arrays, and its record so far."""
        spec, opts = self.spec, self.opts
        t0 = time.perf_counter()
        decoded = decode(video, spec.max_frames, opts)
        frames, fps = decoded.frames, float(decoded.fps)
        if len(frames) == 0:
            raise InputError(f"{video}: video has no frames")
        src_h, src_w = frames.shape[1:3]
        # No --size: the model's working size on the short side (its folder's, else SD2's 512).
        sizes = read_model_sizes(resolve_model(spec.model))
        width, height = spec.size or sizes.default_size(src_w, src_h)
        frames = resize_frames(frames, width, height)
        where = store.locations(folder)
        save_array(where["frames"], frames, opts)
        timings["seconds_decode"] = time.perf_counter() - t0

        estimator = depth_estimator(spec.model, spec.device, spec.dtype)  # loading is not a stage
        t0 = time.perf_counter()
        depth = estimator(frames, batch_size=spec.depth_batch)
        save_array(where["depth"], depth.astype(np.float32, copy=False), opts)
        timings["seconds_depth"] = time.perf_counter() - t0
        # The flow of the options beyond the paper, once per video for every prompt (CPU, milliseconds a
        # frame: BENCHMARKS.md, issue 27), at the model's latent grid; none for a one-frame clip.
        if len(frames) > 1:
            save_array(where["flow"], video_flow(frames, sizes.vae_factor), opts)
        else:
            where["flow"] = None
        record = PrecomputeRecord(
            name=name,
            video=storage.redact_url(video),  # meta.json never holds a URL's credentials
            spec=spec.identity(),
            **where,
            num_frames=int(len(frames)),
            fps=fps,
            width=int(width),
            height=int(height),
            src_width=int(src_w),
            src_height=int(src_h),
            caption=None,
        )
        return record, frames

    @staticmethod
    def _failed(error: str, name: str, video: str, timings: dict[str, float]) -> PrecomputeRecord:
        return PrecomputeRecord.failed(error, name=name, video=storage.redact_url(video), **timings)
