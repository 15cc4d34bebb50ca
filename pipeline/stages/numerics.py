"""The same arithmetic for the same work in every process that runs a stage."""

from __future__ import annotations

import torch


def pin_numerics(threads: float) -> None:
    """The same arithmetic on every call in a reused worker process, whatever ran in it before: the
    intra-op thread count (reduction order in GEMM, convolutions, norms) set explicitly to the CPUs
    the stage was given (at least 1), not left to whichever task first initialised torch; and
    denormals kept (flush-to-zero off), whatever a library switched."""
    count = max(1, int(threads))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    torch.set_flush_denormal(False)
