#!/usr/bin/env bash
# Create .venv and install impala-rl with everything its tests and main job need.
# Safe to re-run: it only installs what is missing.
#
# torch: on a machine without CUDA we install the CPU build of torch 2.13.0 (a local
# wheel when pip's find-links has one, else PyTorch's CPU index), never PyPI's
# multi-GB CUDA build. With an NVIDIA driver present, PyPI's default (CUDA) build is used.
# Extras: IMPALA_EXTRAS (default "dev,ray": the tests include the Ray backend's) selects optional
# dependency groups, e.g. IMPALA_EXTRAS=dev for a set-up without Ray (its tests are then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${IMPALA_EXTRAS:-dev,ray}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
    "${PIP[@]}" install "torch==$TORCH_VERSION"
  else
    echo "[setup] no CUDA: installing the CPU build of torch==$TORCH_VERSION"
    # A local CPU wheel (pip's find-links) first; its dependencies come from the index.
    if "${PIP[@]}" install -q --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
      "${PIP[@]}" install -q "torch==$TORCH_VERSION"
    else
      "${PIP[@]}" install "torch==$TORCH_VERSION" \
           --index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" \
           --extra-index-url "${PIP_INDEX_URL:-https://pypi.org/simple}"
    fi
  fi
fi

stamp=".venv/.impala-installed-$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing impala-rl[$EXTRAS] (editable)"
  "${PIP[@]}" install -q -e ".[$EXTRAS]"
  rm -f .venv/.impala-installed-* && touch "$stamp"
fi
