#!/usr/bin/env bash
# A one-machine Slurm cluster (munge + slurmctld + slurmd, Debian's packages, no systemd) for the tests and for
# trying the Slurm launcher on a workstation. Everything it writes (slurm.conf, state, spool, logs, pid files)
# is under DIR; the daemons are stopped by the PIDs in their pid files, never by name.
#
#   deploy/slurm/local_cluster.sh start DIR [CPUS]   # prints the SLURM_CONF to export; CPUS: the node's slots
#   deploy/slurm/local_cluster.sh stop DIR
#
# Exit status of start: 0 ready (node idle), 77 Slurm is not installed or its daemons cannot start here (the
# reason on stderr; tests skip on it), 1 anything else. Packages (Debian bookworm, as root):
#   apt-get install -y slurm-wlm slurmctld slurmd slurm-client munge
# Needs root (slurmd runs jobs as their users; SlurmUser=root keeps this one-user cluster simple).
#
# CPUS defaults to the machine's cores. A larger number (the tests use 8 on 2 cores) oversubscribes on purpose:
# SlurmdParameters=config_overrides makes slurmd trust slurm.conf instead of draining the node for having
# fewer cores than configured.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR [CPUS]" >&2
  exit 2
fi
dir=$(realpath -m "$dir")

stop_pidfile() {  # stop_pidfile FILE NAME: TERM the process whose pid is in FILE, KILL it after 10 s
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

case "$cmd" in
stop)
  # slurmd first (it ends the job steps it runs), then slurmctld, then munged if this script started it.
  stop_pidfile "$dir/run/slurmd.pid"
  stop_pidfile "$dir/run/slurmctld.pid"
  if [ -f "$dir/run/munged.started" ]; then
    stop_pidfile /run/munge/munged.pid
    rm -f "$dir/run/munged.started"
  fi
  exit 0
  ;;
start) ;;
*)
  echo "usage: $0 start|stop DIR [CPUS]" >&2
  exit 2
  ;;
esac

for prog in munged slurmctld slurmd sbatch srun scontrol sinfo; do
  if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$prog" ]; then
    echo "local_cluster: $prog not found: install Slurm (apt-get install -y slurm-wlm slurmctld slurmd slurm-client munge)" >&2
    exit 77
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "local_cluster: needs root (slurmd and munged are system daemons)" >&2
  exit 77
fi

cpus=${3:-$(nproc)}
host=$(hostname -s)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)
mkdir -p "$dir"/{state,spool,log,run}

# munge: one per machine; start it only if none answers.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -f /etc/munge/munge.key ]; then
    echo "local_cluster: /etc/munge/munge.key is missing (reinstall munge, or run mungekey)" >&2
    exit 77
  fi
  mkdir -p /run/munge
  chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged || { echo "local_cluster: munged does not start" >&2; exit 77; }
  touch "$dir/run/munged.started"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Two free TCP ports, so that this cluster does not collide with another one on the machine.
free_port() {
  local p
  while true; do
    p=$((20000 + RANDOM % 20000))
    ss -ltnH "( sport = :$p )" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

cat > "$dir/slurm.conf" <<CONF
# Written by deploy/slurm/local_cluster.sh: a one-node cluster on $host.
ClusterName=layerprune-local
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem_mb / cpus))
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
SlurmdParameters=config_overrides
MailProg=/bin/true
ReturnToService=2
KillWait=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# Preemption as many sites set it up: jobs of the urgent partition requeue those of local, which get TERM
# and GraceTime seconds to checkpoint first (the tests preempt the workers with an urgent job).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
CONF

export SLURM_CONF=$dir/slurm.conf
/usr/sbin/slurmctld -f "$SLURM_CONF" || { echo "local_cluster: slurmctld does not start (see $dir/log/slurmctld.log)" >&2; exit 77; }
/usr/sbin/slurmd -f "$SLURM_CONF" || { echo "local_cluster: slurmd does not start (see $dir/log/slurmd.log)" >&2; "$0" stop "$dir"; exit 77; }
for _ in $(seq 300); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
  [ "$state" = "idle" ] && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 0.1
done
echo "local_cluster: the node is '${state:-unknown}' after 30 s, not idle (see $dir/log/)" >&2
"$0" stop "$dir"
exit 77
