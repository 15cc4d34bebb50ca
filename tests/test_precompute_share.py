"""--precompute-gpus never makes a run wait forever (issue 8, item 9): the editors chosen for the user
leave a precompute task its share, and editors the user asked for that would leave none are refused
in one line, exit 2, before any work."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from actors.cluster import leave_room_for_precompute
from pipeline.errors import InputError

ONE_GPU = [{"CPU": 4.0, "GPU": 1.0}]
TWO_GPUS = [{"CPU": 2.0, "GPU": 2.0}]


def leave_room(*args, **kwargs):
    """On a fixed cluster (a local instance), as the session's is."""
    return leave_room_for_precompute(*args, fixed_cluster=True, **kwargs)


def test_auto_editor_count_leaves_the_share() -> None:
    # 2 whole-GPU editors would take both GPUs: one is started, the other GPU runs the precompute tasks.
    assert leave_room(2, 1.0, 0.0, 0.25, 1.0, fixed_count=False, nodes=TWO_GPUS) == 1
    # Fractional editors on one GPU: 0.7 + 0.25 fit, two 0.5 editors and 0.25 do not.
    assert leave_room(1, 0.7, 0.0, 0.25, 1.0, fixed_count=True, nodes=ONE_GPU) == 1
    assert leave_room(2, 0.5, 0.0, 0.25, 1.0, fixed_count=False, nodes=ONE_GPU) == 1
    # No GPU share asked: nothing changes.
    assert leave_room(2, 1.0, 0.0, 0.0, 1.0, fixed_count=True, nodes=TWO_GPUS) == 2


@pytest.mark.parametrize(
    ("count", "gpus", "cpus", "share", "task_cpus", "nodes", "needles"),
    [
        (1, 1.0, 0.0, 0.25, 1.0, ONE_GPU, ["--num-editors 1", "--precompute-gpus 0.25", "wait forever"]),
        (1, 0.8, 0.0, 0.25, 1.0, ONE_GPU, ["use --gpus-per-editor 0.75", "or --precompute-gpus 0"]),
        (1, 1.0, 0.0, 0.25, 1.0, ONE_GPU, ["use --gpus-per-editor 0.75"]),  # one GPU: share it
        (1, 0.8, 4.0, 0.25, 1.0, ONE_GPU, ["smaller --gpus-per-editor or --cpus-per-editor"]),  # no CPU left
        (2, 1.0, 0.0, 0.25, 1.0, TWO_GPUS, ["--num-editors 2", "use --num-editors 1"]),
        (1, 0.0, 0.0, 0.25, 1.0, [{"CPU": 8.0}], ["the cluster has no GPU", "--precompute-gpus 0"]),
        (1, 0.0, 0.0, 1.5, 1.0, TWO_GPUS, ["whole number"]),
        (0, 0.0, 0.0, 0.0, 16.0, TWO_GPUS, ["--precompute-cpus 16", "largest: 2 CPU"]),
        (2, 0.0, 1.0, 0.0, 1.0, TWO_GPUS, ["--num-editors 2", "smaller --precompute-cpus"]),
    ],
)
def test_editors_that_leave_no_room_are_refused(count, gpus, cpus, share, task_cpus, nodes, needles) -> None:
    with pytest.raises(InputError) as e:
        leave_room(count, gpus, cpus, share, task_cpus, fixed_count=True, nodes=nodes)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_a_cluster_that_may_add_nodes_gets_a_warning_not_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    """An autoscaling cluster starts GPU workers when tasks ask for GPUs (README: cluster.yaml starts with
    none): there the same shortfall is one warning and the run goes on."""
    head_only = [{"CPU": 8.0}]
    with caplog.at_level(logging.WARNING, logger="actors.cluster"):
        got = leave_room_for_precompute(8, 1.0, 0.0, 0.25, 1.0, fixed_count=True, nodes=head_only, fixed_cluster=False)
    assert got == 8
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "--precompute-gpus 0.25" in warning and "adds nodes" in warning
    with pytest.raises(InputError):  # the same on a fixed cluster
        leave_room_for_precompute(8, 1.0, 0.0, 0.25, 1.0, fixed_count=True, nodes=head_only, fixed_cluster=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.clips import write_sample_video

    root = tmp_path_factory.mktemp("share")
    for i in range(2):
        write_sample_video(root / f"c{i}.mp4", num_frames=2, width=64, height=64, seed=i)
    return root


def _within(seconds: float, fn, *args):
    """fn(*args), failing (instead of waiting forever) when it does not return in time."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_precompute_share_on_a_cluster_whose_gpus_go_to_editors(
    ray_cluster: str, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's instance has 2 logical GPUs; editors take 1 each by default."""
    from test_dataset_ray import _options  # the suite's tiny run options

    from actors.runner import run_dataset
    from jobs.cli import main as cli
    from pipeline.dataset.manifest import load_manifest
    from pipeline.dataset.storage import StorageOptions

    common = ["run", "--manifest", str(clips), "--prompt", "x", "--model", "tiny", "--size", "64x64"]
    common += ["--steps", "1", "--no-progress", "--precompute-gpus", "0.25"]
    out = tmp_path / "refused"
    assert _within(120, cli, [*common, "--output", str(out), "--num-editors", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-editors 2" in err[0] and "--num-editors 1" in err[0], err
    assert not (out / "videos").exists()  # nothing was done

    opts = _options(tmp_path / "auto", precompute_gpus=0.25)
    manifest = load_manifest(str(clips), StorageOptions(), prompts=["x"])
    summary = _within(300, run_dataset, manifest, opts)
    assert (summary.ok, summary.failed, summary.editors) == (2, 0, 1)  # one GPU left to the precompute tasks
