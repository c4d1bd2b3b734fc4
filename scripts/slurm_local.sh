#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (munged + slurmctld + slurmd on localhost), for the
# Slurm tests and for trying the submitit_slurm launcher without a cluster. Needs root; installs
# Debian's slurm-wlm and munge when they are missing.
#
#   scripts/slurm_local.sh start    # ready when it returns 0; else exit 1 with the daemons' errors
#   scripts/slurm_local.sh stop
set -uo pipefail

STATE=${AEVAE_SLURM_DIR:-/tmp/aevae-slurm}
CONF=/etc/slurm/slurm.conf

fail() { echo "slurm_local: $*" >&2; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || fail "not root: cannot install slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
    || fail "apt-get install slurm-wlm munge failed"
}

start_munge() {
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null
  chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- munged 2>"$STATE/munged.err" \
    || munged --force 2>>"$STATE/munged.err" || fail "munged: $(cat "$STATE/munged.err")"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p /etc/slurm "$STATE/spool" "$STATE/state" "$STATE/log"
  cat >"$CONF" <<EOF
ClusterName=aevae-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install
  mkdir -p "$STATE"
  start_munge
  write_conf
  pgrep -x slurmctld >/dev/null || slurmctld 2>"$STATE/slurmctld.err" || fail "slurmctld: $(cat "$STATE/slurmctld.err")"
  pgrep -x slurmd >/dev/null || slurmd 2>"$STATE/slurmd.err" || fail "slurmd: $(cat "$STATE/slurmd.err")"
  for _ in $(seq 60); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1)
    case "$state" in idle*|mixed*|allocated*) return 0 ;; esac
    [ "$state" = "down" ] || [ "$state" = "drained" ] && scontrol update nodename=localhost state=resume >/dev/null 2>&1
    sleep 0.5
  done
  fail "the node did not become idle (state: ${state:-none}); $(tail -3 "$STATE/log/slurmctld.log" 2>/dev/null) $(tail -3 "$STATE/log/slurmd.log" 2>/dev/null)"
}

stop() {
  pkill -x slurmd; pkill -x slurmctld
  return 0
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) fail "usage: $0 start|stop" ;;
esac
