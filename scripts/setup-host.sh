#!/usr/bin/env bash
# Install what podlab needs on this Debian machine: Debian packages (only the
# missing ones), a venv in .venv (its dependencies from a cache outside the clone),
# and podlab itself (editable, with dev extras).
# podman, runc, busybox-static, containernetworking-plugins and gcc serve the CNI
# work (docs/cni.md): a third-party runtime on lab nodes, the reference plugins
# the CNI spec suite uses as its control, podlab-cni's native front (built by
# the agent where a compiler exists). Nothing here configures the host's
# own podman or CNI: lab nodes have private /etc/containers and /etc/cni.
# Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  iproute2 nftables iptables ipset iperf3 tcpdump procps util-linux
  bird2 wireguard-tools wireguard-go etcd-server etcd-client
  openssh-server openssh-client supervisor python3-venv python3-pip
  socat chromium iputils-ping ipvsadm
  qemu-system-x86 qemu-utils debootstrap e2fsprogs
  podman containernetworking-plugins busybox-static runc gcc libc6-dev
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (podlab builds network namespaces and installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present"
fi

PY=${PYTHON:-python3}
stamp=.venv/.podlab-installed
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
  echo "setup: .venv up to date"
  exit 0
fi

# The dependencies come from a venv cached outside the clone, keyed by what decides
# its content (pyproject.toml, the Python, this recipe): a clean clone hard-links it
# in (cp -al; a copy across file systems) and installs only podlab itself, editable
# (about 2 s, against about 18 s for a venv built from pip's cache every time). pip
# never writes into an installed file (it removes and writes anew), so the clone's
# .venv cannot change the cache; `make clean` removes only the clone's.
RECIPE=2
VENVS=${PODLAB_VENV_CACHE:-/var/cache/podlab/venvs}
key=$( { cat pyproject.toml; "$PY" -c 'import sys; print(sys.version)'; echo "recipe $RECIPE"; } |
  sha256sum | cut -c1-16)
cached="$VENVS/$key"
if [ ! -x "$cached/bin/python" ]; then
  echo "setup: building the dependency venv $cached (once for this pyproject.toml)"
  mkdir -p "$VENVS"
  work=$(mktemp -d "$VENVS/.build-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$PY" -m venv "$work/venv"
  "$work/venv/bin/pip" install -q --upgrade pip
  # the build backend too: the clone's editable install runs without build isolation.
  # setuptools below 81 keeps pkg_resources, which supervisor's scripts import (a
  # venv's own setuptools always had it; 84 failed tests/unit/test_deploy_service_restart)
  "$work/venv/bin/pip" install -q "setuptools>=68,<81" wheel -e '.[dev]'
  "$work/venv/bin/pip" uninstall -q -y podlab
  # its scripts name the venv where it was built: each clone's copy renames it
  echo "$work/venv" > "$work/venv/.podlab-built-at"
  # another setup may have built the same key meanwhile: keep the first
  mv -T "$work/venv" "$cached" 2>/dev/null || true
  rm -rf "$work"
  trap - EXIT
  # the newest three keys stay; older ones go unless used in the last day
  ls -1dt "$VENVS"/*/ 2>/dev/null | tail -n +4 | while read -r old; do
    find "$old" -maxdepth 0 -mmin +1440 -exec rm -rf {} +
  done
fi
touch "$cached"

echo "setup: installing podlab into .venv (dependencies from $cached)"
rm -rf .venv
cp -al "$cached" .venv 2>/dev/null || { rm -rf .venv; cp -a "$cached" .venv; }
# the scripts' interpreter lines and pyvenv.cfg name the venv where it was built
built=$(cat .venv/.podlab-built-at)
here=$(pwd -P)/.venv
grep -lZ -- "$built" .venv/bin/* .venv/pyvenv.cfg 2>/dev/null | xargs -0 -r sed -i "s#$built#$here#g"
# setuptools' warnings about our pyproject.toml are noise here; a failure's are shown
if ! out=$(.venv/bin/pip install -q --no-deps --no-build-isolation -e . 2>&1); then
  echo "$out" >&2
  exit 1
fi
touch "$stamp"
