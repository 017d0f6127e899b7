#!/bin/bash
# urun against plain `docker run` with exactly the settings urun forces, side by side.
#
#   bench/run.sh            full run (a few minutes), writes bench/RESULTS.md
#   QUICK=1 bench/run.sh    small sizes, to check the script itself (no RESULTS.md)
#   RUNSC=1 bench/run.sh    also urun under gVisor's runsc beside runc (below)
#   RUNSC=only bench/run.sh only that, replacing its section of RESULTS.md
#
# runsc: the machine's main dockerd is never reconfigured, so tests/bench_runsc.rs
# starts an extra dockerd with runsc registered (tests/common/engine.rs, removed
# afterwards) and one urund on it, and times two users, one whose group the policy puts
# under runsc and one under runc, alternating (latency of `IMAGE true`, stdout and
# stdin throughput; RUNSC_MIB MiB, default 256).
#
# Needs root (creates 4 users and a group, starts a private urund). The two commands
# alternate run by run so machine noise hits both alike; every figure is a median.
# Ratios are urun / docker: below 1 is better for times, above 1 for throughput.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-}
N=${N:-$([ -n "$QUICK" ] && echo 3 || echo 21)}               # latency runs per side
TP_RUNS=${TP_RUNS:-$([ -n "$QUICK" ] && echo 1 || echo 9)}    # throughput runs per side (3 could not tell 0.9 from 1.1, 5 gave 1.14 and 1.21 in two runs)
SIZE=${SIZE:-$([ -n "$QUICK" ] && echo $((64 << 20)) || echo $((1 << 30)))}
CONC_USERS=4
CONC_EACH=8
IMAGE=urun-test/busybox:latest

tests/setup.sh
cargo build --release --locked --quiet

# The runsc table (markdown), from tests/bench_runsc.rs.
runsc_table() {
  local mib=${RUNSC_MIB:-$([ -n "$QUICK" ] && echo 32 || echo 256)}
  echo "runsc beside runc: extra dockerd, $N x 'IMAGE true', 3 x $mib MiB each way" >&2
  BENCH_N=$N BENCH_MIB=$mib \
    cargo test --release --locked --quiet --test bench_runsc -- --ignored --nocapture \
    --test-threads=1 2>/dev/null | grep '^|'
}
# Its section of RESULTS.md.
runsc_section() {
  echo "<!-- runsc: begin (written by bench/run.sh with RUNSC=1 or RUNSC=only) -->"
  echo "## Under gVisor (runsc) beside runc"
  echo
  echo "Produced by \`RUNSC=${RUNSC} bench/run.sh\` on $(date -u +%Y-%m-%d) (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)),"
  echo "same machine, runsc $(runsc --version 2>/dev/null | awk 'NR == 1 {print $3}'). urun (release build) on an extra"
  echo "dockerd with \`runsc\` registered (\`--network=none --oci-seccomp\`); two members, one"
  echo "whose group the policy puts under runsc (\`[group.NAME.runtime]\`), alternating."
  echo
  echo "$1"
  echo "<!-- runsc: end -->"
}
if [ "${RUNSC:-}" = only ]; then
  table=$(runsc_table)
  echo "$table"
  if [ -z "$QUICK" ]; then
    {
      sed '/^<!-- runsc: begin/,/^<!-- runsc: end -->/d' bench/RESULTS.md |
        awk '{ a[NR] = $0 } END { n = NR; while (n > 0 && a[n] == "") n--; for (i = 1; i <= n; i++) print a[i] }'
      echo
      runsc_section "$table"
    } >bench/RESULTS.md.new
    mv bench/RESULTS.md.new bench/RESULTS.md
    echo "wrote bench/RESULTS.md" >&2
  fi
  exit 0
fi

