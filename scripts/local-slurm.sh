#!/usr/bin/env bash
# Start, stop or inspect a single-node SLURM cluster on this machine, for tests and CI.
#
#   bash scripts/local-slurm.sh start    # install slurm-wlm and munge if missing, start, wait for the node
#   bash scripts/local-slurm.sh status   # exit 0 when the node accepts jobs
#   bash scripts/local-slurm.sh stop     # cancel all jobs, stop the daemons this script started
#
# start starts only the daemons that are not running, so on a running cluster it changes
# nothing. start after stop begins with an empty queue, and job ids count from 1 again.
#
# Needs root on Debian or Ubuntu. The config goes where sbatch, squeue and scancel read it by
# default, so plain client commands work without SLURM_CONF. The cluster has one node named
# "localhost" and two partitions:
#   debug   The default. Up to 4 jobs share each core, so several 1-CPU jobs run at once.
#   urgent  A higher PriorityTier. Its jobs preempt and requeue the debug jobs that hold the
#           CPUs they need, so `sbatch -p urgent --exclusive` preempts every running debug
#           job. A preempted job receives its --signal signal, then SIGKILL 30 s later
#           (GraceTime).
# Accounting is off, so sacct fails; use `scontrol show job ID` while the job is younger than
# MinJobAge (300 s).
#
# Environment:
#   MALAHYDRA_SLURM_DIR   state, spool, pid and log files (default /tmp/malahydra-slurm)
#   SLURM_CONF            config file to write (default /etc/slurm/slurm.conf, which the
#                         Debian clients read when SLURM_CONF is unset)
set -euo pipefail

readonly STATE_DIR="${MALAHYDRA_SLURM_DIR:-/tmp/malahydra-slurm}"
readonly CONF_FILE="${SLURM_CONF:-/etc/slurm/slurm.conf}"
readonly MARKER="# Written by malahydra scripts/local-slurm.sh; safe to overwrite."
readonly NODE_NAME="localhost"
readonly MUNGE_RUN_DIR="/run/munge"
readonly MUNGE_PID_FILE="$MUNGE_RUN_DIR/munged.pid"
readonly MUNGE_KEY="/etc/munge/munge.key"
# Present only while munged runs because this script started it, so stop leaves a munged
# started by the system alone.
readonly MUNGE_OWNED_FLAG="$STATE_DIR/munged.started-here"
readonly START_TIMEOUT_S=60
readonly STOP_TIMEOUT_S=20

log() { printf 'local-slurm: %s\n' "$*"; }
die() { printf 'local-slurm: error: %s\n' "$*" >&2; exit 1; }

# Succeed while the process exists and is not a zombie. A killed daemon can stay a zombie
# for a while in containers whose init process reaps orphans late.
process_alive() {
    local status
    status="$(grep '^State:' "/proc/$1/status" 2>/dev/null)" || return 1
    [[ "$status" != *Z* ]]
}

