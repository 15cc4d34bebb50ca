"""Dataset pipeline pieces that need no Ray: manifests, names, storage, resume, verbs' helpers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset import resume, storage
from pipeline.dataset.manifest import derive_id, load_manifest, safe_name, unit_key
from pipeline.dataset.storage import StorageOptions, parse_storage_options, redact
from pipeline.errors import InputError

OPTS = StorageOptions()


def _touch_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"not decoded here")


def test_manifest_formats_agree(tmp_path: Path) -> None:
    _touch_videos(tmp_path / "clips", ["a.mp4", "b.mp4"])
    rows = [
        {"video": "clips/a.mp4", "prompt": ["a cat", "a dog"], "label": 1},
        {"video": "clips/b.mp4", "prompt": "a cow", "label": 2},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text('video,prompt,label\nclips/a.mp4,"[""a cat"", ""a dog""]",1\nclips/b.mp4,a cow,2\n')
    pq.write_table(
        pa.table({"video": ["clips/a.mp4", "clips/b.mp4"], "prompt": [["a cat", "a dog"], ["a cow"]], "label": [1, 2]}),
        tmp_path / "m.parquet",
    )
    seen = []
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        m = load_manifest(str(tmp_path / name), OPTS)
        seen.append([(u.id, u.video, u.prompt, u.row) for u in m.units])
        assert m.carried.column_names == ["label"]
        assert [v.name for v in m.videos()] == [m.units[0].name, m.units[2].name]
    assert seen[0] == seen[1] == seen[2]
    # Relative video paths are relative to the manifest's folder, and become absolute.
    assert seen[0][0][1] == str(tmp_path / "clips" / "a.mp4")


def test_ids_are_stable_and_names_safe(tmp_path: Path) -> None:
    assert derive_id("s3://b/x/My Clip.mp4") == derive_id("s3://b/x/My Clip.mp4")
    assert derive_id("s3://b/x/clip.mp4") != derive_id("s3://b/y/clip.mp4")  # same stem, other URL
    for evil in ("../../etc/passwd", "/abs/path", "..", ".hidden", "a/b", "x" * 300, "é ü"):
        name = safe_name(evil)
        assert "/" not in name and ".." not in name and not name.startswith(".") and len(name) < 100
    assert safe_name("clip_001.v2") == "clip_001.v2"
    key = unit_key(safe_name("../up"), "../../a prompt/with slashes")
    assert "/" not in key and not key.startswith(".")
    out = resume.output_url("/data/out", key)
    assert os.path.dirname(out) == "/data/out/videos"
    assert unit_key("v", "A cat!") != unit_key("v", "a cat")  # slugs collide, hashes do not


def test_unsafe_ids_from_manifest_stay_under_output(tmp_path: Path) -> None:
    _touch_videos(tmp_path, ["a.mp4"])
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "../../escape", "video": "a.mp4", "prompt": "/etc/x"}) + "\n")
    (u,) = load_manifest(str(tmp_path / "m.jsonl"), OPTS).units
    assert u.id == "../../escape"  # kept as a label
    assert "/" not in u.key and ".." not in u.key


def test_folder_and_glob_with_prompts(tmp_path: Path) -> None:
    _touch_videos(tmp_path / "v", ["b.mp4", "a.mov", "notes.txt", ".hidden.mp4"])
    m = load_manifest(str(tmp_path / "v"), OPTS, prompts=["p1", "p2"])
    assert [(Path(u.video).name, u.prompt) for u in m.units] == [
        ("a.mov", "p1"),
        ("a.mov", "p2"),
        ("b.mp4", "p1"),
        ("b.mp4", "p2"),
    ]
    g = load_manifest(str(tmp_path / "v" / "*.mp4"), OPTS, prompts=["p"])
    assert [Path(u.video).name for u in g.units] == ["b.mp4"]
    with pytest.raises(InputError, match="no prompt"):
        load_manifest(str(tmp_path / "v"), OPTS)


def test_manifest_errors_are_one_line_input_errors(tmp_path: Path) -> None:
    (tmp_path / "novideo.csv").write_text("clip,prompt\na.mp4,x\n")
    (tmp_path / "dup.jsonl").write_text(
        json.dumps({"video": "a.mp4", "prompt": "x"}) + "\n" + json.dumps({"video": "a.mp4", "prompt": "x"}) + "\n"
    )
    (tmp_path / "clash.csv").write_text("video,prompt,status\na.mp4,x,1\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    cases = {
        "novideo.csv": "needs a 'video' column",
        "dup.jsonl": "listed twice",
        "clash.csv": "clash",
        "bad.jsonl": "not valid JSON",
        "missing.parquet": "no such file",
        "table.xlsx": "not a table",
    }
    for name, match in cases.items():
        with pytest.raises(InputError, match=match) as e:
            load_manifest(str(tmp_path / name), OPTS)
        assert "\n" not in str(e.value)


def test_labels_named_like_result_columns_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 8 item 5: reserved names come from the one results schema, metric columns included; a
    clash is one line and exit 2 before any work (no output written). A label only clashes with the
    tables its verb writes: `caption` is fine for `run`, not for `relabel` (labels.parquet has one)."""
    from jobs.cli import main
    from pipeline.dataset.tables import LABELS, RESULTS, RESULTS_SCHEMA, reserved

    _touch_videos(tmp_path, ["a.mp4"])
    assert {"group_size", "clip_text", "input_pixel_mse"} <= reserved(RESULTS)
    assert set(RESULTS_SCHEMA.names) <= reserved(RESULTS) and "caption" in reserved(LABELS)
    for label in ("group_size", "clip_text", "input_pixel_mse"):
        (tmp_path / "m.jsonl").write_text(json.dumps({"video": "a.mp4", "prompt": "x", label: 1}) + "\n")
        out = tmp_path / f"out-{label}"
        argv = ["run", "--manifest", str(tmp_path / "m.jsonl"), "--output", str(out), "--model", "tiny"]
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and repr(label) in err and "results.parquet" in err, err
        assert not (out / "results.parquet").exists() and not (out / "videos").exists()
    (tmp_path / "c.jsonl").write_text(json.dumps({"video": "a.mp4", "prompt": "x", "caption": "c"}) + "\n")
    assert load_manifest(str(tmp_path / "c.jsonl"), OPTS).carried.column_names == ["caption"]
    with pytest.raises(InputError, match="'caption' clash with columns that labels.parquet"):
        load_manifest(str(tmp_path / "c.jsonl"), OPTS, tables=(LABELS,))


