#!/bin/bash
# tests/slurm/cluster.sh — a throwaway one-node Slurm cluster for sdbatch's tests and CI.
#
# A thin wrapper over the team's local-slurm.sh (Debian slurm-wlm + munge, no systemd; see
# shared/notes/local-slurm.md), found in $SDB_TEST_DATA/tools/ or ../shared/tools/ beside the
# source tree. Every daemon is started in the background with its pid recorded, and stopped by pid.
#
#   cluster.sh start DIR      start a cluster whose state lives in DIR (must not exist); prints
#                             `export SLURM_CONF=DIR/etc/slurm.conf`
#   cluster.sh stop DIR       cancel every job, stop the daemons by pid, remove DIR
#   cluster.sh run CMD...     start (in a temp dir), run CMD with SLURM_CONF exported, stop (always)
#   cluster.sh check          start, run a 4-task array, stop
#
# Needs root (the daemons run as root) and the packages slurm-wlm slurmctld slurmd slurm-client
# munge (tools/install-deps.sh installs them; local-slurm.sh installs them when missing unless
# LOCAL_SLURM_NO_INSTALL=1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
data=${SDB_TEST_DATA:-$(cd "$src/.." && pwd)/shared}
LS=${LOCAL_SLURM_SH:-$data/tools/local-slurm.sh}
[ -f "$LS" ] || { echo "cluster.sh: $LS not found (set SDB_TEST_DATA to the shared/ folder)" >&2; exit 1; }

# local-slurm.sh sizes the node with `nproc`, and GNU nproc answers OMP_NUM_THREADS when it is set
# (CI exports OMP_NUM_THREADS=1): the cluster would get 1 CPU. The daemons do not need OpenMP.
unset OMP_NUM_THREADS OMP_THREAD_LIMIT

case "${1:-}" in
    start)
        d=${2:?usage: cluster.sh start DIR}
        [ -e "$d" ] && { echo "cluster.sh: $d exists" >&2; exit 1; }
        LOCAL_SLURM_DIR=$d bash "$LS" start
        ;;
    stop)
        d=${2:?usage: cluster.sh stop DIR}
        bash "$LS" stop "$d"
        ;;
    run)
        shift
        d=$(mktemp -d /tmp/sdb-slurm.XXXXXX)
        rmdir "$d"
        trap 'bash "$LS" stop "$d" || true' EXIT
        trap 'exit 130' INT TERM
        LOCAL_SLURM_DIR=$d bash "$LS" start >/dev/null
        export SLURM_CONF=$d/etc/slurm.conf
        "$@"
        ;;
    check)
        bash "$LS"
        ;;
    *)
        sed -n '2,17p' "$0"
        exit 2
        ;;
esac
