"""The one temp-then-rename helper (pipeline/io/atomic.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io.atomic import TEMP_NAME, atomic_path, temp_sibling, write_text_atomic


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_file_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "one")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert target.read_text() == "one" and hidden(target.parent) == []
    write_text_atomic(target, "two")
    assert target.read_text() == "two" and hidden(target.parent) == []


def test_folder_is_never_clobbered_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_path(target, folder=True) as tmp:
        (tmp / "x").write_text("first")
    with pytest.raises(FileExistsError), atomic_path(target, folder=True) as tmp:
        (tmp / "x").write_text("second")
    assert (target / "x").read_text() == "first" and hidden(tmp_path) == []
    with atomic_path(target, folder=True, replace=True) as tmp:
        (tmp / "y").write_text("third")
    assert sorted(p.name for p in target.iterdir()) == ["y"] and hidden(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_path(empty, folder=True) as tmp:  # an empty folder is taken over
        (tmp / "z").write_text("z")
    assert (empty / "z").is_file()


def test_temporary_names_are_hidden_siblings_the_sweeper_knows(tmp_path: Path) -> None:
    a, b = temp_sibling(tmp_path / "out.mp4", ".mp4"), temp_sibling(tmp_path / "out.mp4", ".mp4")
    assert a != b and a.parent == tmp_path and a.name.startswith(".out.mp4.tmp-") and a.suffix == ".mp4"
    assert TEMP_NAME.match(a.name) and TEMP_NAME.match(temp_sibling(tmp_path / "results.parquet").name)
    assert not TEMP_NAME.match("out.mp4") and not TEMP_NAME.match(".hidden")


def test_scratch_folders_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    """An editor killed mid-write leaves its local scratch folder in TMPDIR; the next editor on the
    machine removes it, and never a live process's (its own, or another's)."""
    import os
    import subprocess
    import sys

    from pipeline.io.atomic import local_scratch, sweep_dead_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {
        "dead": f"pix2video-{int(dead.stdout)}-abc",
        "own": f"pix2video-{os.getpid()}-abc",
        "parent": f"pix2video-{os.getppid()}-abc",
        "other": "pix2video-report-abc",  # not a scratch folder's name
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "out.mp4").write_bytes(b"partial")
    assert sweep_dead_scratch(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead")
    with local_scratch() as folder:
        assert os.path.basename(folder).startswith(f"pix2video-{os.getpid()}-") and os.path.isdir(folder)
    assert not os.path.exists(folder)
