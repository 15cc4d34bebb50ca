"""The Ray session of a verb: connect as the flags say (a local instance on 127.0.0.1 or a cluster),
and disconnect if it was started here. Used by the verbs that run on Ray (run, relabel, augment, demo,
evaluate, report --metrics)."""

from __future__ import annotations

import argparse
import logging

from actors.cluster import connect, describe_cluster

log = logging.getLogger(__name__)


def connect_ray(args: argparse.Namespace) -> bool:
    """Connect to Ray as the flags say; True when a local instance was started here."""
    started = connect(
        args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        runtime_env={"env_vars": quiet_env()},
        metrics_port=getattr(args, "metrics_port", None),
    )
    log.info("Ray: %s%s", describe_cluster(), " (started here, on 127.0.0.1)" if started else "")
    if started:
        from actors.metrics import metrics_endpoint

        log.info("live metrics (Prometheus): %s", metrics_endpoint() or "none")
    return started


def quiet_env() -> dict[str, str]:
    """Environment for Ray workers: model-loading progress bars off (they would flood the driver's log)."""
    return {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


def shutdown_ray(started: bool) -> None:
    """Disconnect, when `connect_ray` started the instance here (a cluster's driver just leaves)."""
    if started:
        import ray  # here, not at the top: every verb imports this module, most never start Ray

        ray.shutdown()
