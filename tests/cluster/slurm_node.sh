#!/usr/bin/env bash
# Starts, or kills, one host of a multi-host test cluster that tests/cluster/slurm_up.sh STATE_DIR HOSTS made.
#
#   tests/cluster/slurm_node.sh STATE_DIR start NODE   # slurmd -N NODE inside the host's namespaces
#   tests/cluster/slurm_node.sh STATE_DIR kill NODE    # the host dies: its slurmd and every job process on it
#
# A host is a network namespace (mtK-nI); its slurmd also gets its own UTS namespace (so its processes see
# the host name NODE) and mount namespace (where STATE_DIR/hosts is /etc/hosts). nsenter --net, not
# `ip netns exec`: the latter remounts /sys, which hides the cgroup tree that slurmd needs.
# `kill` is what a power cut looks like to the other hosts: SIGKILL to every process in the namespace, no
# goodbye to the controller; slurmctld marks the node DOWN after SlurmdTimeout.
set -euo pipefail

STATE="${1:?usage: $0 STATE_DIR start|kill NODE}"
ACTION="${2:?usage: $0 STATE_DIR start|kill NODE}"
NODE="${3:?usage: $0 STATE_DIR start|kill NODE}"
read -r K HOSTS <"$STATE/net" || { echo "slurm_node: $STATE/net missing: not a multi-host cluster" >&2; exit 1; }
[[ "$NODE" =~ ^n[0-9]+$ ]] && ((${NODE#n} >= 1 && ${NODE#n} <= HOSTS)) \
  || { echo "slurm_node: no host '$NODE' in this cluster (n1..n$HOSTS)" >&2; exit 1; }
NS="mt$K-$NODE"
export SLURM_CONF="$STATE/slurm.conf"

case "$ACTION" in
  start)
    mkdir -p "$STATE/spool/$NODE"
    nsenter --net="/var/run/netns/$NS" unshare --mount --uts \
      bash -c 'hostname "$1" && mount --bind "$2" /etc/hosts && exec slurmd -N "$1"' _ "$NODE" "$STATE/hosts"
    ;;
  kill)
    pids="$(ip netns pids "$NS" 2>/dev/null || true)"
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    rm -f "$STATE/run/slurmd-$NODE.pid"
    ;;
  *)
    echo "slurm_node: unknown action '$ACTION' (start or kill)" >&2
    exit 1
    ;;
esac
