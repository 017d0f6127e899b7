#!/bin/bash
# Where the CPU goes while 1 GiB of stdout (or stdin) crosses each client: urun builds
# side by side (each with its own urund) and the docker CLI, alternating, one line per
# run with the wall time, the CPU seconds of the client, urund, dockerd and the whole
# machine, and the context switches of the client, urund and dockerd.
#
#   BINS="new:target/release old:/tmp/old" bench/profile.sh
#       (each NAME:DIR holds a urun and a urund; default: this tree's release build)
#   RUNS=3 SIZE=$((1 << 30))   runs per client, bytes per run
#   WHAT=in                    stdin (`urun -i IMAGE dd of=/dev/null <file`) instead of stdout
#   PERF=/tmp/p                also `perf record -a -g` each run into /tmp/p.NAME.N
#   STRACE=/tmp/s              also `strace -f -c` urund during each run
#   NODOCKER=1                 urun builds only
#
# Needs root (creates a user and a group, removed afterwards). bench/NOTES.md says what
# the figures showed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}; SIZE=${SIZE:-$((1 << 30))}; WHAT=${WHAT:-out}
BINS=${BINS:-new:$PWD/target/release}
IMAGE=urun-test/busybox:latest
work=$(mktemp -d /run/urun-profile.XXXXXX); chmod 755 "$work"
tag=urp$$; group=${tag}g; u=${tag}u
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" && wait "$p"; done 2>/dev/null
  docker ps -aq --filter "label=urun-bench=$tag" | xargs -r docker rm -f >/dev/null
  userdel -r -f "$u" 2>/dev/null; groupdel "$group"; rm -rf "$work"
}
trap cleanup EXIT
groupadd "$group"; useradd -m -s /bin/sh -G "$group" "$u"
printf '[access]\ngroup = "%s"\n' "$group" >"$work/policy.toml"; chmod 644 "$work/policy.toml"
declare -A SOCK UPID
for spec in $BINS; do
  name=${spec%%:*}; bin=${spec#*:}
  mkdir -p "$work/$name"; install -m 0755 "$bin/urun" "$work/$name/urun"
  s=$work/$name/sock/urun.sock
  "$bin/urund" --socket "$s" --policy "$work/policy.toml" --state-dir "$work/$name/state" 2>"$work/$name.log" &
  pids+=($!); UPID[$name]=$!; SOCK[$name]=$s
  for _ in $(seq 100); do [ -S "$s" ] && break; sleep 0.1; done
done
uid=$(id -u "$u"); gid=$(id -g "$u")
# Exactly what urun forces (as bench/run.sh).
DOCKER=(docker run --rm --label "urun-bench=$tag" -u "$uid:$gid" --cap-drop ALL --read-only
  --security-opt no-new-privileges:true
  --tmpfs /tmp:rw,nosuid,nodev,noexec,size=67108864,mode=1777
  --tmpfs "/home/$u:rw,nosuid,nodev,noexec,size=67108864,uid=$uid,gid=$gid,mode=0700"
  -e "HOME=/home/$u" --ulimit nofile=1024:1024 --ulimit nproc=256:256 --ulimit core=0:0
  --memory 512m --memory-swap 512m --pids-limit 256 --cpus 1 --network none
  --log-driver none --init)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }                       # ticks
cs() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
dpid=$(pgrep -x dockerd | head -1)
[ "$WHAT" = in ] && { head -c "$SIZE" /dev/zero >"$work/input"; chmod 644 "$work/input"; }

one() { # NAME COMMAND... : one measured run
  local name=$1 i=$2; shift 2
  local up=${UPID[$name]:-} u0=0 uc0=0 u1=0 uc1=0 d0 dc0 b0 t0 t1 pp= sp=
  [ -n "$up" ] && { u0=$(cpu "$up"); uc0=$(cs "$up"); }
  d0=$(cpu "$dpid"); dc0=$(cs "$dpid"); b0=$(busy)
  [ -n "${PERF:-}" ] && { perf record -a -g -F 499 -o "$PERF.$name.$i" -q >/dev/null 2>&1 & pp=$!; }
  [ -n "${STRACE:-}" ] && [ -n "$up" ] && { strace -f -c -o "$STRACE.$name.$i" -p "$up" 2>/dev/null & sp=$!; sleep 1; }
  t0=$(date +%s.%N)
  if [ "$WHAT" = out ]; then
    /usr/bin/time -f '%U %S %M %w %c' -o "$work/t" "$@" "$IMAGE" head -c "$SIZE" /dev/zero </dev/null >"$work/o"
    [ "$(stat -c %s "$work/o")" = "$SIZE" ] || echo "$name: wrong byte count" >&2
  else
    /usr/bin/time -f '%U %S %M %w %c' -o "$work/t" "$@" -i "$IMAGE" sh -c 'dd bs=64k iflag=fullblock of=/dev/null 2>&1' <"$work/input" >"$work/o"
    grep -qx "$((SIZE / 65536))+0 records in" "$work/o" || echo "$name: wrong byte count" >&2
  fi
  t1=$(date +%s.%N)
  [ -n "$sp" ] && { kill -INT "$sp"; wait "$sp" || true; }
  [ -n "$pp" ] && { kill -INT "$pp"; wait "$pp" || true; }
  [ -n "$up" ] && { u1=$(cpu "$up"); uc1=$(cs "$up"); }
  awk -v n="$name" -v t0="$t0" -v t1="$t1" -v s="$SIZE" -v u=$((u1 - u0)) -v uc=$((uc1 - uc0)) \
    -v d=$(($(cpu "$dpid") - d0)) -v dc=$(($(cs "$dpid") - dc0)) -v b=$(($(busy) - b0)) \
    '{printf "%-8s wall %6.2f  MiB/s %4.0f  CPU s: client %5.2f urund %5.2f dockerd %5.2f machine %6.2f  rss %6d KiB  switches: client %6d urund %6d dockerd %6d\n",
      n, t1 - t0, s / (t1 - t0) / 1048576, $1 + $2, u / 100, d / 100, b / 100, $3, $4 + $5, uc, dc}' "$work/t"
  rm -f "$work/o"
}
for i in $(seq "$RUNS"); do
  for spec in $BINS; do
    name=${spec%%:*}
    one "$name" "$i" setpriv --reuid="$u" --regid="$u" --init-groups --reset-env "$work/$name/urun" --socket "${SOCK[$name]}"
  done
  [ -n "${NODOCKER:-}" ] || one docker "$i" "${DOCKER[@]}"
  echo "   load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
