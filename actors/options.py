"""What a run decides (`RunOptions`): the runner's input, built by the dataset verbs from their flags.

A module of its own, without Ray, because the command line reads it when it builds its parser: the
Ray and precompute flags (--num-editors, --prefetch, --precompute-cpus, --max-attempts, --shots, ...)
are made from these fields (`pipeline.options.option`: help, default, type, choices), and
`jobs._common.run_options` fills every field named like a flag from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.dataset.storage import StorageOptions
from pipeline.io.shots import SHOTS_MODES
from pipeline.options import option

from .precompute import PrecomputeSpec

if TYPE_CHECKING:
    from pipeline.method.config import EditConfig
    from pipeline.models.speed import SpeedOptions

MAX_VIDEOS_PER_CALL = 8  # --videos-per-call auto: at most this many


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
    videos_per_call: int | None = None  # None: auto (see `_grouping`); scheduling only, not in the fingerprint
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
    fault: dict[str, Any] | None = None  # tests only: see EditorActor._maybe_crash
    # None: auto. How the editors' UNet runs, not what it computes: the same frames either way, so it is
    # not in the fingerprint.
    speed: SpeedOptions | None = None
    # Tests only: each unit's decoded frames (uint8, before H.264) also go to OUTPUT/frames/<key>.npy, so
    # tests compare what the method computed rather than the encoder's decisions about it.
    keep_frames: bool = False
    shots: str = option(
        "auto",
        choices=SHOTS_MODES,
        help="shot cuts: auto = detect them (PySceneDetect) and edit each shot as a video of its own, with its "
        "own anchor, inversion and caption; off = every clip is one shot. A manifest column 'shots' (first "
        "frame of each shot, e.g. [0, 48]) gives them instead (default %(default)s)",
    )

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
