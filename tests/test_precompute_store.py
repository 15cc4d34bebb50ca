"""The precompute store: keyed on everything that changes its values (a float16 or GPU run never reuses
float32 CPU depth), and a damaged meta.json means "rebuild", not an error on every rerun."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset.storage import StorageOptions
from pipeline.stages.options import PrecomputeSpec
from pipeline.stages.precompute import PrecomputeStage
from pipeline.stages.store import META, load_array

OPTS = StorageOptions()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.clips import write_sample_video

    path = tmp_path_factory.mktemp("clip") / "a.mp4"
    write_sample_video(path, num_frames=2, width=64, height=64)
    return path


def _spec(out: Path, **kw: object) -> PrecomputeSpec:
    return PrecomputeSpec(output=str(out), model="tiny", caption_model="tiny", size=(64, 64), device="cpu", **kw)


def test_store_identity_covers_dtype_device_and_batch(tmp_path: Path) -> None:
    base = _spec(tmp_path)
    others = [
        dataclasses.replace(base, dtype="float16"),
        dataclasses.replace(base, dtype="bfloat16"),
        dataclasses.replace(base, device="cuda"),
        dataclasses.replace(base, depth_batch=1),
        dataclasses.replace(base, model="other"),
        dataclasses.replace(base, max_frames=5),
    ]
    keys = {base.key()} | {s.key() for s in others}
    assert len(keys) == 1 + len(others)  # every one of them gets a store of its own
    assert all(s.identity() != base.identity() for s in others)
    # Same kind of device: same numbers, same store.
    assert dataclasses.replace(base, device="cuda:0").key() == dataclasses.replace(base, device="cuda:1").key()


def test_other_dtype_does_not_reuse_depth(tmp_path: Path, clip: Path, tiny_model_dir: Path) -> None:
    f32 = _spec(tmp_path / "out")
    first = PrecomputeStage(f32, OPTS).run("a", str(clip), True)
    assert first["status"] == "ok" and not first["cached"]
    assert PrecomputeStage(f32, OPTS).run("a", str(clip), True)["cached"]  # same settings: reused

    bf16 = dataclasses.replace(f32, dtype="bfloat16")
    second = PrecomputeStage(bf16, OPTS).run("a", str(clip), True)
    assert second["status"] == "ok" and not second["cached"], second  # computed again, in its own store
    assert second["store"] != first["store"]
    assert load_array(first["depth"], OPTS).dtype == np.float32  # the float32 store is still there, whole
    assert PrecomputeStage(f32, OPTS).run("a", str(clip), True)["cached"]


@pytest.mark.parametrize(
    "blob", [b'{"video": "a.mp4", "num_fr', b"\xff\xfe", b"[]"], ids=["truncated", "binary", "list"]
)
def test_damaged_meta_rebuilds_the_store(tmp_path: Path, clip: Path, tiny_model_dir: Path, blob: bytes) -> None:
    spec = _spec(tmp_path / "out")
    assert PrecomputeStage(spec, OPTS).run("a", str(clip), True)["status"] == "ok"
    meta = Path(spec.folder("a")) / META
    meta.write_bytes(blob)

    again = PrecomputeStage(spec, OPTS).run("a", str(clip), True)
    assert again["status"] == "ok" and not again["cached"], again
    assert meta.read_bytes() != blob  # rewritten whole
    assert PrecomputeStage(spec, OPTS).run("a", str(clip), True)["cached"]


def test_a_store_elsewhere_is_shared_between_outputs(tmp_path: Path, clip: Path, tiny_model_dir: Path) -> None:
    """--precompute-store: two runs into other outputs read one store (same settings: same folder), and
    the store's key does not depend on where it is."""
    from actors.runner import RunOptions
    from pipeline.method.editor import EditConfig

    shared = str(tmp_path / "store")
    first = RunOptions(
        output=str(tmp_path / "a"), model="tiny", caption_model="tiny", config=EditConfig(), size=(64, 64)
    )
    first.precompute_store = shared
    second = dataclasses.replace(first, output=str(tmp_path / "b"), config=EditConfig(injection="none"))
    spec_a, spec_b = first.precompute_spec(), second.precompute_spec()
    assert spec_a.folder("a") == spec_b.folder("a") == f"{shared}/a/{spec_a.key()}"
    assert spec_a.key() == dataclasses.replace(spec_a, root=None).key()
    assert dataclasses.replace(spec_a, root=None).folder("a") == f"{tmp_path / 'a'}/precompute/a/{spec_a.key()}"

    made = PrecomputeStage(spec_a, OPTS).run("a", str(clip), True)
    assert made["status"] == "ok" and not made["cached"] and made["store"].startswith(shared)
    reused = PrecomputeStage(spec_b, OPTS).run("a", str(clip), True)
    assert reused["cached"] and reused["caption"] == made["caption"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing under the outputs


def test_an_unwritable_store_is_one_line_before_any_work(tmp_path: Path, clip: Path, capsys) -> None:
    from jobs.cli import main

    (tmp_path / "file").write_text("not a folder")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video,prompt\n{clip},a red car\n")
    argv = ["run", "--manifest", str(manifest), "--output", str(tmp_path / "out"), "--model", "tiny"]
    assert main([*argv, "--precompute-store", str(tmp_path / "file" / "store"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--precompute-store" in err and "is a file, not a folder" in err
    assert not (tmp_path / "out").exists()


def test_a_cached_inversion_has_a_key_of_its_own_and_off_is_off() -> None:
    """The store's zT under --inversion-cache-interval is another zT (its own file); a run's settings say
    what step caching runs, so `auto` and `off` (the same today) are the same settings."""
    from pipeline.method.config import EditConfig
    from pipeline.stages import store
    from pipeline.stages.options import RunOptions

    plain = store.inversion_key("m", "float32", 20, "a ball", "cpu", None)
    assert store.inversion_key("m", "float32", 20, "a ball", "cpu", None, ()) == plain
    cached = EditConfig(inversion_cache_interval="on").inversion_cache().identity()
    assert store.inversion_key("m", "float32", 20, "a ball", "cpu", None, cached) != plain

    def fingerprint(**kw: object) -> str:
        return RunOptions(output="o", model="tiny", caption_model="tiny", config=EditConfig(**kw)).fingerprint()

    assert fingerprint() == fingerprint(cache_interval="off", inversion_cache_interval="auto")
    assert fingerprint() != fingerprint(cache_interval="on")
