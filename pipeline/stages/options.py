"""What a run decides (`RunOptions`) and what each stage gets from it (`PrecomputeSpec`, `EditSpec`).

Light on purpose (no torch, no Ray): the command line reads these fields when it builds its parser (the
Ray and precompute flags --num-editors, --prefetch, --precompute-cpus, --max-attempts, --shots, ... are
made from them: `pipeline.options.option` gives help, default, type and choices), and a Ray Data user
builds the stages' constructor arguments from them (`precompute_spec()`, `edit_spec()`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.dataset import storage
from pipeline.dataset.manifest import short_hash
from pipeline.dataset.storage import StorageOptions
from pipeline.io.shots import SHOTS_MODES
from pipeline.options import option

from . import store

if TYPE_CHECKING:
    from pipeline.method.config import EditConfig
    from pipeline.models.speed import SpeedOptions

MAX_VIDEOS_PER_CALL = 8  # --videos-per-call auto: at most this many

# How the work is scheduled, not what it computes: the same frames either way, so not in the fingerprint.
_SCHEDULING = ("schedule", "max_batch", "inversion_batch", "decode_batch")
# Step caching: hashed as resolved, see `fingerprint`.
_CACHING = ("cache_interval", "inversion_cache_interval", "cache_depth", "cache_warmup")


def device_kind(device: str | None) -> str:
    """The kind of device models run on ('cpu', 'cuda', ...): its numbers differ from another kind's,
    not from another device of the same kind. None is what `resolve_device` makes of it, here."""
    if device:
        return str(device).split(":", 1)[0].strip().lower()
    import torch  # only here: the command line imports this module to build its flags

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class PrecomputeSpec:
    """What the precompute stage needs besides the video. Hashable and small: it travels with every task."""

    output: str
    model: str  # the diffusion model; its depth_estimator/ gives depth ("tiny" works)
    caption_model: str
    size: tuple[int, int] | None = None  # (W, H); None = the model's default size per video (ModelSizes)
    max_frames: int | None = None
    anchor_last: bool = False  # EditConfig.reverse: the anchor is the last frame
    device: str | None = None
    dtype: str = "float32"
    depth_batch: int = 8
    threads: float = 1.0  # the stage's CPUs: its torch intra-op threads (pin_numerics)
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

    def folder(self, name: str) -> str:
        """The store folder of video `name` at these settings."""
        return store.folder_of(store.store_root(self.output, self.root), name, self.key())


@dataclass(frozen=True)
class EditSpec:
    """What the edit stage needs besides the videos: small, sent with each call."""

    output: str
    settings: str  # RunOptions.fingerprint(): everything that changes the pixels
    model: str
    config: EditConfig
    reuse_inversion: bool = True  # False (--overwrite): recompute zT even when the store has it
    clip_model: str | None = None  # --metrics: score each clip as it is written
    run: str = ""  # this run's token, written into each marker
    redo: bool = False  # --overwrite: a unit is done only when this run marked it (resume.is_done)


@dataclass
class RunOptions:
    """Everything `pix2video run` decides; see jobs/run.py for the flags."""

    output: str
    model: str
    caption_model: str
    config: EditConfig
    size: tuple[int, int] | None = None
    max_frames: int | None = None
    device: str | None = None
    dtype: str = "float32"
    # None: one per GPU, or one per 2 CPUs on a CPU cluster
    num_editors: int | None = option(None, metavar="N", help="editor actors (default: one per GPU, else CPUs/2)")
    gpus_per_editor: float | None = option(None, help="default 1 on a GPU cluster or with --device cuda, else 0")
    cpus_per_editor: float | None = option(None, help="default 1 for CPU editors, 0 for GPU editors")
    precompute_cpus: float = option(1.0, help="CPUs per precompute task (default %(default)g)")
    # Fractional GPU for DPT/BLIP on GPU clusters.
    precompute_gpus: float = option(0.0, help="GPU share per precompute task, e.g. 0.25")
    # Bounded memory and storage: at most this many editor calls' worth precomputed and not yet edited.
    prefetch: int = option(2, help="editor calls' worth of videos precomputed ahead per editor (default %(default)s)")
    max_attempts: int = option(  # editor deaths per video before it becomes a failed row
        3, metavar="N", help="times a video is retried after its editor process died (default %(default)s)"
    )
    videos_per_call: int | None = None  # None: auto (see actors/runner.py `_grouping`); scheduling only
    overwrite: bool = False
    storage: StorageOptions = field(default_factory=StorageOptions)
    progress: bool = True
    clip_model: str | None = None  # --metrics: the editors score each clip as they write it (CLIP model)
    # A store shared between outputs; None: OUTPUT/precompute.
    precompute_store: str | None = option(
        None,
        metavar="URL",
        help="where the precompute store is (frames, depth, captions, inversions; default OUTPUT/precompute): "
        "runs of one manifest into other outputs can share one, e.g. to compare --injection variants "
        "without decoding, estimating depth, captioning or inverting again",
    )
    # None: auto. How the editors' UNet runs, not what it computes: the same frames either way, so it is
    # not in the fingerprint.
    speed: SpeedOptions | None = None
    shots: str = option(
        "auto",
        choices=SHOTS_MODES,
        help="shot cuts: auto = detect them (PySceneDetect) and edit each shot as a video of its own, with its "
        "own anchor, inversion and caption; off = every clip is one shot. A manifest column 'shots' (first "
        "frame of each shot, e.g. [0, 48]) gives them instead (default %(default)s)",
    )

    def fingerprint(self) -> str:
        """Hash of everything that changes an output's pixels (not how the work is scheduled: schedule,
        batch sizes and videos per call give the same frames); every marker holds it."""
        cfg = {k: v for k, v in asdict(self.config).items() if k not in _SCHEDULING + _CACHING}
        # Step caching by what it runs ("auto" may change meaning with the figures): nothing when off.
        cfg["caching"] = [self.config.edit_cache().identity(), self.config.inversion_cache().identity()]
        data = [self.model, self.caption_model, self.size, self.max_frames, self.dtype, cfg, self.shots]
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def precompute_spec(self) -> PrecomputeSpec:
        return PrecomputeSpec(
            output=self.output,
            model=self.model,
            caption_model=self.caption_model,
            size=self.size,
            max_frames=self.max_frames,
            anchor_last=bool(self.config.reverse),
            # A precompute task without a GPU share sees no GPU (Ray hides them): keep it on the CPU
            # even when --device cuda puts the editors on GPUs.
            device=self.device if self.precompute_gpus > 0 else "cpu",
            dtype=self.dtype,
            root=self.precompute_store,
            threads=self.precompute_cpus,
            shots=self.shots,
        )

    def edit_spec(self, run: str = "") -> EditSpec:
        """The edit stage's spec; `run`: this run's token, written into each marker."""
        return EditSpec(
            output=self.output,
            settings=self.fingerprint(),
            model=self.model,
            config=self.config,
            reuse_inversion=not self.overwrite,
            clip_model=self.clip_model,
            run=run,
            redo=self.overwrite,
        )

    def locate(self) -> None:
        """The output and the store as absolute URLs (every node and stage then agrees on them)."""
        self.output = storage.normalize(self.output)
        if self.precompute_store:
            self.precompute_store = storage.normalize(self.precompute_store)
