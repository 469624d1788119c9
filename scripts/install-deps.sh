#!/usr/bin/env bash
# Installs what berth needs to build and test, if missing: Debian packages
# (libclang-dev and clang for RocksDB's bindgen, g++ for RocksDB itself,
# make and a C compiler for AFL++, which cargo-afl builds (scripts/fuzz.sh),
# skopeo and podman for the end-to-end tests, haproxy and openssl for the
# TLS-terminating proxy test, docker-registry (CNCF distribution 2.8,
# the other side of the import and sync tests), apache2-utils (htpasswd, for
# the sync test's source with auth), slapd and ldap-utils (the LDAP tests
# start their own slapd; the system service the package starts is stopped
# and disabled), python3-venv, chromium (the console's browser test)), Node.js
# (Debian's nodejs and npm, unless a node is already installed), the Python
# OCI client oras-py in a virtualenv at ~/.cache/berth/venv (the oras
# end-to-end test), and playwright-core in tests/console/node_modules (from
# tests/console/package-lock.json; the console's browser test drives
# Debian's chromium with it, never a downloaded browser build).
# Needs root or sudo for apt; does nothing when all is present.
set -euo pipefail

packages=(libclang-dev clang g++ make pkg-config skopeo podman python3 python3-venv haproxy openssl docker-registry apache2-utils slapd ldap-utils chromium)
# Node.js: a machine may have it from elsewhere (then npm comes with it);
# Debian's packages only when there is none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
    echo "berth: installing Debian packages: ${missing[*]}" >&2
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" slapd "* ]]; then
        # The tests run slapd instances of their own; the directory service
        # the package set up and started is not used.
        $sudo service slapd stop >/dev/null 2>&1 || true
        $sudo update-rc.d slapd disable >/dev/null 2>&1 || true
    fi
fi

venv="$HOME/.cache/berth/venv"
oras_version=0.2.43
if ! "$venv/bin/python" -c "import oras, sys; sys.exit(oras.__version__ != '$oras_version')" 2>/dev/null; then
    echo "berth: installing oras-py $oras_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "oras==$oras_version"
fi

# The console's browser test (tests/e2e_console.rs): playwright-core as
# pinned in the lock file, installed again only when it is not that version.
console="$(cd "$(dirname "$0")/.." && pwd)/tests/console"
want=$(node -p "require('$console/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('$console/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [[ "$have" != "$want" ]]; then
    echo "berth: installing playwright-core $want into tests/console/node_modules" >&2
    # Node trusts its own CA list, not the system's: where the registry is
    # reached through a TLS-inspecting proxy, that proxy's CA is only in
    # the system bundle.
    ca=/etc/ssl/certs/ca-certificates.crt
    if [[ -z "${NODE_EXTRA_CA_CERTS:-}" && -r "$ca" ]]; then
        export NODE_EXTRA_CA_CERTS="$ca"
    fi
    npm ci --prefix "$console" --no-audit --no-fund --loglevel=error >/dev/null
fi
