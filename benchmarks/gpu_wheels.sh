#!/usr/bin/env bash
# Fill .whl/ and .whl-ray/ (both ignored by git) with what the GPU machine's image lacks for
# benchmarks/gpu_check.sh: its Python is 3.12 with PyTorch, transformers, numpy, pyarrow, pynvml
# (nvidia-ml-py), opencv, click, tqdm, … but no diffusers, PyAV, PySceneDetect or Ray, and it reaches
# no package registry. Run here, where pip reaches PyPI; then copy the folders to the GPU machine with
# the repository. Where what one copy may hold is limited (64 MiB with the repository's ~18 MiB), use
# two runs on one machine, which keeps .site/ between them:
#
#   1. with .whl-ray/:  bash benchmarks/gpu_check.sh --install-only      # Ray into .site/
#   2. with .whl/:      bash benchmarks/gpu_check.sh OUT                 # the rest, then the check
#
# .whl/ (diffusers, PyAV, PySceneDetect: every step needs them) is about 42 MB; .whl-ray/ holds Ray's
# missing dependencies and Ray itself as a slimmed .tar.xz (about 28 MB): its wheel is 79 MB, of which
# a 34 MB Java jar, the dashboard's web client and the RLlib, Serve, Tune, Train, Data and LLM libraries
# are not needed by a local Ray instance that runs Python actors and tasks. If the second run lands on
# a fresh machine (.site/ gone), every step runs but the Ray one, which says that Ray is missing.
# Wheels only (no builds there), no dependencies pulled in (each missing one is named below), one
# version of each (two of one package stop the whole install).
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PIP=(python3 -m pip download -q --no-deps "${PLATFORM[@]}")
RAY=ray==2.60.0
mkdir -p .whl .whl-ray
rm -f .whl/*.whl .whl/*.tar.xz .whl-ray/*.whl .whl-ray/*.tar.xz

# The image lacks these (its package list): diffusers needs importlib-metadata; PySceneDetect (shot
# cuts, `run --shots auto`) needs platformdirs; Ray needs jsonschema and its three; the rest of what
# each needs is there.
AV=$(.venv/bin/python -c 'import av; print(av.__version__)' 2>/dev/null || echo 18.1.0)  # ours, if installed
"${PIP[@]}" -d .whl diffusers==0.42.1 importlib-metadata "av==$AV" scenedetect-headless==0.7.2 platformdirs
"${PIP[@]}" -d .whl-ray jsonschema jsonschema-specifications referencing rpds-py

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PIP[@]}" -d "$tmp" "$RAY"
mkdir "$tmp/site"
unzip -q "$tmp"/ray-*.whl -d "$tmp/site"   # unzip keeps the executables' mode bits
rm -rf "$tmp"/site/ray/{jars,rllib,serve,llm,tune,train,data,workflow} "$tmp/site/ray/dashboard/client/build"
# Symbols only a debugger reads: about a quarter of the native code's size.
strip --strip-unneeded "$tmp"/site/ray/_raylet.so "$tmp"/site/ray/core/src/ray/gcs/gcs_server \
    "$tmp"/site/ray/core/src/ray/raylet/raylet 2>/dev/null || true
tar -C "$tmp/site" -cf - . | xz -T0 -6 > ".whl-ray/${RAY/==/-}-slim-cp312.tar.xz"

du -ch .whl-ray/* | tail -1 | sed 's/total/.whl-ray (first call)/'
du -ch .whl/* | tail -1 | sed 's/total/.whl (second call)/'
echo "repository (travels with each call): $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes"
