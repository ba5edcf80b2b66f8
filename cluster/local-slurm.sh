#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the `slurm` tests and for trying `--cluster slurm` by hand:
# Debian's slurm-wlm and munge (SLURM 22.05), this host as controller and compute node (its real CPUs and
# memory from `slurmd -C`), everything on loopback. Run as root (CI does; a developer: sudo). Idempotent.
#
#   sudo bash cluster/local-slurm.sh start    # install if missing, write slurm.conf, start munged, slurmctld, slurmd
#   sudo bash cluster/local-slurm.sh status   # daemons and `sinfo`; exit 0 when the node takes jobs
#   sudo bash cluster/local-slurm.sh stop     # cancel jobs, stop the three daemons
#
# No systemd is assumed: the daemons are started directly. The partition is called `local`. An existing
# slurm.conf that this script did not write is never overwritten.
set -euo pipefail

CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
MARK="# written by survey-deblend cluster/local-slurm.sh"
PARTITION=local
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
LOG_DIR=/var/log/slurm
WAIT_S="${LOCAL_SLURM_WAIT_S:-60}"

say() { echo "local-slurm: $*"; }
die() { echo "local-slurm: error: $*" >&2; exit 1; }

need_root() {
  [[ "$(id -u)" == 0 ]] || die "run as root (sudo bash $0 $1): it installs packages and starts daemons"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

pid_alive() {  # pid_alive FILE NAME: the pid file names a live NAME (not a stale file, a reused pid, a zombie)
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] && ! grep -q "^State:.*zombie" "/proc/$pid/status"
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating /etc/munge/munge.key"
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  if ! pid_alive /run/munge/munged.pid munged; then
    runuser -u munge -- /usr/sbin/munged
  fi
  munge -n | unmunge >/dev/null || die "munge does not answer (see /var/log/munge/munged.log)"
}

write_conf() {
  if [[ -e "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; move it away first"
  fi
  local node_line
  node_line="$(slurmd -C | head -n 1)"  # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
  [[ "$node_line" == NodeName=* ]] || die "slurmd -C gave no node line: $node_line"
  local node="${node_line%% *}"
  node="${node#NodeName=}"
  install -d "$(dirname "$CONF")" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
  cat >"$CONF.new" <<EOF
$MARK
# One node, $node, is both the controller and the compute node; daemons and jobs run as root.
ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
MinJobAge=600
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  if [[ -e "$CONF" ]] && cmp -s "$CONF.new" "$CONF"; then
    rm -f "$CONF.new"
  else
    mv "$CONF.new" "$CONF"
    CONF_CHANGED=1
  fi
  NODE="$node"
}

node_state() {  # the node's state as sinfo prints it (idle, mix, alloc, down*, drain, ...), empty if no answer
  timeout 10 sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n 1 || true
}

start() {
  need_root start
  install_packages
  CONF_CHANGED=0
  write_conf
  start_munge
  if [[ "$CONF_CHANGED" == 1 ]]; then  # a changed configuration needs fresh daemons
    stop_daemons
  fi
  if ! pid_alive /run/slurmctld.pid slurmctld; then
    slurmctld
  fi
  if ! pid_alive /run/slurmd.pid slurmd; then
    slurmd
  fi
  local deadline=$((SECONDS + WAIT_S)) state=""
  while ((SECONDS < deadline)); do
    state="$(node_state)"
    case "$state" in
      idle | mix | alloc) say "node $NODE is $state in partition $PARTITION"; sinfo; return 0 ;;
      down* | drain* | drng*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
  done
  die "node $NODE not idle after ${WAIT_S} s (state '${state:-no answer}'); see $LOG_DIR/slurmctld.log and slurmd.log"
}

stop_pidfile() {  # stop_pidfile FILE NAME: TERM the process, wait for it to go
  if pid_alive "$1" "$2"; then
    local pid
    pid="$(cat "$1")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    say "stopped $2"
  fi
}

stop_daemons() {
  stop_pidfile /run/slurmd.pid slurmd
  stop_pidfile /run/slurmctld.pid slurmctld
}

stop() {
  need_root stop
  if pid_alive /run/slurmctld.pid slurmctld; then
    timeout 10 scancel --partition="$PARTITION" 2>/dev/null || true
  fi
  stop_daemons
  stop_pidfile /run/munge/munged.pid munged
}

status() {
  local ok=0
  for pair in /run/munge/munged.pid:munged /run/slurmctld.pid:slurmctld /run/slurmd.pid:slurmd; do
    if pid_alive "${pair%%:*}" "${pair#*:}"; then say "${pair#*:} running"; else say "${pair#*:} not running"; ok=1; fi
  done
  if ! timeout 10 sinfo 2>/dev/null; then
    say "sinfo: no answer from the controller"
    return 1
  fi
  return "$ok"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
