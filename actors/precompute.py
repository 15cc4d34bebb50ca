"""Precompute, one Ray task per video: decode, resize, per-frame depth (DPT, batched), and a caption
of the anchor frame (BLIP) where the manifest gives no source prompt.

Results go to the precompute store under the output URL, written atomically, `meta.json` last (it is
the store's completion marker):

    OUTPUT/precompute/<video name>/<spec key>/frames.npy    uint8 [N,H,W,3] at the working size
                                              depth.npy     float32 [N,h,w] raw DPT depth
                                              meta.json     frame count, fps, sizes, caption, timings
                                                            (a PrecomputeRecord, pipeline/dataset/record.py)
                                              inversion-<key>.npy   (editor's cache of zT, optional)

The spec key hashes everything that changes the stored values: for frames the size and frame limit;
for depth (and the caption) also the model, the dtype, the kind of device it ran on and the depth
batch size. A rerun with other prompts reuses the store; a rerun with another size, or a float16 or
GPU run after a float32 CPU one, gets a store of its own (and so does the editor's inversion cache
in it, whose file name hashes the model, dtype, steps and source prompt: the inversion is the
per-frame DDIM inversion whatever the method's other options, so runs with another --injection or
without the latent update reuse it). `--precompute-store URL` puts the store elsewhere than
OUTPUT/precompute, so that runs of one manifest into several outputs share it. A `meta.json` that
cannot be read makes the store "not there": it is rebuilt. The task itself is plain Python; the
runner wraps it with `ray.remote` and Ray's retry options.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pipeline.dataset import storage
from pipeline.dataset.manifest import short_hash
from pipeline.dataset.record import PrecomputeRecord
from pipeline.dataset.storage import StorageOptions
from pipeline.dataset.tables import OK
from pipeline.errors import InputError, first_line
from pipeline.io.frames import resize_frames
from pipeline.io.shots import DETECTOR, check_shots, detect_shots, shot_ranges
from pipeline.models.caption import Captioner
from pipeline.models.depth import DepthEstimator
from pipeline.models.loading import resolve_model
from pipeline.models.sizes import read_model_sizes

if TYPE_CHECKING:
    from pipeline.io.video import Frames

log = logging.getLogger(__name__)

PRECOMPUTE = "precompute"
META = "meta.json"

# Errors worth a retry by Ray (`retry_exceptions`): the network, not the video.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


@dataclass(frozen=True)
class PrecomputeSpec:
    """What a precompute task needs besides the video. Hashable and small: it travels with every task."""

    output: str
    model: str  # the diffusion model; its depth_estimator/ gives depth ("tiny" works)
    caption_model: str
    size: tuple[int, int] | None = None  # (W, H); None = the model's default size per video (ModelSizes)
    max_frames: int | None = None
    anchor_last: bool = False  # EditConfig.reverse: the anchor is the last frame
    device: str | None = None
    dtype: str = "float32"
    depth_batch: int = 8
    threads: float = 1.0  # the task's CPUs: its torch intra-op threads (pin_numerics)
    root: str | None = None  # the store's root URL (--precompute-store); None: OUTPUT/precompute
    # --shots: "auto" detects cuts (pipeline.io.shots), "off" makes one shot; a manifest's `shots` wins.
    # Not in the store's key: meta.json keeps the shots with what made them (`shots_of`), and they are
    # found again, frames and depth untouched, when that changes.
    shots: str = "auto"

    def identity(self) -> dict[str, Any]:
        """What the stored frames and depth depend on (JSON-shaped, to compare with meta.json)."""
        return {
            "model": self.model,
            "size": list(self.size) if self.size else None,
            "max_frames": self.max_frames,
            "dtype": self.dtype,
            "device": device_kind(self.device),
            "depth_batch": self.depth_batch,
        }

    def key(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "auto"
        ident = self.identity()
        return f"{size}-{short_hash(json.dumps([ident[k] for k in sorted(ident) if k != 'size']))}"


def device_kind(device: str | None) -> str:
    """The kind of device models run on ('cpu', 'cuda', ...): its numbers differ from another kind's,
    not from another device of the same kind. None is what `resolve_device` makes of it, here."""
    if device:
        return str(device).split(":", 1)[0].strip().lower()
    return "cuda" if torch.cuda.is_available() else "cpu"


def pin_numerics(threads: float) -> None:
    """The same arithmetic on every call in a Ray worker, whatever ran in the process before: the
    intra-op thread count (reduction order in GEMM, convolutions, norms) set explicitly to the CPUs
    the task or actor was given (at least 1), not left to whichever task first initialised torch in
    a reused worker; and denormals kept (flush-to-zero off), whatever a library switched."""
    count = max(1, int(threads))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    torch.set_flush_denormal(False)


def store_url(spec: PrecomputeSpec, name: str) -> str:
    root = spec.root or storage.join(spec.output, PRECOMPUTE)
    return storage.join(root, name, spec.key())


# One model per worker process: Ray reuses worker processes for tasks of the same function, so the
# weights are loaded once per worker, not once per video.
@functools.lru_cache(maxsize=2)
def _depth_estimator(model: str, device: str | None, dtype: str) -> DepthEstimator:
    return DepthEstimator.from_model(model, dtype=dtype, device=device)


@functools.lru_cache(maxsize=2)
def _captioner(model: str, device: str | None, dtype: str) -> Captioner:
    return Captioner.from_model(model, dtype=dtype, device=device)


def save_array(url: str, array: np.ndarray, opts: StorageOptions) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    storage.write_bytes(url, buf.getvalue(), opts)


def load_array(url: str, opts: StorageOptions) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(url, opts)), allow_pickle=False)


def _decode(video: str, max_frames: int | None, opts: StorageOptions) -> Frames:
    from pipeline.io.video import read_frames  # when called: tests replace it to catch early reads

    if storage.is_local(video):
        return read_frames(video, max_frames=max_frames)  # a file or a folder of images
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


def _locations(store: str) -> dict[str, str]:
    return {
        "store": store,
        "frames": storage.join(store, "frames.npy"),
        "depth": storage.join(store, "depth.npy"),
    }


def _stored(store: str, video: str, spec: PrecomputeSpec, opts: StorageOptions) -> PrecomputeRecord | None:
    """The store's record when it holds this video at these settings; None: (re)build it."""
    try:
        data = json.loads(storage.read_bytes(storage.join(store, META), opts))
    except FileNotFoundError:
        return None
    except ValueError:  # a damaged meta.json (JSONDecodeError, UnicodeDecodeError): the store is not there
        log.warning("%s: unreadable, so this video's precompute store is rebuilt", storage.join(store, META))
        return None
    if not isinstance(data, dict):
        return None
    meta = PrecomputeRecord.from_json(data)
    if meta.video != storage.redact_url(video) or meta.spec != spec.identity():
        return None  # same name, other video or settings: rebuild
    return meta


