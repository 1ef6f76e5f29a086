#!/usr/bin/env bash
# Builds the Montage image from Containerfile with podman, on hosts that can reach no container
# registry: the base of both stages (PYTHON_IMAGE) is made here from Debian packages (debootstrap
# minbase + python3, imported with `podman import`) unless PYTHON_IMAGE names one, and pip inside
# the build uses this host's pip configuration (its index, extra indexes, find-links, constraints
# and certificate, mounted read-only at the same paths) and this host's pip cache.
#
# An image whose label org.montage.source-digest matches the digest of the build inputs
# (Containerfile, .containerignore, pyproject.toml, README.md, montaged/, tui/ and the build
# arguments) is kept as it is; FORCE=1 builds anyway (podman's layer cache still applies).
#
# Environment:
#   IMAGE            tag to build (default localhost/montage:latest)
#   PYTHON_IMAGE     base image with python3 (3.11, with venv) and apt-get; default: made here
#   DEBIAN_MIRROR    mirror for debootstrap and the base's apt sources (default deb.debian.org)
#   TORCH_INDEX_URL  extra index for torch; default the CPU index when reachable, else none (torch
#                    then comes from this host's pip configuration)
#   TORCH_VERSION    default: the Containerfile's
#   HOST_PYTHON      interpreter whose pip configuration is used (default .venv/bin/python)
#   FORCE=1          build even when the image is current
# Needs podman (Debian: podman buildah runc), debootstrap and root (or sudo) for the base.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'build_image: %s\n' "$*" >&2; }
die() { printf 'build_image: error: %s\n' "$*" >&2; exit 1; }

IMAGE=${IMAGE:-localhost/montage:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
HOST_PYTHON=${HOST_PYTHON:-.venv/bin/python}
[ -x "$HOST_PYTHON" ] || HOST_PYTHON=$(command -v python3) || die "python3 not found; set HOST_PYTHON"
command -v podman >/dev/null 2>&1 ||
  die "podman not installed (Debian: apt-get install podman buildah runc debootstrap; scripts/bootstrap.sh does it)"

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)

# --- the base: Debian minbase with python3, from Debian packages --------------------------------------
if [ -z "${PYTHON_IMAGE:-}" ]; then
  recipe=$(printf '%s %s %s' "$SUITE" "$MIRROR" "$BASE_PACKAGES" | sha256sum | cut -c1-12)
  PYTHON_IMAGE="localhost/montage-python:$SUITE-$recipe"
  if podman image exists "$PYTHON_IMAGE"; then
    say "base $PYTHON_IMAGE present"
  else
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not installed (apt-get install debootstrap)"
    rootfs=$(mktemp -d /var/tmp/montage-rootfs.XXXXXX)
    trap '"${SUDO[@]}" rm -rf "$rootfs"' EXIT
    say "making base $PYTHON_IMAGE with debootstrap ($SUITE minbase + ${BASE_PACKAGES//,/ })"
    "${SUDO[@]}" debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >/tmp/montage-debootstrap.log 2>&1 ||
      die "debootstrap failed (log: /tmp/montage-debootstrap.log)"
    security=${MIRROR%/debian}/debian-security
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
      "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$security" "$SUITE" |
      "${SUDO[@]}" tee "$rootfs/etc/apt/sources.list" >/dev/null
    "${SUDO[@]}" find "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt" -type f -delete
    "${SUDO[@]}" tar -C "$rootfs" -c . |
      podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$PYTHON_IMAGE" >/dev/null
    "${SUDO[@]}" rm -rf "$rootfs"
    trap - EXIT
  fi
fi

# --- pip inside the build: this host's configuration and cache ---------------------------------------
if [ -z "${TORCH_INDEX_URL+set}" ]; then
  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
  if ! "$HOST_PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
       "$TORCH_INDEX_URL/torch/" >/dev/null 2>&1; then
    say "$TORCH_INDEX_URL unreachable: torch comes from this host's pip configuration"
    TORCH_INDEX_URL=
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# `pip config list` merges files and PIP_* variables (the variables win); the local paths named
# in it (file:// indexes, find-links, constraints, certificates) are mounted where pip expects them.
# This host's pip cache (wheels it downloaded already, e.g. torch by the bootstrap) replaces the
# Containerfile's build cache mount.
HOST_CACHE=/run/host-pip-cache
cache=$("$HOST_PYTHON" -m pip cache dir 2>/dev/null) || cache=
"$HOST_PYTHON" - "$work/pip.conf" "$work/mounts" "${cache:+$HOST_CACHE}" <<'EOF'
import os, re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                     check=True).stdout
merged: dict[str, dict[str, str]] = {}
for line in out.splitlines():
    m = re.fullmatch(r"(:env:|[\w-]+)\.([\w-]+)='(.*)'", line)
    if m:
        section = "global" if m[1] == ":env:" else m[1]
        merged.setdefault(section, {})[m[2]] = m[3]
paths = set()
for values in merged.values():
    for key, value in values.items():
        for token in value.split():
            path = token.removeprefix("file://")
            if path.startswith("/") and os.path.exists(path):
                # a local simple index links its files beside it (../../files/x.whl): mount its parent
                paths.add(os.path.dirname(path) if key.endswith("index-url") else path)
if sys.argv[3]:
    merged.setdefault("global", {})["cache-dir"] = sys.argv[3]
with open(sys.argv[1], "w") as f:
    for section, values in merged.items():
        f.write(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
with open(sys.argv[2], "w") as f:
    f.write("".join(f"{p}\n" for p in sorted(paths)))
EOF
volumes=(-v "$work/pip.conf:/etc/pip.conf:ro")
while read -r path; do volumes+=(-v "$path:$path:ro"); done <"$work/mounts"
if [ -n "$cache" ]; then
  mkdir -p "$cache"
  volumes+=(-v "$cache:$HOST_CACHE")
fi

# --- up to date? -----------------------------------------------------------------------------------
build_args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[ -z "${TORCH_VERSION:-}" ] || build_args+=(--build-arg "TORCH_VERSION=$TORCH_VERSION")
podman image exists "$PYTHON_IMAGE" || podman pull "$PYTHON_IMAGE" >&2 ||
  die "base image $PYTHON_IMAGE cannot be pulled; unset PYTHON_IMAGE to make one from Debian packages"
base_id=$(podman image inspect --format '{{.Id}}' "$PYTHON_IMAGE")
digest=$( {
  printf '%s\n' "$base_id" "${build_args[@]}"
  find Containerfile .containerignore pyproject.toml README.md montaged tui -type f \
    ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-64)
current=$(podman image inspect --format '{{index .Labels "org.montage.source-digest"}}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$digest" ] && [ "${FORCE:-0}" != 1 ]; then
  say "$IMAGE is current (source digest ${digest:0:12})"
  exit 0
fi

old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
say "building $IMAGE from Containerfile (base $PYTHON_IMAGE${TORCH_INDEX_URL:+, torch from $TORCH_INDEX_URL})"
started=$(date +%s)
# chroot isolation and the host's network: what works where no OCI runtime may set up namespaces;
# docker format: the OCI image format has no HEALTHCHECK.
podman build --isolation chroot --network host --format docker \
  "${build_args[@]}" "${volumes[@]}" \
  --label "org.montage.source-digest=$digest" \
  -t "$IMAGE" -f Containerfile .
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# the image this one replaces (its layers stay where the build cache still uses them)
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then podman rmi "$old_id" >/dev/null 2>&1 || true; fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE in $(( $(date +%s) - started )) s; $(( size / 1000000 )) MB"
