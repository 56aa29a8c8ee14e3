#!/bin/sh
# Installs every build and test dependency of sdbatch with apt-get (Debian 12). Idempotent:
# packages already present are left alone, and nothing is fetched when all are installed.
# clang with its libFuzzer/sanitizer runtimes (libclang-rt-dev) and OpenMP (libomp-dev) builds the
# fuzz targets (tools/fuzz.sh); the project itself builds with gcc.
set -eu
PKGS="build-essential cmake pkg-config git
libopenblas-openmp-dev libyaml-dev libsqlite3-dev sqlite3 libpng-dev libjpeg62-turbo-dev
libjansson-dev libssl-dev libutf8proc-dev
clang libclang-rt-dev libomp-dev
slurm-wlm slurmctld slurmd slurm-client munge"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "install-deps: all dependencies present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
