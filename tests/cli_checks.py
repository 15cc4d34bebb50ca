"""What the bad-input tests share: a command that must fail with exactly one error line, and stand-in
input files that are never decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, *needles: str) -> str:
    """`pix2video ARGV` exits with `code` and prints one line, `pix2video VERB: error: ...`, holding
    every needle; returns it."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"pix2video {argv[0]}: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def touch(folder: Path, *names: str) -> Path:
    """Files `folder/NAME` (sub-folders made) that exist but are never decoded; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not decoded here")
    return folder