def test_same_video_in_several_rows_is_one_video(tmp_path: Path) -> None:
    _touch_videos(tmp_path, ["a.mp4"])
    (tmp_path / "m.csv").write_text("video,prompt,label\na.mp4,x,1\na.mp4,y,2\n")
    m = load_manifest(str(tmp_path / "m.csv"), OPTS)
    (job,) = m.videos()
    assert [u.prompt for u in job.units] == ["x", "y"]
    assert m.carried_rows([u.row for u in job.units]).column("label").to_pylist() == [1, 2]


def test_atomic_writes_leave_no_temporaries(tmp_path: Path) -> None:
    url = str(tmp_path / "deep" / "f.bin")
    storage.write_bytes(url, b"one", OPTS)
    storage.write_bytes(url, b"two", OPTS)
    src = tmp_path / "src.bin"
    src.write_bytes(b"three")
    storage.put_file(str(src), str(tmp_path / "deep" / "g.bin"), OPTS)
    assert sorted(os.listdir(tmp_path / "deep")) == ["f.bin", "g.bin"]
    assert storage.read_bytes(url, OPTS) == b"two"
    assert storage.list_names(str(tmp_path / "nothing"), OPTS) == []
    # What a process killed mid-write leaves behind is cleaned up by the next run.
    (tmp_path / "deep" / ".f.bin.tmp-0123456789ab").write_bytes(b"half")
    (tmp_path / ".keep-me").write_bytes(b"")
    assert storage.remove_stale_temporaries(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path / "deep")) == ["f.bin", "g.bin"] and (tmp_path / ".keep-me").exists()


def test_storage_options_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecretvalue")
    opts = parse_storage_options(pairs=["key=AKIAEXAMPLE", "secret=s3cr3tvalue", "use_ssl=false"])
    assert opts.endpoint_url == "http://127.0.0.1:9"
    assert opts.for_url("s3://b/k") == {
        "key": "AKIAEXAMPLE",
        "secret": "s3cr3tvalue",
        "use_ssl": False,
        "endpoint_url": "http://127.0.0.1:9",
    }
    assert opts.for_url("/local/path") == {}
    for text in (repr(opts), str(opts)):
        assert "s3cr3t" not in text and "AKIA" not in text
    assert redact("denied for s3cr3tvalue and envsecretvalue", opts) == "denied for *** and ***"
    with pytest.raises(InputError):
        parse_storage_options(pairs=["novalue"])