work=$(mktemp -d /run/urun-bench.XXXXXX)
chmod 755 "$work"
tag=urb$$
group=${tag}g
users=()
urund_pid=
cleanup() {
  set +e
  [ -n "$urund_pid" ] && kill -TERM "$urund_pid" 2>/dev/null && wait "$urund_pid" 2>/dev/null
  docker ps -aq --filter "label=io.urun.helper=$work/sock/urun.sock" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter "label=urun-bench=$tag" | xargs -r docker rm -f >/dev/null
  for u in "${users[@]}"; do userdel -r -f "$u" 2>/dev/null; done
  groupdel "$group" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

groupadd "$group"
for i in $(seq 1 $CONC_USERS); do
  u=${tag}u$i
  useradd -m -s /bin/sh -G "$group" "$u"
  users+=("$u")
done
printf '[access]\ngroup = "%s"\n' "$group" >"$work/policy.toml"
chmod 644 "$work/policy.toml"
install -m 0755 target/release/urun "$work/urun"
SOCK=$work/sock/urun.sock
target/release/urund --socket "$SOCK" --policy "$work/policy.toml" --state-dir "$work/state" 2>"$work/urund.log" &
urund_pid=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$work/urund.log"; exit 1; }

# Command prefixes as arrays (so /usr/bin/time can run them): urun as user $1 ...
urun_cmd() { URUN=(setpriv --reuid="$1" --regid="$1" --init-groups --reset-env "$work/urun" --socket "$SOCK"); }
# ... and the docker CLI with exactly what urun forces for user $1 (see src/forced.rs).
docker_cmd() {
  local u=$1 uid gid
  uid=$(id -u "$u"); gid=$(id -g "$u")
  DOCKER=(docker run --rm --label "urun-bench=$tag" -u "$uid:$gid" --cap-drop ALL --read-only
    --security-opt no-new-privileges:true
    --tmpfs /tmp:rw,nosuid,nodev,noexec,size=67108864,mode=1777
    --tmpfs "/home/$u:rw,nosuid,nodev,noexec,size=67108864,uid=$uid,gid=$gid,mode=0700"
    -e "HOME=/home/$u" --ulimit nofile=1024:1024 --ulimit nproc=256:256 --ulimit core=0:0
    --memory 512m --memory-swap 512m --pids-limit 256 --cpus 1 --network none
    --log-driver none --init)
}
U=${users[0]}
urun_cmd "$U"; docker_cmd "$U"

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
rss_kib() { awk '/^'"$2"':/ {print $2}' "/proc/$1/status"; }

# One measured client run: wall s, user+sys s, peak RSS KiB -> appended to $1.
# Remaining args: the command; its stdout goes to $OUT (default /dev/null), stdin from $IN.
measure() {
  local dest=$1; shift
  local tf; tf=$(mktemp)
  local t0 t1
  t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$tf" "$@" <"${IN:-/dev/null}" >"${OUT:-/dev/null}"
  t1=$(now)
  awk -v t0="$t0" -v t1="$t1" '{printf "%.4f %.4f %d\n", t1 - t0, $1 + $2, $3}' "$tf" >>"$dest"
  rm -f "$tf"
}
col() { awk -v c="$2" '{print $c}' "$1" | median; }

echo "warming up" >&2
"${URUN[@]}" "$IMAGE" true
"${DOCKER[@]}" "$IMAGE" true
idle_rss=$(rss_kib "$urund_pid" VmRSS)

echo "1. latency: $N x 'IMAGE true' each" >&2
for _ in $(seq "$N"); do
  measure "$work/lat.urun" "${URUN[@]}" "$IMAGE" true
  measure "$work/lat.docker" "${DOCKER[@]}" "$IMAGE" true
done

echo "2. stdout: $TP_RUNS x $SIZE bytes each" >&2
for _ in $(seq "$TP_RUNS"); do
  OUT=$work/count measure "$work/out.urun" "${URUN[@]}" "$IMAGE" head -c "$SIZE" /dev/zero
  [ "$(stat -c %s "$work/count")" = "$SIZE" ] || { echo "urun stdout: wrong byte count" >&2; exit 1; }
  OUT=$work/count measure "$work/out.docker" "${DOCKER[@]}" "$IMAGE" head -c "$SIZE" /dev/zero
  [ "$(stat -c %s "$work/count")" = "$SIZE" ] || { echo "docker stdout: wrong byte count" >&2; exit 1; }
done
rm -f "$work/count"

echo "3. stdin: $TP_RUNS x $SIZE bytes each" >&2
# The container discards its stdin as `cat >/dev/null` would, counting it: busybox `dd`
# with whole 64 KiB blocks, whose record count is the byte count. (Until 2026-12-02
# this was `wc -c`, whose busybox version reads a byte at a time through stdio and
# was the bottleneck itself, at about 190 MiB/s for either client: bench/NOTES.md.)
head -c "$SIZE" /dev/zero >"$work/input"
chmod 644 "$work/input"
SINK=(sh -c 'dd bs=64k iflag=fullblock of=/dev/null 2>&1')
want_records="$((SIZE / 65536))+0 records in"
for _ in $(seq "$TP_RUNS"); do
  IN=$work/input OUT=$work/wc measure "$work/in.urun" "${URUN[@]}" -i "$IMAGE" "${SINK[@]}"
  grep -qx "$want_records" "$work/wc" || { echo "urun stdin: wrong count: $(cat "$work/wc")" >&2; exit 1; }
  IN=$work/input OUT=$work/wc measure "$work/in.docker" "${DOCKER[@]}" -i "$IMAGE" "${SINK[@]}"
  grep -qx "$want_records" "$work/wc" || { echo "docker stdin: wrong count: $(cat "$work/wc")" >&2; exit 1; }
done
rm -f "$work/input" "$work/wc"

echo "4. concurrency: $((CONC_USERS * CONC_EACH)) runs by $CONC_USERS users at once" >&2
echo 5 >"/proc/$urund_pid/clear_refs"   # reset the helper's peak RSS (VmHWM)
conc() { # $1 = urun|docker -> prints wall seconds; fails on any wrong output
  local kind=$1 t0 t1 pids=() k=0 cmd
  mkdir -p "$work/conc.$kind"
  t0=$(now)
  for u in "${users[@]}"; do
    for i in $(seq "$CONC_EACH"); do
      k=$((k + 1))
      if [ "$kind" = urun ]; then urun_cmd "$u"; cmd=("${URUN[@]}"); else docker_cmd "$u"; cmd=("${DOCKER[@]}"); fi
      "${cmd[@]}" "$IMAGE" sh -c "id -u | tr -d '\n'; echo -$i" >"$work/conc.$kind/$u.$i" 2>&1 &
      pids+=($!)
    done
  done
  local bad=0
  for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
  t1=$(now)
  for u in "${users[@]}"; do
    for i in $(seq "$CONC_EACH"); do
      local want; want="$(id -u "$u")-$i"
      local got; got=$(cat "$work/conc.$kind/$u.$i")
      [ "$got" = "$want" ] || { echo "$kind $u.$i: got '$got'" >&2; bad=$((bad + 1)); }
    done
  done
  echo "$bad" >"$work/conc.$kind.bad"
  awk -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.3f\n", t1 - t0}'
}
conc_urun=$(conc urun)
peak_rss=$(rss_kib "$urund_pid" VmHWM)
conc_docker=$(conc docker)
bad_urun=$(cat "$work/conc.urun.bad")
bad_docker=$(cat "$work/conc.docker.bad")
left=$(docker ps -aq --filter "label=io.urun.helper=$SOCK" | wc -l)
rtable=
[ -n "${RUNSC:-}" ] && rtable=$(runsc_table)

# ── report ──
lat_u=$(col "$work/lat.urun" 1); lat_d=$(col "$work/lat.docker" 1)
cpu_u=$(col "$work/lat.urun" 2); cpu_d=$(col "$work/lat.docker" 2)
rss_u=$(col "$work/lat.urun" 3); rss_d=$(col "$work/lat.docker" 3)
mbps() { awk -v s="$SIZE" -v t="$1" 'BEGIN {printf "%.0f", s / t / 1048576}'; }
out_u=$(mbps "$(col "$work/out.urun" 1)"); out_d=$(mbps "$(col "$work/out.docker" 1)")
in_u=$(mbps "$(col "$work/in.urun" 1)"); in_d=$(mbps "$(col "$work/in.docker" 1)")
orss_u=$(col "$work/out.urun" 3); orss_d=$(col "$work/out.docker" 3)
ocpu_u=$(col "$work/out.urun" 2); ocpu_d=$(col "$work/out.docker" 2)

table=$(cat <<EOF
| measure | urun | docker CLI | urun / docker | target |
|---|---|---|---|---|
| latency \`IMAGE true\`, wall (s, median of $N) | $lat_u | $lat_d | $(ratio "$lat_u" "$lat_d") | ≤ 1.0 |
| latency, client CPU user+sys (s) | $cpu_u | $cpu_d | $(ratio "$cpu_u" "$cpu_d") | |
| latency, client peak RSS (KiB) | $rss_u | $rss_d | $(ratio "$rss_u" "$rss_d") | ≤ 0.25 |
| stdout throughput (MiB/s, $((SIZE >> 20)) MiB, median of $TP_RUNS) | $out_u | $out_d | $(ratio "$out_u" "$out_d") | ≥ 1.2 |
| stdout, client CPU user+sys (s) | $ocpu_u | $ocpu_d | $(ratio "$ocpu_u" "$ocpu_d") | |
| stdout, client peak RSS (KiB) | $orss_u | $orss_d | $(ratio "$orss_u" "$orss_d") | ≤ 0.25 |
| stdin throughput (MiB/s, $((SIZE >> 20)) MiB, median of $TP_RUNS) | $in_u | $in_d | $(ratio "$in_u" "$in_d") | ≥ 1.0 |
| $((CONC_USERS * CONC_EACH)) concurrent runs by $CONC_USERS users, total wall (s) | $conc_urun | $conc_docker | $(ratio "$conc_urun" "$conc_docker") | |
| concurrent runs with wrong output or failure | $bad_urun | $bad_docker | | 0 |
| containers left after the concurrent runs | $left | | | 0 |
| urund idle RSS (KiB) | $idle_rss | | | ≤ 15360 |
| urund peak RSS during the concurrent runs (KiB) | $peak_rss | | | |
EOF
)
echo
echo "$table"
[ -n "$rtable" ] && { echo; echo "$rtable"; }

if [ -z "$QUICK" ]; then
  {
    echo "# Benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` on $(date -u +%Y-%m-%d) (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))."
    echo
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GiB RAM,"
    echo "kernel $(uname -r), Docker Engine $(docker version -f '{{.Server.Version}}') (API $(docker version -f '{{.Server.APIVersion}}')),"
    echo "docker CLI $(docker version -f '{{.Client.Version}}'), urun $(target/release/urun --version | awk '{print $2}') (release build)."
    echo
    echo "The docker CLI runs as root with exactly the flags urun forces (\`-u uid:gid\`,"
    echo "\`--cap-drop ALL\`, \`--read-only\`, \`--security-opt no-new-privileges\`, the two tmpfs,"
    echo "the ulimits, memory/pids/cpus, \`--network none\`, \`--log-driver none\`, \`--init\`, \`--rm\`);"
    echo "urun runs as an unprivileged member of the urun group. Runs alternate between the two."
    echo "stdout: \`IMAGE head -c $SIZE /dev/zero >file\`; stdin: \`-i IMAGE sh -c 'dd bs=64k"
    echo "iflag=fullblock of=/dev/null 2>&1' <file\` (a \`cat >/dev/null\` that counts the bytes)."
    echo
    echo "$table"
    echo
    echo "What was profiled and changed, and why a target is or is not met: [NOTES.md](NOTES.md)."
    # The section bench/stress-connections.sh wrote stays.
    sed -n '/^<!-- stress-connections: begin/,/^<!-- stress-connections: end -->/p' \
      bench/RESULTS.md 2>/dev/null | sed '1s/^/\n/'
    # The runsc section: this run's, or the one a RUNSC=only run wrote.
    if [ -n "$rtable" ]; then
      echo
      runsc_section "$rtable"
    else
      sed -n '/^<!-- runsc: begin/,/^<!-- runsc: end -->/p' bench/RESULTS.md 2>/dev/null | sed '1s/^/\n/'
    fi
  } >bench/RESULTS.md.new
  mv bench/RESULTS.md.new bench/RESULTS.md
  echo "wrote bench/RESULTS.md" >&2
fi
[ "$bad_urun" = 0 ] && [ "$left" = 0 ]
