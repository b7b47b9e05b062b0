#!/usr/bin/env bash
# Starts a throwaway SLURM cluster for the test suite: munged, slurmctld and slurmd, every path (config,
# munge key and socket, spool, logs, pid files) inside STATE_DIR, so it touches nothing in /etc, /run or
# /var and several clusters (concurrent test sessions) can live side by side on free ports.
#
#   tests/cluster/slurm_up.sh STATE_DIR [HOSTS]   # then: export SLURM_CONF=STATE_DIR/slurm.conf
#   tests/cluster/slurm_down.sh STATE_DIR         # stops everything it started
#
# HOSTS=1 (default): one node, this machine at 127.0.0.1. HOSTS>=2: hosts n1..nHOSTS, each a network
# namespace with its own host name and address (10.213.K.11, .12, ...) on a bridge (10.213.K.1, where the
# controller listens), and its own slurmd; K is the first subnet no interface here uses. Processes on a
# node see STATE_DIR/hosts as /etc/hosts. tests/cluster/slurm_node.sh stops and restarts one such host.
#
# Needs root (SlurmUser=root; munged runs as user munge). A cluster already running from the same
# STATE_DIR is stopped first. Exits non-zero with the reason and the daemons' log tails if the nodes do
# not become idle within STARTUP_TIMEOUT seconds (default 60); nothing is left running then.
set -euo pipefail

STATE_ARG="${1:?usage: $0 STATE_DIR [HOSTS]}"
HOSTS="${2:-1}"
HERE="$(cd "$(dirname "$0")" && pwd)"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"
PARTITION=debug

die() { echo "slurm_up: $*" >&2; exit 1; }

check_prerequisites() {
  [ "$(id -u)" = 0 ] || die "must run as root (SlurmUser=root, munged is started as user munge)"
  local cmd
  local commands=(munged slurmctld slurmd sinfo runuser flock)
  ((HOSTS == 1)) || commands+=(ip nsenter unshare)
  for cmd in "${commands[@]}"; do
    command -v "$cmd" >/dev/null || die "'$cmd' not found; run tests/cluster/system_packages.sh"
  done
  id munge >/dev/null 2>&1 || die "user 'munge' does not exist; install the munge package"
  [[ "$HOSTS" =~ ^[1-9]$ ]] || die "HOSTS must be 1 to 9, not '$HOSTS'"
}