def test_resume_three_functions(tmp_path: Path) -> None:
    out = str(tmp_path)
    _touch_videos(tmp_path / "v", ["a.mp4", "b.mp4"])
    m = load_manifest(str(tmp_path / "v"), OPTS, prompts=["x"])
    a, b = m.units
    assert resume.pending(m.units, {}) == [a, b]
    storage.write_bytes(resume.output_url(out, a.key), b"mp4", OPTS)  # a unit is done when its output exists too
    resume.mark_done(out, a.key, {"status": "ok", "id": a.id}, "settings-1", OPTS)
    assert resume.is_done(out, a.key, "settings-1", OPTS) == {"status": "ok", "id": a.id}
    assert resume.is_done(out, a.key, "settings-2", OPTS) is None
    done, stale = resume.done_rows(out, "settings-1", OPTS)
    assert list(done) == [a.key] and stale == 0
    assert resume.pending(m.units, done) == [b]
    done, stale = resume.done_rows(out, "settings-2", OPTS)  # other settings: redo, and say so
    assert done == {} and stale == 1


def test_augment_template_choice_is_seeded_and_distinct(tmp_path: Path) -> None:
    from jobs.augment import read_templates
    from pipeline.dataset.datasets import choose

    f = tmp_path / "t.txt"
    f.write_text("# comment\n{caption}, snow\n\nwatercolor\n")
    templates = read_templates(["neon", "watercolor"], str(f))
    assert templates == ["neon", "watercolor", "{caption}, snow"]
    one = choose(templates, "vid-1", 2)
    assert one == choose(templates, "vid-1", 2) and len(set(one)) == 2
    assert choose(templates, "vid-1", 5) == templates
    with pytest.raises(InputError):
        read_templates([], None)


def test_submit_entrypoint_refuses_credentials() -> None:
    from jobs.submit import entrypoint

    cmd = entrypoint(["--", "run", "--manifest", "s3://b/m.csv", "--output", "s3://b/o", "--prompt", "a b"])
    assert cmd == "python -m jobs.run --manifest s3://b/m.csv --output s3://b/o --prompt 'a b'"
    for bad in (["--storage-option", "secret=x"], ["--storage-option=key=AKIA"]):
        with pytest.raises(InputError, match="credentials"):
            entrypoint(["run", "--manifest", "m", "--output", "o", *bad])
    with pytest.raises(InputError):
        entrypoint(["edit", "x"])


def test_cluster_yaml_has_what_the_launcher_needs() -> None:
    import yaml

    path = Path(__file__).resolve().parents[1] / "cluster.yaml"
    cfg = yaml.safe_load(path.read_text())
    for key in (
        "cluster_name",
        "max_workers",
        "provider",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in cfg, key
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0  # CPU head
    gpu = [t for name, t in types.items() if name != cfg["head_node_type"] and t["resources"].get("GPU", 0) > 0]
    assert gpu and gpu[0]["max_workers"] > gpu[0].get("min_workers", 0)  # autoscaling GPU workers
    assert any("pip install" in c for c in cfg["setup_commands"])
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start or "--dashboard-host 127.0.0.1" in start  # not public
    assert "0.0.0.0" not in start


def test_precompute_turns_bad_videos_into_failed_metas(tmp_path: Path) -> None:
    """Too long for --max-frames, empty file, missing: data, not exceptions (decode fails before any model)."""
    from fixtures.clips import write_sample_video
    from pipeline.stages.options import PrecomputeSpec
    from pipeline.stages.precompute import PrecomputeStage

    write_sample_video(tmp_path / "long.mp4", num_frames=3, width=64, height=64)
    (tmp_path / "empty.mp4").write_bytes(b"")
    spec = PrecomputeSpec(output=str(tmp_path / "out"), model="tiny", caption_model="tiny", size=(64, 64), max_frames=2)
    cases = {
        "long.mp4": "limit of 2|more than 2",
        "empty.mp4": "not a readable video|no streams",
        "gone.mp4": "no such",
    }
    for name, match in cases.items():
        meta = PrecomputeStage(spec, OPTS).run(name, str(tmp_path / name), True)
        assert meta["status"] == "failed" and re.search(match, meta["error"]), meta
    assert not list((tmp_path / "out").rglob("meta.json"))  # nothing half-made in the store
