#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md on a CUDA machine: bash bench/gpu_check.sh [--skip-engine]
# Sets up the environment (.ci/setup installs faiss-gpu when nvidia-smi sees a GPU), then measures.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L
[ -x .venv/bin/python ] || bash .ci/setup
exec .venv/bin/python bench/gpu_check.py "$@"
