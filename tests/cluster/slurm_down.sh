#!/usr/bin/env bash
# Stops the test cluster that tests/cluster/slurm_up.sh started from STATE_DIR, leaving nothing running:
# cancels its jobs, stops slurmd(s), slurmctld and munged, then any job-step daemon (slurmstepd) of this
# cluster that outlived them, and for a multi-host cluster every process left in its hosts' namespaces,
# then the namespaces and the bridge. Processes are found through the pid files in STATE_DIR (and, for
# slurmstepd, the SLURM_CONF in its environment), never by name alone. Safe to run when nothing is up.
#
#   tests/cluster/slurm_down.sh STATE_DIR
set -uo pipefail

STATE_ARG="${1:?usage: $0 STATE_DIR}"
[ -d "$STATE_ARG" ] || exit 0
STATE="$(cd "$STATE_ARG" && pwd)"
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"

# The pid in $1 when that process is still alive and named $2 (so a recycled pid is left alone).
live_pid() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

any_alive() {
  local pid
  for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

# TERM, then KILL whatever is left after 10 s. All at once: each daemon takes a second or two to stop.
stop_pids() {
  local i
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    any_alive "$@" || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null
  return 0
}

stop_daemons() {
  local pids=() pid file
  for file in "$STATE"/run/slurmd-*.pid; do
    pid="$(live_pid "$file" slurmd)" && pids+=("$pid")
  done
  pid="$(live_pid "$STATE/run/slurmctld.pid" slurmctld)" && pids+=("$pid")
  pid="$(live_pid "$STATE/munge/munged.pid" munged)" && pids+=("$pid")
  stop_pids "${pids[@]}"
  rm -f "$STATE"/run/slurmd-*.pid "$STATE/run/slurmctld.pid" "$STATE/munge/munged.pid"
}

# Jobs first, while slurmctld and slurmd can still end their steps cleanly.
cancel_jobs() {
  live_pid "$STATE/run/slurmctld.pid" slurmctld >/dev/null || return 0
  local users i
  users="$(timeout 10 squeue -h -o %u 2>/dev/null | sort -u)"
  [ -n "$users" ] || return 0
  for user in $users; do timeout 10 scancel -u "$user"; done
  for ((i = 0; i < 30; i++)); do
    [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && return 0
    sleep 0.5
  done
}

# A process and all its descendants.
process_tree() {
  local child
  echo "$1"
  for child in $(pgrep -P "$1"); do process_tree "$child"; done
}

# Steps that outlived slurmd (it could not end them): KILL them with their tasks. slurmd starts slurmstepd
# with SLURM_CONF=$CONF in its environment, which tells this cluster's steps from any other's.
stop_strays() {
  local pid
  for pid in $(pgrep -x slurmstepd); do
    if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "SLURM_CONF=$CONF"; then
      kill -KILL $(process_tree "$pid") 2>/dev/null
    fi
  done
  return 0
}

# The namespaced hosts (STATE/net: subnet number and host count, written by slurm_up before it made them):
# whatever still runs on a host is killed as slurm_node.sh kills a host, then the namespaces and the bridge go.
remove_hosts() {
  local k hosts i
  read -r k hosts 2>/dev/null <"$STATE/net" || return 0
  for ((i = 1; i <= hosts; i++)); do
    bash "$(dirname "$0")/slurm_node.sh" "$STATE" kill "n$i" 2>/dev/null
    ip netns del "mt$k-n$i" 2>/dev/null
  done
  ip link del "mtbr$k" 2>/dev/null
  rm -f "$STATE/net"
  return 0
}

cancel_jobs
stop_daemons
stop_strays
remove_hosts
exit 0
