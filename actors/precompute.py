"""The precompute stage as a Ray task: one task per video, with its resources and Ray's retries.

Ray reuses a worker process for tasks of the same function, and the stage keeps the models it loads
per process (`pipeline.stages.precompute.depth_estimator`, `captioner`): the weights load once per
worker, not once per video.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from pipeline.dataset.storage import StorageOptions
from pipeline.stages.options import PrecomputeSpec, RunOptions
from pipeline.stages.precompute import TRANSIENT_ERRORS, PrecomputeStage
from pipeline.stages.record import PrecomputeRecord


def precompute_video(
    name: str,
    video: str,
    need_caption: bool,
    spec: PrecomputeSpec,
    opts: StorageOptions,
    refresh: bool = False,
    shots: Sequence[int] | None = None,
) -> PrecomputeRecord:
    """One video into the store (`PrecomputeStage.run`): the task's body."""
    return PrecomputeStage(spec, opts).run(name, video, need_caption, refresh, shots)


def precompute_task(opts: RunOptions) -> Any:
    """`precompute_video` as a Ray remote function with the run's resources: a worker or node that
    dies, or a network error, is retried by Ray; a bad video comes back as a failed record."""
    return ray.remote(precompute_video).options(
        num_cpus=opts.precompute_cpus,
        num_gpus=opts.precompute_gpus,
        max_retries=3,  # worker or node died: Ray reruns the task elsewhere
        retry_exceptions=list(TRANSIENT_ERRORS),
    )
