#!/bin/sh
# Installs the Debian packages that rlhi's build, tests and demo need.
# Run by `make` before anything else; does nothing when all are present.
# Needs root (as on the CI and developer machines) when something is missing.
set -e
PKGS="build-essential pkg-config libjansson-dev libopenblas-openmp-dev \
libpcre2-dev libsqlite3-dev sqlite3 zlib1g-dev libzstd-dev \
libcurl4-openssl-dev libmicrohttpd-dev libutf8proc-dev"
# python3-torch is only used to regenerate committed reference fixtures and
# by the benchmarks' PyTorch comparison: `scripts/deps.sh --torch` adds it.
if [ "$1" = "--torch" ]; then PKGS="$PKGS python3-torch python3-numpy"; fi
# `make bench` times the ingest against a Python script: python3 alone.
if [ "$1" = "--bench" ]; then PKGS="$PKGS python3"; fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "rlhi: installing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
