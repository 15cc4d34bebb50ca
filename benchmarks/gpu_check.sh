#!/usr/bin/env bash
# The GPU check (issue 19), one command: the CUDA path end to end (tiny model, in process and through
# `pix2video run` on local Ray), `pix2video bench` on the real-size SD2-depth UNet + VAE (random
# weights) for both schedules and 1 and 4 prompts, and every speed option on against off. Every figure
# is one JSON line in OUT/gpu_check.jsonl; a summary table is printed last (benchmarks/gpu_check.py
# says what each step does). About 7 minutes on one H100; at most --budget-s (450 s) of steps.
#
#   bash benchmarks/gpu_check.sh [OUT] [gpu_check.py flags]   # OUT defaults to $OUT
#   bash benchmarks/gpu_check.sh /tmp/check --cpu-smoke       # the same steps at tiny sizes on a CPU
#   bash benchmarks/gpu_check.sh --install-only               # only install what .whl*/ carries
#
# Packages the GPU machine lacks come as wheels in .whl/ (and .whl-*/ when one copy to the machine
# cannot hold them all; benchmarks/gpu_wheels.sh fills them): they are installed into .site/ in the
# repository, which stays on the machine between runs, so a first run can bring and install one folder
# and the next the rest. A slimmed Ray comes as a .tar.xz bundle there (its wheel alone is 79 MB).
# Without a GPU the check runs its CPU smoke mode.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUTDIR=${OUT:-}
if [[ $# -gt 0 && $1 != -* ]]; then OUTDIR=$1; shift; fi
INSTALL_ONLY=0
if [[ ${1:-} == --install-only ]]; then INSTALL_ONLY=1; shift; fi
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python   # the project's own environment (dev machine)
else PY=python3; fi                                          # the GPU image's Python with PyTorch
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch: install the project (README, Install) or set PYTHON" >&2
    exit 2
fi

SITE=$ROOT/.site
# What the check imports beyond the GPU image's packages. A Python that has them all (the project's
# .venv, an installed project) installs nothing, whatever wheels lie in the checkout.
NEEDED='import diffusers, av, ray, scenedetect'
shopt -s nullglob
if PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} "$PY" -c "$NEEDED" 2>/dev/null; then
    echo "$PY has every package the check needs: no wheels installed"
else
    for folder in .whl .whl-*; do
        [[ -d $folder ]] || continue
        wheels=("$folder"/*.whl)
        bundles=("$folder"/*.tar.xz)
        mkdir -p "$SITE"
        # A folder installed by an earlier run on this machine (the same files) is not installed again.
        stamp=$SITE/.installed-$folder
        listing=$(ls -l "$folder")
        if [[ -f $stamp && $(<"$stamp") == "$listing" ]]; then
            echo "$folder already installed into .site"
            continue
        fi
        if ((${#wheels[@]})); then
            echo "installing ${#wheels[@]} wheels from $folder into .site"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
                "${wheels[@]}" || { echo "gpu_check: pip could not install $folder/*.whl" >&2; exit 3; }
        fi
        for bundle in "${bundles[@]}"; do
            echo "unpacking $bundle into .site"
            tar -xJf "$bundle" -C "$SITE" || { echo "gpu_check: could not unpack $bundle" >&2; exit 3; }
        done
        echo "$listing" >"$stamp"
    done
fi
if [[ -d $SITE ]]; then
    export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}
    # `--model tiny` is found through the project's entry points: without an installed pix2video,
    # give .site a minimal distribution record with the entry points of pyproject.toml.
    "$PY" - "$SITE" <<'EOF' || exit 3
import importlib.metadata as md, pathlib, sys, tomllib
if not any(ep.name == "tiny" for ep in md.entry_points(group="pix2video.models")):
    project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
    info = pathlib.Path(sys.argv[1]) / f"pix2video-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pix2video\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in groups.items())
    )
    print(f"wrote {info.name} (entry points) into .site")
EOF
else
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
((INSTALL_ONLY)) && { echo "installed into .site; run this script again without --install-only"; exit 0; }
if [[ -z $OUTDIR ]]; then echo "usage: bash benchmarks/gpu_check.sh OUT [flags] (or set \$OUT)" >&2; exit 2; fi
mkdir -p "$OUTDIR"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
"$PY" benchmarks/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
