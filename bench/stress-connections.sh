#!/bin/bash
# Availability under a hostile member: while one member of the access group holds
# 2,000 connections to urund open (bench/hold-connections.py: never sends a request,
# reopens every connection urund closes at once), another member runs
# `urun IMAGE true` again and again. Target: every run succeeds, and its median
# latency stays within 2x of the idle median.
#
#   bench/stress-connections.sh            full run, writes its section of bench/RESULTS.md
#   QUICK=1 bench/stress-connections.sh    fewer runs, to check the script (no RESULTS.md)
#
# Needs root: creates two users and a group, starts a private urund the way systemd
# would start a unit without LimitNOFILE= (soft limit 1024, hard 524288 or this shell's
# hard limit if lower; urund raises the soft one itself) and with the default policy.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
N=${N:-$([ -n "$QUICK" ] && echo 5 || echo 31)}   # victim runs per phase
HOLD=${HOLD:-2000}                                # connections the hostile member holds
PAUSE=${PAUSE:-0}                                 # seconds before it reopens closed ones
IMAGE=urun-test/busybox:latest

tests/setup.sh
cargo build --release --locked --quiet

work=$(mktemp -d /run/urun-stress.XXXXXX)
chmod 755 "$work"
tag=urs$$
group=${tag}g
users=()
urund_pid=
holder_pid=
cleanup() {
  set +e
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null
  [ -n "$urund_pid" ] && kill -TERM "$urund_pid" 2>/dev/null && wait "$urund_pid" 2>/dev/null
  docker ps -aq --filter "label=io.urun.helper=$work/sock/urun.sock" | xargs -r docker rm -f >/dev/null
  for u in "${users[@]}"; do userdel -r -f "$u" 2>/dev/null; done
  groupdel "$group" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

groupadd "$group"
for r in victim hostile; do
  u=${tag}$r
  useradd -m -s /bin/sh -G "$group" "$u"
  users+=("$u")
done
VICTIM=${users[0]} HOSTILE=${users[1]}
printf '[access]\ngroup = "%s"\n' "$group" >"$work/policy.toml"
chmod 644 "$work/policy.toml"
install -m 0755 target/release/urun "$work/urun"
install -m 0644 bench/hold-connections.py "$work/hold-connections.py"
SOCK=$work/sock/urun.sock
# systemd's default for a unit without LimitNOFILE= is 1024:524288; the hard limit is
# ours where this machine does not let us raise it.
HARD=$(ulimit -Hn)
[ "$HARD" -ge 524288 ] 2>/dev/null && HARD=524288
prlimit --nofile=1024:"$HARD" -- target/release/urund --socket "$SOCK" --policy "$work/policy.toml" \
  2>"$work/urund.log" &
urund_pid=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$work/urund.log"; exit 1; }
as() { local u=$1; shift; setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups --reset-env "$@"; }

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
fds() { ls "/proc/$urund_pid/fd" | wc -l; }

# N victim runs -> wall seconds appended to $1, failures counted in $1.fail.
phase() {
  local dest=$1 t0 t1 fail=0
  for _ in $(seq "$N"); do
    t0=$(now)
    if ! as "$VICTIM" timeout 120 "$work/urun" --socket "$SOCK" "$IMAGE" true >/dev/null 2>>"$work/victim.err"; then
      fail=$((fail + 1))
    fi
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b - a}' >>"$dest"
    [ -n "${SAMPLE:-}" ] && fds >>"$work/fds"
  done
  echo "$fail" >"$dest.fail"
}

echo "warming up" >&2
as "$VICTIM" "$work/urun" --socket "$SOCK" "$IMAGE" true
idle_fds=$(fds)

echo "1. idle: $N runs" >&2
phase "$work/idle1"

echo "2. the hostile member holds $HOLD connections: $N runs" >&2
mkfifo "$work/hold.in"
as "$HOSTILE" python3 "$work/hold-connections.py" "$SOCK" "$HOLD" "$PAUSE" <"$work/hold.in" >"$work/hold.out" &
holder_pid=$!
exec 8>"$work/hold.in"
for _ in $(seq 600); do grep -q '^ready' "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
held=$(awk '/^ready/ {print $2}' "$work/hold.out")
SAMPLE=1 phase "$work/attack"
exec 8>&-
wait "$holder_pid" || true
holder_pid=
counts=$(tail -n 1 "$work/hold.out")

