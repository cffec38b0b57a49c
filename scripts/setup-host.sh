#!/usr/bin/env bash
# Install what podlab needs on this Debian machine: Debian packages (only the
# missing ones), a venv in .venv, and podlab itself (editable, with dev extras).
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
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.podlab-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing podlab and its Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
else
  echo "setup: .venv up to date"
fi