# True when a TCP socket (any state, IPv4 or IPv6) uses local port $1: such a port is not ours to take.
port_busy() {
  local hex
  hex="$(printf '%04X' "$1")"
  awk -v suffix=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == suffix { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# First pair of adjacent free ports from SLURM's default 6817 on: slurmctld gets the first, slurmd the second.
pick_ports() {
  local port
  for ((port = 6817; port < 6917; port += 2)); do
    if ! port_busy "$port" && ! port_busy $((port + 1)); then
      echo "$port"
      return
    fi
  done
  die "no free port pair in 6817-6916"
}

# First subnet 10.213.K.0/24 (bridge mtbrK, namespaces mtK-nI) that nothing here uses.
pick_subnet() {
  local k
  for ((k = 1; k < 255; k++)); do
    ip link show "mtbr$k" >/dev/null 2>&1 && continue
    ip netns list | grep -q "^mt$k-" && continue
    ip -o -4 addr show | grep -q " 10\.213\.$k\." && continue
    echo "$k"
    return
  done
  die "no free subnet in 10.213.1-254.0/24"
}

# The bridge and one namespace per host, recorded in STATE/net first so slurm_down removes what was made.
make_hosts() {
  local k="$1" i ns veth
  echo "$k $HOSTS" >"$STATE/net"
  ip link add "mtbr$k" type bridge
  ip addr add "10.213.$k.1/24" dev "mtbr$k"
  ip link set "mtbr$k" up
  printf '127.0.0.1 localhost\n10.213.%s.1 %s\n' "$k" "$(hostname -s)" >"$STATE/hosts"
  for ((i = 1; i <= HOSTS; i++)); do
    ns="mt$k-n$i" veth="mt$k-v$i"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "mtbr$k"
    ip link set "$veth" up
    ip netns exec "$ns" ip addr add "10.213.$k.$((10 + i))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    echo "10.213.$k.$((10 + i)) n$i" >>"$STATE/hosts"
  done
}

# A private munge key and socket: clients find the socket through AuthInfo in slurm.conf.
start_munge() {
  local dir="$STATE/munge"
  mkdir -p "$dir"
  if [ ! -s "$dir/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
  fi
  chown -R munge:munge "$dir"
  chmod 0755 "$dir"
  chmod 0400 "$dir/munge.key"
  runuser -u munge -- munged 9>&- --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
}

# slurm.conf's node lines: this machine, or the namespaced hosts n1..nHOSTS.
node_lines() {
  local k="$1" cpus="$2" mem_mb="$3" i
  if ((HOSTS == 1)); then
    echo "NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    return
  fi
  for ((i = 1; i <= HOSTS; i++)); do
    echo "NodeName=n$i NodeAddr=10.213.$k.$((10 + i)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
  done
}

write_conf() {
  local ctld_port="$1" k="$2" host cpus mem_mb ctld_addr=127.0.0.1 nodes slurmd_timeout=300 share=FORCE:4
  host="$(hostname -s)"
  nodes="$host"
  # The cores this process may use; not OMP_NUM_THREADS, which nproc would otherwise report (the suite sets it to 1).
  cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
  if ((HOSTS > 1)); then
    # One core per host, not shared, so jobs spread over the hosts; a host that stops answering is DOWN
    # after 20 s (its jobs requeued), not SLURM's default 300 s.
    ctld_addr="10.213.$k.1" nodes="n[1-$HOSTS]" slurmd_timeout=20 cpus=1 share=NO
  fi
  # Below the machine's memory: slurmd drains a node that has less than RealMemory.
  mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by tests/cluster/slurm_up.sh: a throwaway test cluster; every path is in $STATE.
ClusterName=medtrain
SlurmctldHost=$host($ctld_addr)
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmdTimeout=$slurmd_timeout
# No cgroups: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
PropagateResourceLimits=NONE
# Fast turnaround for tests: schedule every second, kill quickly, no idle limits.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=2
InactiveLimit=0
Waittime=0
$(node_lines "$k" "$cpus" "$mem_mb")
# One host: up to 4 jobs share a core (FORCE:4), so a 2-core machine can run several small jobs at once.
PartitionName=$PARTITION Nodes=$nodes Default=YES MaxTime=INFINITE State=UP OverSubscribe=$share
EOF
}

show_logs() {
  local f
  for f in "$STATE/munge/munged.log" "$STATE/log/slurmctld.log" "$STATE"/log/slurmd-*.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }
  done >&2
}

# Leaves nothing half-started behind when any start-up step fails.
on_failure() {
  show_logs
  bash "$HERE/slurm_down.sh" "$STATE"
  echo "slurm_up: cluster did not start (state dir $STATE)" >&2
  exit 1
}

wait_idle() {
  local deadline=$((SECONDS + STARTUP_TIMEOUT)) state=""
  while ((SECONDS < deadline)); do
    state="$(sinfo -h -N -p "$PARTITION" -o %T 2>/dev/null | sort -u | paste -sd, || true)"
    [ "$state" = idle ] && return 0
    sleep 0.5
  done
  echo "slurm_up: nodes not idle after ${STARTUP_TIMEOUT}s (state: '${state:-no answer from slurmctld}')" >&2
  return 1
}

check_prerequisites
mkdir -p "$STATE_ARG"
STATE="$(cd "$STATE_ARG" && pwd)"
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"   # slurmd passes it on to slurmstepd, which slurm_down uses to find strays

bash "$HERE/slurm_down.sh" "$STATE"
chmod 0755 "$STATE"   # munged (user munge) must reach its socket inside
mkdir -p "$STATE/ctld" "$STATE/spool/$(hostname -s)" "$STATE/run" "$STATE/log"
k=0

# Port choice and start-up under one host-wide lock, so concurrent sessions cannot pick the same ports.
exec 9>/tmp/medtrain-slurm.lock
flock -w 120 9 || die "timed out waiting for /tmp/medtrain-slurm.lock"
ctld_port="$(pick_ports)"
trap on_failure EXIT
if ((HOSTS > 1)); then
  k="$(pick_subnet)"
  make_hosts "$k"
fi
write_conf "$ctld_port" "$k"
start_munge
# 9>&-: daemons must not inherit (and so hold) the lock.
slurmctld -c 9>&-   # -c: start clean, recover no jobs from an earlier run
if ((HOSTS == 1)); then
  slurmd 9>&-
else
  for ((i = 1; i <= HOSTS; i++)); do bash "$HERE/slurm_node.sh" "$STATE" start "n$i" 9>&-; done
fi
wait_idle
trap - EXIT
echo "slurm_up: $HOSTS node(s) idle; export SLURM_CONF=$CONF (partition $PARTITION)"
