"""Shared test fixtures. Keep each fixture small and say why it is session-scoped.

Test-session environment, set before anything imports huggingface_hub (which reads these once):
- PIX2VIDEO_CACHE -> a temporary folder, so `resolve_model("tiny")` (and Ray workers, which inherit
  the environment) never write into the user's ~/.cache;
- HF_HUB_OFFLINE=1, so no test can reach for the network: every model comes from the tiny folder.

One intra-op torch thread: on tiny models thread hand-off costs more than the work, and on a busy
2-core machine torch's spinning threads made the model tests ~5x slower (35 s vs 6.5 s).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

_CACHE = tempfile.mkdtemp(prefix="pix2video-test-cache-")
os.environ["PIX2VIDEO_CACHE"] = _CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
# MKL's reproducible mode, as the command line and the Ray workers use it (actors.cluster.NUMERIC_ENV).
os.environ.setdefault("MKL_CBWR", "AUTO")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE, ignore_errors=True)


# `make test` runs two pytest-xdist workers, `--dist loadfile`: each module is one unit of work (its
# module-scoped fixtures built once), except that the modules which start clusters of their own or time
# signals and faults are one unit together, so no two of them run side by side (two clusters starting
# together on two cores timed out a raylet's registration). Longest units first, so neither worker is
# left with a long tail; seconds each in one process on an idle 2-core machine, 12-07. (xdist's
# `--dist loadgroup` would say this with marks, but with pytest 9 it groups nothing: it renames a node
# id attribute that pytest no longer reads.)
APART = (
    "test_soak",  # 97 s
    "test_jobs_cluster",  # 71 s
    "test_loopback",  # 38 s
    "test_ray_fate",  # 26 s
    "test_live_metrics",  # 24 s
    "test_ray_start_signals",  # 19 s
)
LONGEST_FIRST = ("apart", "test_dataset_ray", "test_toy_models", "test_reference", "test_gpu_check", "test_speed")


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "apart" if Path(path).stem in APART else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadfile":
        return None  # xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return Units(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the order the workers report is the order units are handed out
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(Path(_unit(item.nodeid)).stem, len(rank)))  # stable otherwise


@pytest.fixture
def benchmark_script() -> Callable[[str], ModuleType]:
    """`benchmark_script("long_video")`: benchmarks/long_video.py loaded as a module (benchmarks/ is a
    folder of scripts run as files, not a package)."""
    import importlib.util

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random-weight models in the SD2-depth layout (+ blip/, clip/), built once per session.

    Built through the same cache as `resolve_model("tiny")`, so tests that pass "tiny" reuse it.
    """
    from fixtures.tiny import tiny_model_dir as build_or_get

    return build_or_get()


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port, in this process) for one test, and dummy credentials
    in the environment; yields its endpoint URL. moto keeps buckets per process: give each test a bucket
    name of its own."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# Ray (dataset pipeline tests: tests/test_dataset_*.py, tests/test_actors*.py, tests/test_jobs*.py)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster(tiny_model_dir: Path) -> Iterator[str]:
    """One local Ray instance for the whole session (starting one takes seconds); yields its address.

    2 CPUs (this machine's), and 2 logical GPUs so the editors take the GPU placement path
    (`num_gpus=1` each) while the models still run on the CPU (no CUDA device is visible). It listens
    on 127.0.0.1 only. The tiny models are built first, so workers never race to build them.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from actors.cluster import connect

    connect("local", num_cpus=2, num_gpus=2, runtime_env={"env_vars": {"TQDM_DISABLE": "1"}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
