#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine: compilers for the XDP
# program, peer tools used by tests and benchmarks. Idempotent; needs root for apt.
set -euo pipefail

PKGS=(clang llvm libbpf-dev iproute2 ethtool iperf3 xdp-tools zstd iputils-ping wrk qemu-system-x86 prometheus tshark hwloc qemu-utils rsync netcat-openbsd)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