echo "3. idle again: $N runs" >&2
phase "$work/idle2"

cat "$work/idle1" "$work/idle2" >"$work/idle"
idle=$(median <"$work/idle")
attack=$(median <"$work/attack")
ratio=$(awk -v a="$attack" -v b="$idle" 'BEGIN {printf "%.2f", a / b}')
fail_idle=$(($(cat "$work/idle1.fail") + $(cat "$work/idle2.fail")))
fail_attack=$(cat "$work/attack.fail")
max_fds=$(sort -n "$work/fds" | tail -n 1)
left=$(docker ps -aq --filter "label=io.urun.helper=$SOCK" | wc -l)
limit=$(awk '/Max open files/ {print $4 " soft / " $5 " hard"}' "/proc/$urund_pid/limits")
hostile_uid=$(id -u "$HOSTILE")
records=$(grep -c "^urund audit: .*\"uid\":$hostile_uid," "$work/urund.log" || true)
emfile=$(grep -c 'Too many open files' "$work/urund.log" || true)
jq_() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$counts" "$1"; }
connects=$(jq_ 'd["connects"]')
per_user=$(jq_ 'd["answers"].get("connections.per_user", 0)')
first_byte=$(jq_ 'd["answers"].get("first_byte", 0)')
other=$(jq_ 'sum(v for k, v in d["answers"].items() if k not in ("connections.per_user", "first_byte"))')

table=$(cat <<EOF
| measure | value | target |
|---|---|---|
| victim \`urun IMAGE true\`, idle median (s, $((2 * N)) runs) | $idle | |
| victim \`urun IMAGE true\` while $held connections are held, median (s, $N runs) | $attack | |
| ratio (held / idle) | $ratio | ≤ 2.0 |
| victim runs failed: idle / while held | $fail_idle / $fail_attack | 0 / 0 |
| hostile connects during the $N runs (each one urund closed was reopened at once) | $connects | |
| … refused at once (\`connections.per_user\`) | $per_user | |
| … closed at the 2 s first-byte deadline | $first_byte | |
| … other answers (other caps, no frame, errors) | $other | 0 |
| audit records of the hostile member (refusals are rate-limited per uid) | $records | |
| urund open descriptors: idle / most while held | $idle_fds / $max_fds | |
| urund's open-files limit (started with 1024 soft / $HARD hard) | $limit | |
| "Too many open files" in urund's log | $emfile | 0 |
| containers left | $left | 0 |
EOF
)
echo
echo "$table"

if [ -z "$QUICK" ]; then
  {
    echo "<!-- stress-connections: begin (written by bench/stress-connections.sh) -->"
    echo "## A member holding connections open"
    echo
    echo "Produced by \`bench/stress-connections.sh\` on $(date -u +%Y-%m-%d) (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)),"
    echo "same machine. urund (release build, default policy) is started as systemd starts a"
    echo "unit without \`LimitNOFILE=\` (\`prlimit --nofile=1024:$HARD\`). One member runs"
    echo "\`bench/hold-connections.py SOCKET $HOLD $PAUSE\`: $HOLD connections that never send a"
    echo "request, each reopened as soon as urund closes it. Another member runs"
    echo "\`urun $IMAGE true\` $N times before, $N times during and $N times after."
    if [ "$HARD" -lt 524288 ]; then
      echo "(Hard limit $HARD: the shell that ran the script could not raise it to systemd's 524288.)"
    fi
    echo
    echo "$table"
    echo "<!-- stress-connections: end -->"
  } >"$work/section"
  python3 - "$work/section" <<'PY'
import re, sys
section = open(sys.argv[1]).read()
text = open("bench/RESULTS.md").read()
pat = re.compile(r"<!-- stress-connections: begin.*?<!-- stress-connections: end -->\n", re.S)
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
open("bench/RESULTS.md", "w").write(text)
PY
  echo "wrote bench/RESULTS.md" >&2
fi
[ "$fail_idle" = 0 ] && [ "$fail_attack" = 0 ] && [ "$left" = 0 ] \
  && awk -v r="$ratio" 'BEGIN {exit !(r <= 2.0)}'