def precompute_video(
    name: str,
    video: str,
    need_caption: bool,
    spec: PrecomputeSpec,
    opts: StorageOptions,
    refresh: bool = False,
    shots: Sequence[int] | None = None,
) -> PrecomputeRecord:
    """Fill the store for one video and return its record (small: it goes back to the driver).

    `refresh` (--overwrite) ignores what the store holds and rebuilds it. `shots`: the manifest's
    first frames of the clip's shots (checked against its length here); None: `spec.shots` decides
    (detect, or one shot). With a caption asked for, every shot's anchor frame is captioned.

    A bad video (missing, corrupt, empty, too long) is data: the record says `status: failed` with a
    one-line error. Network errors are raised, so Ray retries them.
    """
    pin_numerics(spec.threads)
    store = store_url(spec, name)
    timings = {"seconds_decode": 0.0, "seconds_depth": 0.0, "seconds_caption": 0.0}
    meta = None if refresh else _stored(store, video, spec, opts)
    if meta is not None:
        meta = dataclasses.replace(meta, **_locations(store), **timings)  # this run spent nothing on it
    wanted = _shots_of(spec, shots)
    shots_ok = meta is not None and meta.shots is not None and meta.shots_of == wanted
    caption_ok = meta is not None and meta.caption and meta.caption_of == _caption_of(spec)
    caption_ok = caption_ok and shots_ok and len(meta.shot_captions or []) == len(meta.shots)
    if meta is not None and shots_ok and (not need_caption or caption_ok):
        return dataclasses.replace(meta, cached=True)

    try:
        frames: np.ndarray | None = None
        if meta is None:
            t0 = time.perf_counter()
            decoded = _decode(video, spec.max_frames, opts)
            frames, fps = decoded.frames, float(decoded.fps)
            if len(frames) == 0:
                raise InputError(f"{video}: video has no frames")
            src_h, src_w = frames.shape[1:3]
            # No --size: the model's working size on the short side (its folder's, else SD2's 512).
            width, height = spec.size or read_model_sizes(resolve_model(spec.model)).default_size(src_w, src_h)
            frames = resize_frames(frames, width, height)
            save_array(storage.join(store, "frames.npy"), frames, opts)
            timings["seconds_decode"] = time.perf_counter() - t0

            estimator = _depth_estimator(spec.model, spec.device, spec.dtype)  # loading is not a stage
            t0 = time.perf_counter()
            depth = estimator(frames, batch_size=spec.depth_batch)
            save_array(storage.join(store, "depth.npy"), depth.astype(np.float32, copy=False), opts)
            timings["seconds_depth"] = time.perf_counter() - t0
            meta = PrecomputeRecord(
                name=name,
                video=storage.redact_url(video),  # meta.json never holds a URL's credentials
                spec=spec.identity(),
                **_locations(store),
                num_frames=int(len(frames)),
                fps=fps,
                width=int(width),
                height=int(height),
                src_width=int(src_w),
                src_height=int(src_h),
                caption=None,
            )
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
            captioner = _captioner(spec.caption_model, spec.device, spec.dtype)
            t0 = time.perf_counter()
            # Each shot is a video of its own: its anchor is its first frame (its last with --reverse).
            ranges = shot_ranges(meta.shots, len(frames))
            anchors = [frames[stop - 1] if spec.anchor_last else frames[start] for start, stop in ranges]
            meta.shot_captions = list(captioner(np.stack(anchors)))
            meta.caption = meta.shot_captions[0]
            meta.caption_of = _caption_of(spec)
            timings["seconds_caption"] = time.perf_counter() - t0
        meta = dataclasses.replace(meta, status=OK, error=None, **timings)
        storage.write_bytes(storage.join(store, META), meta.dumps(), opts)
        return dataclasses.replace(meta, cached=False)
    except InputError as e:
        return PrecomputeRecord.failed(storage.redact(str(e)), name=name, video=storage.redact_url(video), **timings)
    except TRANSIENT_ERRORS:
        raise
    except FileNotFoundError:
        return PrecomputeRecord.failed(
            f"{storage.redact_url(video)}: no such file; check the URL",
            name=name,
            video=storage.redact_url(video),
            **timings,
        )
    except Exception as e:  # a video that breaks a model must not stop the other videos
        error = f"{video}: {type(e).__name__}: {first_line(e)}"
        return PrecomputeRecord.failed(storage.redact(error), name=name, video=storage.redact_url(video), **timings)
