"""WebDataset shards (pipeline/dataset/shards.py; `augment`/`relabel --format webdataset`): every sample
reads back with `webdataset.WebDataset` as the table says, shards are written whole, and a rerun
writes only what is missing or changed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from jobs.cli import main as cli
from pipeline.dataset import shards
from pipeline.dataset.shards import Sample, write_shards
from pipeline.dataset.storage import StorageOptions
from pipeline.errors import InputError

OPTS = StorageOptions()


def _read(folder: Path) -> list[dict]:
    """Every sample of every shard under `folder`, in shard order, as webdataset yields them."""
    urls = sorted(str(p) for p in folder.glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def _samples(tmp_path: Path, n: int, *, version: str = "v1") -> list[Sample]:
    clips = tmp_path / "clips"
    clips.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        media = clips / f"c{i}.mp4"
        if not media.exists():
            media.write_bytes(os.urandom(100 + i))
        key = f"clip.{i}__prompt" if i == 1 else f"clip-{i}__prompt"  # one id with a dot
        out.append(Sample(shards.sample_key(key), {"id": key, "n": i}, str(media), "mp4", version))
    return out


def test_samples_read_back_with_webdataset_and_reruns_keep_complete_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    samples = _samples(tmp_path, 5)
    first = write_shards(samples, str(out), OPTS, shard_size=2)
    assert (first.shards, first.written, first.kept) == (3, 3, 0)
    assert sorted(os.listdir(out / "shards")) == [f"00000{i}{s}" for i in range(3) for s in (".tar", "_stats.json")]
    read = _read(out / "shards")
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    assert all("." not in r["__key__"] for r in read)  # webdataset splits the extension at the first dot
    for r, s in zip(read, samples, strict=True):
        assert r["mp4"] == Path(s.media).read_bytes()
        assert json.loads(r["json"]) == s.row
    stats = json.loads((out / "shards" / "000002_stats.json").read_text())
    assert stats["count"] == 1 and stats["bytes"] == (out / "shards" / "000002.tar").stat().st_size

    # The same samples: nothing written. A missing tar, or one sample at a new version: that shard only.
    assert write_shards(samples, str(out), OPTS, shard_size=2).written == 0
    (out / "shards" / "000001.tar").unlink()
    mtime = (out / "shards" / "000000.tar").stat().st_mtime_ns
    changed = samples[:4] + [Sample(samples[4].key, {"id": "new"}, samples[4].media, "mp4", "v2")]
    again = write_shards(changed, str(out), OPTS, shard_size=2)
    assert (again.written, again.kept) == (2, 1)
    assert (out / "shards" / "000000.tar").stat().st_mtime_ns == mtime
    assert json.loads(_read(out / "shards")[-1]["json"]) == {"id": "new"}

    # A table that shrank: the shards past its end go, stats first.
    fewer = write_shards(samples[:2], str(out), OPTS, shard_size=2)
    assert (fewer.shards, fewer.removed) == (1, 2)
    assert sorted(os.listdir(out / "shards")) == ["000000.tar", "000000_stats.json"]
    assert not [n for n in os.listdir(out / "shards") if n.startswith(".")]  # no temporaries left


def test_a_stopped_write_leaves_no_shard_and_the_rerun_finishes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    samples = _samples(tmp_path, 4)
    gone = samples[3].media
    os.rename(gone, gone + ".away")  # the second shard fails while it is written
    with pytest.raises(FileNotFoundError):
        write_shards(samples, str(out), OPTS, shard_size=2)
    assert sorted(os.listdir(out / "shards")) == ["000000.tar", "000000_stats.json"]  # no half tar, no temp
    os.rename(gone + ".away", gone)
    rerun = write_shards(samples, str(out), OPTS, shard_size=2)
    assert (rerun.written, rerun.kept) == (1, 1)
    assert [r["__key__"] for r in _read(out / "shards")] == [s.key for s in samples]

    # A killed writer's temporary is swept; a tar whose stats were removed before it was replaced counts as not written.
    (out / "shards" / ".000002.tar.tmp-0123456789ab").write_bytes(b"half a tar")
    assert write_shards(samples, str(out), OPTS, shard_size=2).written == 0
    assert not (out / "shards" / ".000002.tar.tmp-0123456789ab").exists()
    (out / "shards" / "000001_stats.json").unlink()
    assert write_shards(samples, str(out), OPTS, shard_size=2).written == 1


def test_shards_on_s3(tmp_path: Path) -> None:
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = StorageOptions(endpoint_url=f"http://{host}:{port}", extra={"key": "k", "secret": "s"})
        fs = fsspec.filesystem("s3", endpoint_url=f"http://{host}:{port}", key="k", secret="s")
        fs.mkdir("shards-test")  # moto keeps its buckets per process: a name no other test uses
        samples = _samples(tmp_path, 3)
        assert write_shards(samples, "s3://shards-test/aug", opts, shard_size=2).written == 2
        fs.invalidate_cache()
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("shards-test/aug/shards")) == [
            "000000.tar",
            "000000_stats.json",
            "000001.tar",
            "000001_stats.json",
        ]
        local = tmp_path / "fetched"
        local.mkdir()
        for name in ("000000.tar", "000001.tar"):
            fs.get_file(f"shards-test/aug/shards/{name}", str(local / name))
        assert [r["__key__"] for r in _read(local)] == [s.key for s in samples]
        assert write_shards(samples, "s3://shards-test/aug", opts, shard_size=2).kept == 2
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("fmt", "size", "message"),
    [("tar", None, "unknown format"), ("webdataset", 0, "at least 1"), ("parquet", 5, "only --format webdataset")],
)
def test_bad_format_flags(fmt: str, size: int | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        shards.check_format(fmt, size)


@pytest.mark.parametrize(
    "bad",
    [["--format", "webdataset", "--shard-size", "0"], ["--format", "zip"], ["--shard-size", "3"]],
)
def test_bad_format_flags_are_one_line_and_write_nothing(
    bad: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (tmp_path / "m.csv").write_text("video\nnone.mp4\n")
    for verb in ("augment", "relabel"):
        argv = [verb, "--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny", *bad]
        try:
            code = cli(argv + (["--prompt", "x"] if verb == "augment" else []))
        except SystemExit as e:  # argparse's own refusal of a choice: usage, then the one line
            code = e.code
        assert code == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith(f"pix2video {verb}: error") and ("format" in err[-1] or "shard" in err[-1])
        assert not out.exists()


def test_augment_and_relabel_shards_match_their_tables(ray_cluster: str, tmp_path: Path) -> None:
    from fixtures.clips import write_sample_video

    for i in range(2):
        write_sample_video(tmp_path / f"c{i}.mp4", num_frames=2, width=64, height=64, seed=i)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"video": f"c{i}.mp4", "label": i}) + "\n" for i in range(2)))
    out = tmp_path / "out"
    common = ["--manifest", str(tmp_path / "m.jsonl"), "--output", str(out), "--model", "tiny", "--size", "64x64"]
    common += ["--no-progress", "--format", "webdataset"]
    aug = ["augment", *common, "--prompt", "{caption}, at night", "--prompt", "snow", "--steps", "1"]
    assert cli([*aug, "--shard-size", "3"]) == 0
    rows = pq.read_table(out / "augmented.parquet").to_pylist()
    read = _read(out / "shards")
    assert len(rows) == 4 and len(list((out / "shards").glob("*.tar"))) == 2
    assert [r["__key__"] for r in read] == [shards.sample_key(r["id"]) for r in rows]
    for sample, row in zip(read, rows, strict=True):
        assert json.loads(sample["json"]) == json.loads(json.dumps(row, default=str))
        assert sample["mp4"] == Path(row["video"]).read_bytes()
    stats = json.loads((out / "stats.json").read_text())  # the run's figures (pipeline/dataset/stats.py)
    assert (stats["interrupted"], stats["by_status"], stats["units"]["done_before"]) == (False, {"ok": 4}, 0)
    assert stats["frames"]["edited_this_run"] == 4 * 2 and stats["devices"]["editors"] == ["cpu"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert cli([*aug, "--shard-size", "3"]) == 0  # a finished rerun rewrites no shard
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    again = json.loads((out / "stats.json").read_text())
    assert (again["units"]["done_before"], again["frames"]["edited_this_run"], again["by_status"]) == (4, 0, {"ok": 4})

    relabelled = tmp_path / "labels"
    argv = ["relabel", *common[:3], str(relabelled), *common[4:], "--shard-size", "1"]
    assert cli(argv) == 0
    labels = pq.read_table(relabelled / "labels.parquet").to_pylist()
    read = _read(relabelled / "shards")
    assert [json.loads(s["json"]) for s in read] == json.loads(json.dumps(labels, default=str))
    assert [s["mp4"] for s in read] == [(tmp_path / f"c{i}.mp4").read_bytes() for i in range(2)]