# Print the pid from a pid file when a live process of that name has it; fail otherwise.
# Checking the name guards against a stale pid file from an earlier boot whose pid now
# belongs to another program.
live_pid() {
    local pid_file="$1" name="$2" pid
    [[ -r "$pid_file" ]] || return 1
    pid="$(tr -dc '0-9' <"$pid_file")"
    [[ -n "$pid" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    process_alive "$pid" || return 1
    printf '%s\n' "$pid"
}

require_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (it starts slurmd and writes $CONF_FILE); rerun with sudo"
}

install_packages() {
    local missing=()
    local binary
    for binary in slurmctld slurmd munged sinfo sbatch scontrol; do
        command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and apt-get not found; install SLURM and MUNGE by hand"
    log "installing slurm-wlm and munge (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

# --- munge -----------------------------------------------------------------------------------

ensure_munge_key() {
    install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating $MUNGE_KEY"
        mungekey --create --force --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
}

start_munged() {
    if live_pid "$MUNGE_PID_FILE" munged >/dev/null; then
        log "munged already running"
        return 0
    fi
    ensure_munge_key
    # munged exits at startup unless its socket, log and seed directories belong to its own user.
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN_DIR"
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    log "starting munged"
    runuser -u munge -- munged
    touch "$MUNGE_OWNED_FLAG"
    munge -n | unmunge >/dev/null || die "munged started but a credential round trip failed; see /var/log/munge/munged.log"
}

# --- config ----------------------------------------------------------------------------------

# Print the hardware part of the node line as slurmd itself detects it, for example
# "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105".
detect_node_hardware() {
    slurmd -C | sed -n 1p | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | paste -sd ' '
}

check_conf_is_ours() {
    if [[ -e "$CONF_FILE" ]] && ! grep -qxF "$MARKER" "$CONF_FILE"; then
        die "$CONF_FILE exists and was not written by this script; move it away or set SLURM_CONF to another path (then export it for sbatch too)"
    fi
}

write_conf() {
    local hardware
    hardware="$(detect_node_hardware)"
    [[ "$hardware" == *CPUs=* ]] || die "slurmd -C printed no CPU count; cannot describe the node"
    mkdir -p "$(dirname "$CONF_FILE")" "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/log"

    cat >"$CONF_FILE.tmp" <<EOF
$MARKER
# Single-node test cluster. Its state and logs are in $STATE_DIR.
ClusterName=malahydra
SlurmctldHost=$NODE_NAME
SlurmUser=root
AuthType=auth/munge
# A requeued or preempted job waits cred_expire seconds (default 120) before it may start
# again. 10 s keeps requeue tests short.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Containers often lack a usable cgroup tree, so track processes by /proc and bind no CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none

SchedulerType=sched/backfill
# Scan pending jobs every few seconds (defaults: 60 s main loop, 30 s backfill) so a requeued
# job starts soon after its cred_expire delay.
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Batch jobs are requeueable unless submitted with --no-requeue.
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# A preempted job receives its --signal signal at once and gets the partition's GraceTime
# before SIGKILL. submitit requests USR2, on which it checkpoints and requeues the job.
SlurmctldParameters=preempt_send_user_signal
MaxArraySize=100001
MaxJobCount=200000
# Seconds between SIGTERM and SIGKILL on cancel, preemption and time limit.
KillWait=10
# Finished jobs stay visible to scontrol show job for this many seconds.
MinJobAge=300
# Mark the node DOWN after 60 s without a response from slurmd, and return it to service as
# soon as slurmd registers again, whatever the reason it went DOWN.
SlurmdTimeout=60
ReturnToService=2
InactiveLimit=0
MailProg=/bin/true

NodeName=$NODE_NAME NodeHostname=$(hostname) $hardware State=UNKNOWN
# DefMemPerCPU is in MiB. Memory is a consumable resource, so the default stays small.
PartitionName=debug Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4 DefMemPerCPU=512 PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=$NODE_NAME Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO DefMemPerCPU=512 PriorityTier=10
EOF
    mv "$CONF_FILE.tmp" "$CONF_FILE"
    log "wrote $CONF_FILE"
}

# --- node state ------------------------------------------------------------------------------

# Print the node state as sinfo reports it, or nothing when slurmctld does not respond.
node_state() {
    timeout 10 sinfo --noheader --Node --nodes="$NODE_NAME" --format='%T' 2>/dev/null | sed -n 1p
}

# A trailing * (not responding), ~ (powered down) or # (powering up) means the node cannot take jobs.
node_is_up() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

print_log_tails() {
    local name
    for name in slurmctld slurmd; do
        if [[ -r "$STATE_DIR/log/$name.log" ]]; then
            printf '\n--- last lines of %s ---\n' "$STATE_DIR/log/$name.log" >&2
            tail -n 20 "$STATE_DIR/log/$name.log" >&2
        fi
    done
}

wait_for_node() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if node_is_up; then
            log "node $NODE_NAME is $(node_state)"
            return 0
        fi
        live_pid "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null || { print_log_tails; die "slurmctld exited during startup"; }
        live_pid "$STATE_DIR/slurmd.pid" slurmd >/dev/null || { print_log_tails; die "slurmd exited during startup"; }
        sleep 1
    done
    print_log_tails
    die "node $NODE_NAME not up after ${START_TIMEOUT_S} s (state: '$(node_state)'); if it is drained, run: scontrol update NodeName=$NODE_NAME State=RESUME"
}

# --- subcommands -----------------------------------------------------------------------------

cmd_start() {
    require_root
    install_packages
    check_conf_is_ours
    mkdir -p "$STATE_DIR"

    local ctld_running=0 slurmd_running=0
    live_pid "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null && ctld_running=1
    live_pid "$STATE_DIR/slurmd.pid" slurmd >/dev/null && slurmd_running=1

    start_munged
    if ((ctld_running && slurmd_running)); then
        log "slurmctld and slurmd already running"
    else
        write_conf
        if ((ctld_running)); then
            log "slurmctld already running; rereading $CONF_FILE"
            timeout 30 scontrol reconfigure
        else
            # -c drops jobs and node states saved by an earlier run, which may have ended
            # without stop, so a fresh start never resumes stale jobs.
            log "starting slurmctld"
            slurmctld -c
        fi
        if ((slurmd_running)); then
            log "slurmd already running"
        else
            log "starting slurmd"
            slurmd
        fi
    fi
    wait_for_node
}

# Send SIGTERM, then SIGKILL after STOP_TIMEOUT_S; succeed when the process is gone.
stop_pid() {
    local name="$1" pid="$2"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while process_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name did not exit within ${STOP_TIMEOUT_S} s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            return 0
        fi
        sleep 0.2
    done
}

# Cancel every job, so that no job step outlives slurmd, and wait until none is left.
cancel_all_jobs() {
    local ids
    ids="$(timeout 10 squeue --noheader --format='%A' 2>/dev/null || true)"
    [[ -z "$ids" ]] && return 0
    log "cancelling $(wc -w <<<"$ids") job(s)"
    # shellcheck disable=SC2086  # one job id per word
    timeout 10 scancel $ids 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        [[ -z "$(timeout 10 squeue --noheader --format='%A' 2>/dev/null || true)" ]] && return 0
        sleep 1
    done
    log "jobs still listed after ${STOP_TIMEOUT_S} s; stopping the daemons anyway"
}

cmd_stop() {
    require_root
    local pid stopped=0

    if live_pid "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null; then
        cancel_all_jobs
    fi
    if pid="$(live_pid "$STATE_DIR/slurmd.pid" slurmd)"; then
        stop_pid slurmd "$pid"
        stopped=1
    fi
    if pid="$(live_pid "$STATE_DIR/slurmctld.pid" slurmctld)"; then
        stop_pid slurmctld "$pid"
        stopped=1
    fi
    if [[ -e "$MUNGE_OWNED_FLAG" ]]; then
        if pid="$(live_pid "$MUNGE_PID_FILE" munged)"; then
            stop_pid munged "$pid"
            stopped=1
        fi
        rm -f "$MUNGE_OWNED_FLAG"
    fi
    ((stopped)) || log "nothing to stop"
    return 0
}

# Exit 0 only when all three daemons run and the node accepts jobs. slurmctld keeps a node
# whose slurmd died "idle" until SlurmdTimeout passes, so sinfo alone is not enough.
cmd_status() {
    local name pid_file pid healthy=1
    for name in munged slurmctld slurmd; do
        pid_file="$STATE_DIR/$name.pid"
        [[ "$name" == munged ]] && pid_file="$MUNGE_PID_FILE"
        if pid="$(live_pid "$pid_file" "$name")"; then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s not running\n' "$name"
            healthy=0
        fi
    done

    if ! command -v sinfo >/dev/null 2>&1; then
        printf 'sinfo not found; run "bash %s start" first\n' "$0"
        return 1
    fi
    timeout 10 sinfo 2>&1 || true
    if ! node_is_up; then
        printf 'node %s is not up (state: %s)\n' "$NODE_NAME" "$(node_state || true)"
        healthy=0
    fi
    ((healthy)) && return 0
    return 1
}

main() {
    # slurmd and slurmctld live in /usr/sbin, which a non-login root shell may lack on PATH.
    export PATH="$PATH:/usr/sbin:/sbin"
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) die "usage: $0 start|stop|status (got '${1:-}')" ;;
    esac
}

main "$@"
