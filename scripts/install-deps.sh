#!/usr/bin/env bash
# Installs the Debian packages berth needs to build and test, if missing:
# libclang-dev and clang (RocksDB's bindgen), g++ (RocksDB itself), skopeo
# and podman (end-to-end tests), haproxy and openssl (the TLS-terminating
# proxy test). Needs root or sudo; does nothing when all are present.
set -euo pipefail

packages=(libclang-dev clang g++ make pkg-config skopeo podman python3 haproxy openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
echo "berth: installing Debian packages: ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
