"""What a hostile user found (issue 24, item 6), the cases that need no Ray: a signed manifest URL,
credentials handed to `submit`, a shot list in the wrong order, numbers out of range, text that is
not UTF-8, links in a loop, a full disk, storage that cannot be reached or is given a bad option, an
unbounded default size, and error lines that named the wrong thing. Each is one line or a kept
promise (README)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import one_line_error, touch

from pipeline.dataset import resume
from pipeline.dataset.manifest import load_manifest, safe_name
from pipeline.dataset.storage import StorageOptions, parse_storage_options
from pipeline.errors import InputError

# The local HTTP server of tests/test_hostile.py.
from tests.test_hostile import http_root  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
OPTS = StorageOptions()
RUN = ["--model", "tiny", "--steps", "1", "--size", "64x64", "--no-progress"]
SECRET = "s3cr3t-Value-9876"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once it is closed


# -- a signed manifest URL ----------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["?token=S1gnature", "?v=1", "?X-Amz-Credential=AKIA%2F2024%2Fus&X-Amz-Signature=ab"])
def test_a_manifest_url_with_a_query_is_read_as_its_table(http_root, query) -> None:  # noqa: F811
    root, base = http_root
    (root / "data").mkdir()
    (root / "data" / "rel.csv").write_text("video,prompt\nclips/a.mp4,a painting\n")
    manifest = load_manifest(f"{base}/data/rel.csv{query}", OPTS)
    # Relative videos are next to the table, not next to a signature's slashes.
    assert [u.video for u in manifest.units] == [f"{base}/data/clips/a.mp4"]


# -- submit never stores credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--", "relabel", "--manifest", f"http://alice:{SECRET}@127.0.0.1/m.csv", "--output", "s3://b/o"],
        ["--", "run", f"--manifest=https://h.example/m.csv?X-Amz-Signature={SECRET}", "--output", "s3://b/o"],
        ["--env", f"AWS_SECRET_ACCESS_KEY={SECRET}", "--", "run", "--manifest", "s3://b/m.csv", "--output", "o"],
        ["--env", f"MANIFEST=http://bob:{SECRET}@h/m.csv", "--", "run", "--manifest", "m", "--output", "o"],
    ],
)
def test_submit_refuses_credentials_before_contacting_a_cluster(capsys, argv) -> None:
    # A closed port: a submit that got as far as the cluster would fail differently (and slowly).
    address = f"http://127.0.0.1:{_closed_port()}"
    err = one_line_error(
        capsys, ["submit", "--address", address, *argv], 2, "credentials" if "--env" not in argv else "secret"
    )
    assert SECRET not in err


# -- a manifest's shots in the wrong order fail that clip, not the run --------------------------------


def test_shots_out_of_order_fail_only_that_clips_rows(tmp_path) -> None:
    from pipeline.stages.options import PrecomputeSpec
    from pipeline.stages.precompute import _find_shots, _shots_of

    touch(tmp_path, "a.mp4", "b.mp4")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"video": "a.mp4", "prompt": "p", "shots": [5, 3]})
        + "\n"
        + json.dumps({"video": "b.mp4", "prompt": "p", "shots": [0, 2]})
        + "\n"
    )
    units = load_manifest(str(tmp_path / "m.jsonl"), OPTS).units
    assert [u.shots for u in units] == [(5, 3), (0, 2)]
    # What precompute does with the clip's shots once it knows its length: an InputError there is
    # that clip's failed record (PrecomputeStage.run), the other clip goes on.
    spec = PrecomputeSpec(output=str(tmp_path / "o"), model="tiny", caption_model="tiny")
    with pytest.raises(InputError, match="increasing"):
        _find_shots(_shots_of(spec, units[0].shots), None, 10, units[0].video)
    assert _find_shots(_shots_of(spec, units[1].shots), None, 10, units[1].video) == [0, 2]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"video": "a.mp4", "prompt": "p", "shots": ["x"]}) + "\n")
    with pytest.raises(InputError, match="row 1"):  # a list that is no list of frames still refuses the run
        load_manifest(str(tmp_path / "bad.jsonl"), OPTS)


# -- numbers out of range: refused before any work --------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--anchor-refresh", "3000000000"),
        ("--seed", "99999999999"),
        ("--max-batch", "4294967296"),
        ("--prefetch", "4294967296"),
        ("--precompute-cpus", "nan"),
        ("--cpus-per-editor", "inf"),
    ],
)
def test_numeric_flags_out_of_range_are_refused_before_any_work(capsys, tmp_path, flag, value) -> None:
    vin = touch(tmp_path / "in", "a.mp4")
    out = tmp_path / "out"
    one_line_error(
        capsys, ["run", "--manifest", str(vin), "--output", str(out), "--prompt", "x", flag, value, *RUN], 2, flag
    )
    assert not out.exists()


def test_num_cpus_zero_is_named_as_itself(capsys, tmp_path) -> None:
    vin = touch(tmp_path / "in", "a.mp4")
    argv = ["run", "--manifest", str(vin), "--output", str(tmp_path / "o"), "--prompt", "x", "--num-cpus", "0", *RUN]
    err = one_line_error(capsys, argv, 2, "--num-cpus")
    assert "--precompute-cpus" not in err


# -- text that is not UTF-8 -------------------------------------------------------------------------

NOT_UTF8 = b"a \xff painting".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes


def test_a_prompt_that_is_not_utf8_is_one_line(capsys, tmp_path) -> None:
    vin = touch(tmp_path / "in", "a.mp4")
    one_line_error(
        capsys, ["run", "--manifest", str(vin), "--output", str(tmp_path / "o"), "--prompt", NOT_UTF8, *RUN], 2
    )
    one_line_error(capsys, ["edit", str(vin / "a.mp4"), "-o", str(tmp_path / "e.mp4"), "--prompt", NOT_UTF8, *RUN], 2)
    assert not (tmp_path / "o").exists() and not (tmp_path / "e.mp4").exists()


def test_a_lone_surrogate_in_a_jsonl_prompt_names_its_row(tmp_path) -> None:
    touch(tmp_path, "a.mp4")
    (tmp_path / "m.jsonl").write_text('{"video": "a.mp4", "prompt": "ok"}\n{"video": "a.mp4", "prompt": "x\\ud800"}\n')
    with pytest.raises(InputError, match="row 2: column 'prompt': not UTF-8"):
        load_manifest(str(tmp_path / "m.jsonl"), OPTS)


def test_an_augment_prompts_file_that_is_not_utf8_is_one_line(tmp_path) -> None:
    from jobs.augment import read_templates

    (tmp_path / "p.txt").write_bytes(b"neon\n\xff\xfe watercolor\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_templates([], str(tmp_path / "p.txt"))


# -- links in a loop, a full disk --------------------------------------------------------------------


def test_a_link_in_a_loop_is_one_line(capsys, tmp_path) -> None:
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    one_line_error(capsys, ["edit", str(loop), "-o", str(tmp_path / "e.mp4"), "--prompt", "x", *RUN], 2, "link")
    one_line_error(
        capsys, ["run", "--manifest", str(loop), "--output", str(tmp_path / "o"), "--prompt", "x", *RUN], 2, "link"
    )


def test_edit_on_a_full_disk_is_one_line_and_keeps_the_old_output(tmp_path, tiny_model_dir) -> None:
    from fixtures.clips import write_sample_video

    clip = write_sample_video(tmp_path / "clip.mp4", num_frames=4, width=64, height=64, fps=8.0)
    out = tmp_path / "out" / "edited.mp4"
    out.parent.mkdir()
    out.write_bytes(b"the old output")
    limit = 2048  # bytes per file: the encoded clip is larger, the process's other writes are not

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jobs.cli", "edit", str(clip), "-o", str(out), "--prompt", "x", *RUN]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=limited, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("pix2video edit: error:"), proc.stderr[-2000:]
    assert "could not be written" in proc.stderr
    assert out.read_bytes() == b"the old output"
    assert [p.name for p in out.parent.iterdir()] == ["edited.mp4"]  # no temporary left


# -- storage that cannot be reached, or is given an option it does not take -------------------------


def test_an_unknown_storage_option_for_an_s3_manifest_is_one_line(capsys, tmp_path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    argv = ["run", "--manifest", "s3://bucket/m.csv", "--output", str(tmp_path / "o"), "--endpoint-url", endpoint]
    one_line_error(capsys, [*argv, "--storage-option", "bogus=X", *RUN], 2, "'bogus'", "--storage-option")


def test_an_unreachable_s3_endpoint_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try: the line, not botocore's retries, is tested
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    argv = ["run", "--manifest", "s3://bucket/m.csv", "--output", str(tmp_path / "o"), "--endpoint-url", endpoint]
    one_line_error(capsys, [*argv, *RUN], 1, "cannot connect")
    vin = touch(tmp_path / "in", "a.mp4")  # and an s3 output there, with a local manifest
    argv = ["run", "--manifest", str(vin), "--output", "s3://bucket/o", "--endpoint-url", endpoint, "--prompt", "x"]
    one_line_error(capsys, [*argv, *RUN], 1, "--output s3://bucket/o", "cannot connect")


def test_an_http_manifest_refused_or_misconfigured_is_not_called_missing(capsys, tmp_path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/m.csv"
    base = ["run", "--manifest", url, "--output", str(tmp_path / "o"), *RUN]
    err = one_line_error(capsys, base, 1, "cannot connect")
    assert "no such file" not in err
    err = one_line_error(capsys, [*base, "--storage-option", "bogus=X"], 2, "'bogus'")
    assert "no such file" not in err


def test_an_http_output_is_refused_before_any_work(capsys, tmp_path) -> None:
    vin = touch(tmp_path / "in", "a.mp4")
    argv = ["run", "--manifest", str(vin), "--output", f"http://127.0.0.1:{_closed_port()}/out", "--prompt", "x"]
    one_line_error(capsys, [*argv, *RUN], 2, "HTTP")
    with pytest.raises(InputError, match="HTTP"):
        resume.check_output_location("https://h.example/out")


# -- the 4096-per-side cap holds for the default size too -------------------------------------------


def test_the_default_size_stays_within_the_cap() -> None:
    from pipeline.io.frames import MAX_SIDE, default_size, parse_size
    from pipeline.models.sizes import ModelSizes

    for w, h in ((16, 2048), (2048, 16), (1, 100000), (640, 360)):
        for size in (default_size(w, h), ModelSizes().default_size(w, h)):
            assert max(size) <= MAX_SIDE and min(size) >= 64, (w, h, size)
            assert parse_size(f"{size[0]}x{size[1]}") == size  # what a typed --size may be
    assert default_size(640, 360) == (896, 512)  # an ordinary clip: as before
    assert default_size(16, 2048) == (64, 4096)


# -- lines that named the wrong thing ---------------------------------------------------------------


def test_a_video_given_as_the_manifest_is_called_a_video(tmp_path) -> None:
    clip = touch(tmp_path, "clip.mp4") / "clip.mp4"
    with pytest.raises(InputError, match="is a video, not a manifest") as e:
        load_manifest(str(clip), OPTS, prompts=["x"])
    assert "no videos found" not in str(e.value)
    with pytest.raises(InputError, match="no such file or folder"):
        load_manifest(str(tmp_path / "missing"), OPTS, prompts=["x"])


def test_report_on_a_video_file_says_it_is_a_file(capsys, tmp_path) -> None:
    clip = touch(tmp_path, "clip.mp4") / "clip.mp4"
    err = one_line_error(capsys, ["report", str(clip)], 2, "is a file")
    assert "rerun" not in err


def test_the_precompute_bar_is_named_from_its_first_draw(capsys) -> None:
    from actors.runner import _Progress

    progress = _Progress(1, True, desc="precompute")
    progress.close()
    err = capsys.readouterr().err
    assert "precompute" in err and "editing" not in err


@pytest.mark.parametrize("reserved", ["con", "CON", "prn", "Aux", "nul", "com1", "COM9", "lpt1", "lpt9", "nul.v2"])
def test_windows_device_names_get_a_hash(reserved) -> None:
    name = safe_name(reserved)
    assert name != reserved and name.split(".")[0].split("-")[0] == reserved.lower().split(".")[0].replace(".", "-")
    assert name.split(".", 1)[0].lower() not in {"con", "prn", "aux", "nul", "com1", "com9", "lpt1", "lpt9"}


def test_names_like_device_names_but_not_them_are_kept() -> None:
    for plain in ("console", "con1", "com10", "lpt", "auxiliary", "nully"):
        assert safe_name(plain) == plain


def test_storage_errors_are_read_from_the_wrapped_cause() -> None:
    from pipeline.dataset.manifest import storage_error
    from pipeline.errors import Failure

    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed")
        except ConnectionRefusedError as inner:
            raise FileNotFoundError("http://h/m.csv") from inner
    except FileNotFoundError as e:
        assert isinstance(storage_error(e, "manifest x"), Failure)
    assert storage_error(FileNotFoundError("x"), "manifest x") is None  # a plain missing file: the caller's words
    found = storage_error(TypeError("f() got an unexpected keyword argument 'bogus'"), "manifest x")
    assert isinstance(found, InputError) and "'bogus'" in str(found)
    assert parse_storage_options(pairs=["bogus=X"]).extra == {"bogus": "X"}  # refused where it is used, not here


# -- the driver's scan of an object store ----------------------------------------------------------


def test_an_s3_scan_reads_only_markers_it_has_not_read_before(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first scan reads every marker and keeps them in OUTPUT/markers-index.parquet; the next reads
    only a changed or new marker; a marker gone since is not done though the index still holds it."""
    opts = parse_storage_options(endpoint_url=s3_endpoint)
    from pipeline.dataset import storage

    fs, _ = storage.filesystem("s3://scan-bucket", opts)
    fs.mkdir("scan-bucket")
    out = "s3://scan-bucket/out"
    for i in range(5):
        storage.write_bytes(resume.output_url(out, f"k{i}"), b"mp4", opts)
        resume.mark_done(out, f"k{i}", {"id": f"v{i}", "status": "ok"}, "s", opts)
    reads: list[int] = []
    cat = fs.cat  # fsspec caches filesystems: resume's is this one

    def counting(paths, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        reads.append(len(paths))
        return cat(paths, *a, **k)

    monkeypatch.setattr(fs, "cat", counting)
    done, _ = resume.done_rows(out, "s", opts)
    assert sorted(done) == [f"k{i}" for i in range(5)] and reads == [5]
    assert storage.exists(storage.join(out, resume.INDEX), opts)
    resume.mark_done(out, "k1", {"id": "v1", "status": "ok", "num_frames": 7}, "s", opts)  # redone
    storage.write_bytes(resume.output_url(out, "k9"), b"mp4", opts)
    resume.mark_done(out, "k9", {"id": "v9", "status": "ok"}, "s", opts)  # new
    fs.rm(resume.marker_url(out, "k3").removeprefix("s3://"))  # gone
    done, _ = resume.done_rows(out, "s", opts)
    assert reads == [5, 2]  # k1 and k9 only
    assert sorted(done) == ["k0", "k1", "k2", "k4", "k9"] and done["k1"]["num_frames"] == 7
    done, _ = resume.done_rows(out, "s", opts)
    assert reads == [5, 2] and len(done) == 5  # nothing new: no marker read at all
