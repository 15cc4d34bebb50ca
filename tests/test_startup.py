"""A light start-up (issue 25 item 6): `--help` and usage errors of every verb import none of torch,
diffusers, transformers, Ray or PyAV, so they answer in well under a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "ray", "av")

# Each: argv for `pix2video`, and the exit status it must give (0: help; 2: a usage error).
VERBS = ("edit", "bench", "run", "relabel", "augment", "demo", "submit", "evaluate", "report", "ablate", "train-toy")
CASES = [([verb, "--help"], 0) for verb in VERBS]
CASES += [
    (["edit", "in.mp4", "-o", "out.mp4", "--prompt", "p", "--guidance-scale", "nan"], 2),
    (["edit", "in.mp4", "-o", "out.mp4", "--prompt", "p", "--steps", "0"], 2),
    (["run", "--manifest", "m.csv", "--output", "out", "--num-editors", "0"], 2),
    (["run", "--manifest", "m.csv", "--output", "out", "--schedule", "nope"], 2),
]

_PROBE = """
import contextlib, io, json, sys
from jobs.cli import main
out = {}
for argv, _ in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    out[" ".join(argv)] = [code, sorted(m for m in sys.modules if m.split(".")[0] in %r)]
print(json.dumps(out))
"""


def test_every_verb_is_probed() -> None:
    from jobs.cli import VERBS as ALL

    assert set(VERBS) == set(ALL)


def test_help_and_usage_errors_import_no_heavy_library(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,), json.dumps(CASES)],
        cwd=tmp_path,  # relative inputs that do not exist: a usage error must not need them
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    for argv, code in CASES:
        got, heavy = seen[" ".join(argv)]
        assert got == code, (argv, got)
        assert not heavy, f"pix2video {' '.join(argv)} imported {heavy[:5]}"
