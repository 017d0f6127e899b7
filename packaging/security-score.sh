#!/bin/sh
# Prints the systemd exposure score of urund.service as `systemd-analyze security`
# computes it offline (0 = fully confined, 10 = not at all), and fails when it is above
# a threshold. README.md records the score; tests/packaging.rs runs this script.
#
#   packaging/security-score.sh [THRESHOLD]     (default 3.0)
#
# Needs systemd-analyze (Debian package `systemd`); systemd need not be running.
set -eu
THRESHOLD=${1:-3.0}
UNIT=$(cd "$(dirname "$0")" && pwd)/systemd/urund.service
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "security-score.sh: systemd-analyze not found: apt-get install systemd" >&2; exit 2; }
out=$(systemd-analyze security --offline=true --no-pager "$UNIT" 2>/dev/null || true)
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for urund.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "security-score.sh: no score in systemd-analyze's output:" >&2; printf '%s\n' "$out" >&2; exit 2; }
echo "urund.service exposure: $score (threshold $THRESHOLD)"
if awk -v s="$score" -v t="$THRESHOLD" 'BEGIN { exit !(s > t) }'; then
  printf '%s\n' "$out" | grep '✗' >&2 || true
  echo "security-score.sh: exposure $score is above $THRESHOLD" >&2
  exit 1
fi
