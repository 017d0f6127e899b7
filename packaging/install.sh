#!/bin/sh
# Installs urun on this host from the source tree, without a package:
#   packaging/install.sh            build (if needed), install, create the group, start urund
#   packaging/install.sh --demo     the same, then run a real demo as an unprivileged user
#   packaging/install.sh --uninstall
# Needs root. Installs Debian's docker.io and starts dockerd if no daemon answers.
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
PIDFILE=/run/urund.pid
LOG=/var/log/urund.log
DEMO_USER=urun-demo
DEMO_IMAGE=urun-demo/busybox:latest

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

stop_urund() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")"
    i=0; while kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = "--uninstall" ]; then
  stop_urund
  rm -f "$PREFIX/bin/urun" "$PREFIX/sbin/urund"
  id "$DEMO_USER" >/dev/null 2>&1 && userdel -r "$DEMO_USER" 2>/dev/null || true
  docker image rm "$DEMO_IMAGE" >/dev/null 2>&1 || true
  echo "urun removed (kept: /etc/urun/policy.toml, group urun, $LOG)"
  exit 0
fi

# 1. A Docker daemon.
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  if [ "$(ps -o comm= -p 1)" = systemd ]; then systemctl start docker; else
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  i=0; until docker info >/dev/null 2>&1; do i=$((i+1)); [ $i -le 60 ] || { echo "dockerd did not start" >&2; exit 1; }; sleep 1; done
fi

# 2. The binaries.
if [ ! -x target/release/urun ] || [ ! -x target/release/urund ]; then
  command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo not found: install Rust (rustup.rs) or build elsewhere into target/release" >&2; exit 1; }
  cargo build --release --locked
fi
install -D -m 0755 target/release/urun "$PREFIX/bin/urun"
install -D -m 0755 target/release/urund "$PREFIX/sbin/urund"

# 3. The group and the policy.
getent group urun >/dev/null || groupadd --system urun
if [ ! -e /etc/urun/policy.toml ]; then
  install -d -m 0755 /etc/urun
  install -m 0644 packaging/policy.toml /etc/urun/policy.toml
fi

# 4. The helper.
stop_urund
(umask 077; nohup "$PREFIX/sbin/urund" >>"$LOG" 2>&1 & echo $! >"$PIDFILE")
i=0; until [ -S /run/urun/urun.sock ]; do
  i=$((i+1)); kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ $i -le 100 ] || { tail -5 "$LOG" >&2; exit 1; }; sleep 0.1
done
echo "urund running (pid $(cat "$PIDFILE"), log $LOG); add users with: usermod -aG urun USER"

# 5. The demo, as an unprivileged member of the group.
if [ "${1:-}" = "--demo" ]; then
  id "$DEMO_USER" >/dev/null 2>&1 || useradd -m -s /bin/sh -G urun "$DEMO_USER"
  packaging/busybox-image.sh "$DEMO_IMAGE"
  as_demo() { setpriv --reuid="$DEMO_USER" --regid="$DEMO_USER" --init-groups --reset-env "$@"; }
  echo "\$ urun $DEMO_IMAGE id      # as $DEMO_USER ($(id -u $DEMO_USER))"
  as_demo urun "$DEMO_IMAGE" id
  echo "\$ urun $DEMO_IMAGE sh -c 'grep -E \"CapEff|NoNewPrivs|Seccomp:\" /proc/self/status; touch /x'"
  as_demo urun "$DEMO_IMAGE" sh -c 'grep -E "CapEff|NoNewPrivs|Seccomp:" /proc/self/status; touch /x' || echo "(exit $?)"
  echo "\$ echo hello | urun -i $DEMO_IMAGE tr a-z A-Z"
  echo hello | as_demo urun -i "$DEMO_IMAGE" tr a-z A-Z
fi
