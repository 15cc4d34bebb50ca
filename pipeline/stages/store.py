"""The precompute store: what the precompute stage leaves for the edit stage, one folder per video and
settings, under `OUTPUT/precompute/` or a root of its own (`--precompute-store URL`):

    ROOT/<video name>/<spec key>/frames.npy             uint8 [N,H,W,3] at the working size
                                 depth.npy              float32 [N,h,w] raw depth
                                 flow.npy               float32 [N,6,H/f,W/f] optical flow (pipeline/io/flow.py)
                                 meta.json              the PrecomputeRecord (pipeline/stages/record.py): frame
                                                        count, fps, sizes, shots, captions, timings
                                 inversion-<key>.npy    the edit stage's cache of zT (per shot, optional)

The spec key (`PrecomputeSpec.key`) hashes everything that changes the stored values, so a rerun with
other prompts reuses the folder and a rerun at another size, dtype or device kind gets its own.
`meta.json` is written last: it is the folder's completion marker, and one that cannot be read makes
the folder "not there" (it is rebuilt). The inversion's file name hashes what zT depends on besides the
folder's frames and depth (`inversion_key`): not the injection, guidance or latent update, so runs that
vary those share one inversion. Every write goes through `storage.write_bytes` (temp, then rename).
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from pipeline.dataset import storage
from pipeline.dataset.manifest import short_hash
from pipeline.dataset.storage import StorageOptions

from .record import PrecomputeRecord

log = logging.getLogger(__name__)

PRECOMPUTE = "precompute"  # the store's folder under OUTPUT, without --precompute-store
META = "meta.json"
FRAMES = "frames.npy"
DEPTH = "depth.npy"
FLOW = "flow.npy"  # the input's optical flow at the latent size (pipeline/io/flow.py)


def save_array(url: str, array: np.ndarray, opts: StorageOptions) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    storage.write_bytes(url, buf.getvalue(), opts)


def load_array(url: str, opts: StorageOptions) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(url, opts)), allow_pickle=False)


def store_root(output: str, root: str | None = None) -> str:
    """The store's root URL: `root` (--precompute-store), else OUTPUT/precompute."""
    return root or storage.join(output, PRECOMPUTE)


def folder_of(root: str, name: str, key: str) -> str:
    """One video's folder at one spec key."""
    return storage.join(root, name, key)


def locations(folder: str) -> dict[str, str]:
    """The record's URL fields for a folder."""
    return {
        "store": folder,
        "frames": storage.join(folder, FRAMES),
        "depth": storage.join(folder, DEPTH),
        "flow": storage.join(folder, FLOW),
    }


def read_record(folder: str, video: str, identity: dict[str, Any], opts: StorageOptions) -> PrecomputeRecord | None:
    """The folder's record when it holds `video` at settings `identity`; None: (re)build the folder."""
    try:
        data = json.loads(storage.read_bytes(storage.join(folder, META), opts))
    except FileNotFoundError:
        return None
    except ValueError:  # a damaged meta.json (JSONDecodeError, UnicodeDecodeError): the folder is not there
        log.warning("%s: unreadable, so this video's precompute store is rebuilt", storage.join(folder, META))
        return None
    if not isinstance(data, dict):
        return None
    record = PrecomputeRecord.from_json(data)
    if record.video != storage.redact_url(video) or record.spec != identity:
        return None  # same name, other video or settings: rebuild
    return record


def write_record(record: PrecomputeRecord, opts: StorageOptions) -> None:
    """meta.json, last: the folder is complete once it exists."""
    storage.write_bytes(storage.join(record.store, META), record.dumps(), opts)


def inversion_key(
    model: str,
    dtype: str,
    steps: int,
    source_prompt: str,
    device: str,
    span: tuple[int, int] | None,
    caching: tuple = (),
) -> str:
    """What zT depends on besides the folder's frames and depth: the model, dtype, DDIM steps, the
    source prompt, the device kind (a store shared by CPU and GPU runs keeps one of each), for a shot of
    a clip with cuts its frames `span` (start, stop), and the inversion's step caching (`caching`:
    `CacheSchedule.identity()`, empty when off, so keys without it stay what they were)."""
    ident: tuple = (model, dtype, steps, source_prompt, device)
    if span is not None:
        ident += (span,)
    if caching:
        ident += (caching,)
    return short_hash(repr(ident), 12)


def inversion_url(folder: str, key: str) -> str:
    return storage.join(folder, f"inversion-{key}.npy")
