#!/usr/bin/env bash
# Fill .whl/ and .whl-ray/ (both ignored by git) with what the GPU machine's image lacks for
# benchmarks/gpu_check.sh: its Python is 3.12 with PyTorch, transformers, numpy, pyarrow, pynvml
# (nvidia-ml-py), … but no diffusers, PyAV or Ray, and it reaches no package registry. Run here, where
# pip reaches PyPI; then carry the folders with the device tool (64 MiB per call, the repository
# included: about 18 MiB), in two calls on one warm machine:
#
#   1. carry [".whl-ray"]: bash benchmarks/gpu_check.sh --install-only          # Ray into .site/
#   2. carry [".whl"]:     bash benchmarks/gpu_check.sh                          # the rest, then the check
#
# .whl/ (diffusers, PyAV: every step needs them) is about 42 MB; .whl-ray/ holds Ray's missing
# dependencies and Ray itself as a slimmed .tar.xz (about 28 MB): its wheel is 79 MB, of which a 34 MB
# Java jar, the dashboard's web client and the RLlib, Serve, Tune, Train, Data and LLM libraries are not
# needed by a local Ray instance that runs Python actors and tasks. If the second call lands on a fresh
# machine (the first one went back), every step runs but the Ray one, which says that Ray is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PIP=(python3 -m pip download -q --no-deps "${PLATFORM[@]}")
RAY=ray==2.60.0
mkdir -p .whl .whl-ray
rm -f .whl/*.whl .whl/*.tar.xz .whl-ray/*.whl .whl-ray/*.tar.xz

# The image lacks these (the device README's package list): diffusers needs importlib-metadata; Ray
# needs jsonschema and its three; the rest of both is there.
AV=$(.venv/bin/python -c 'import av; print(av.__version__)' 2>/dev/null || echo 18.1.0)  # ours, if installed
"${PIP[@]}" -d .whl diffusers==0.42.1 importlib-metadata "av==$AV"
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
