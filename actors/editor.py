"""The edit stage as Ray actors: `num_gpus` per editor, restarted by Ray when its process dies.

Ray's batch-inference pattern: the model loads in the actor's constructor (`EditStage.__init__`), one
call edits one or more videos (`EditStage.edit_videos`). Calls fail at once when the actor dies
(`max_task_retries=0`): the dispatcher puts the videos back for whichever editor is free first, and
makes a video that keeps killing its editor a failed row (actors/runner.py explains why).
"""

from __future__ import annotations

import os
from typing import Any

import ray

from pipeline.stages.edit import EditStage
from pipeline.stages.options import RunOptions


class EditorActor(EditStage):
    """The edit stage, plus the probe the dispatcher sends a restarted actor."""

    def ping(self) -> dict[str, Any]:
        """Cheap call: answers once the actor (re)started; used by the dispatcher after a death."""
        return {"pid": os.getpid(), "device": str(self.models.device), "seconds_load_model": self.seconds_load_model}


def start_editors(opts: RunOptions, count: int, gpus: float, cpus: float) -> list[Any]:
    """`count` editor actors with `gpus` GPUs and `cpus` CPUs each, the model loading in each."""
    cls = ray.remote(EditorActor).options(
        num_gpus=gpus,
        num_cpus=cpus,
        max_restarts=-1,  # Ray brings a dead editor back (new process, model reloaded)
        max_task_retries=0,  # ...and the dispatcher re-sends its videos to whichever editor is free
    )
    return [
        cls.remote(
            opts.model,
            device=opts.device,
            dtype=opts.dtype,
            storage_options=opts.storage,
            threads=cpus,
            speed=opts.speed,
        )
        for _ in range(count)
    ]
