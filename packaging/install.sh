#!/bin/sh
# Installs urun on this host from the source tree, without the Debian package. It
# installs the same files as the package (under $PREFIX instead of /usr), creates the
# urun group and starts urund: through systemd (urund.socket) when systemd runs,
# otherwise in the background with a pid file.
#
#   packaging/install.sh [--bin-dir DIR]    build (unless --bin-dir), install, start
#   packaging/install.sh --demo             the same, then a real demo as an unprivileged user
#   packaging/install.sh --uninstall        stop urund and remove every installed file
#                                           and urund's state (/var/lib/urun), except
#                                           /etc/urun/policy.toml and the log
#
#   --bin-dir DIR  take urun and urund from DIR instead of building target/release
#   PREFIX         where binaries and data go (default /usr/local)
#
# Needs root. Installs Debian's docker.io and starts dockerd if no daemon answers.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
PIDFILE=/run/urund.pid
LOG=/var/log/urund.log
SOCKET=/run/urun/urun.sock
DEMO_USER=urun-demo
DEMO_IMAGE=urun-demo/busybox:latest
UNITS=/etc/systemd/system

MODE=install
BIN_DIR=
while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) MODE=uninstall; shift ;;
    --demo) MODE=demo; shift ;;
    --bin-dir) BIN_DIR=$(realpath -m "${2:?--bin-dir needs a directory}"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$SRC"
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

with_systemd() { [ -d /run/systemd/system ]; }

# What this script installed (files, and directories it had to create), so that
# --uninstall removes exactly that and nothing that was there before.
MANIFEST=$PREFIX/share/urun/install-manifest
NEW=$(mktemp)
trap 'rm -f "$NEW"' EXIT
# put MODE SRC DEST: installs one file, noting DEST and every directory it creates.
put() {
  d=$(dirname "$3"); missing=
  while [ ! -d "$d" ]; do missing="$d
$missing"; d=$(dirname "$d"); done
  printf '%s' "$missing" | sed '/^$/d; s/^/dir /' >>"$NEW"
  install -D -m "$1" "$2" "$3"
  echo "file $3" >>"$NEW"
}
save_manifest() {
  put 0644 /dev/null "$MANIFEST"
  { [ -f "$MANIFEST" ] && cat "$MANIFEST"; cat "$NEW"; } | awk '!seen[$0]++' >"$MANIFEST.new"
  mv "$MANIFEST.new" "$MANIFEST"
}

stop_urund() {
  if with_systemd && [ -f "$UNITS/urund.socket" ]; then
    systemctl disable --now urund.socket urund.service >/dev/null 2>&1 || true
  fi
  if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    # Only the urund this script started: the pid file's process, if it is urund.
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$PREFIX/sbin/urund" ]; then
      kill -TERM "$pid"
      i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    rm -f "$PIDFILE"
  fi
}

if [ "$MODE" = uninstall ]; then
  stop_urund
  if [ -f "$MANIFEST" ]; then
    cp "$MANIFEST" "$NEW"
    sed -n 's/^file //p' "$NEW" | while read -r f; do rm -f "$f"; done
    # Directories it created, deepest first, if nothing else has been put there.
    sed -n 's/^dir //p' "$NEW" | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2- |
      while read -r d; do rmdir "$d" 2>/dev/null || true; done
  else
    echo "install.sh: no $MANIFEST: nothing to remove (installed with another PREFIX?)" >&2
  fi
  rmdir /run/urun 2>/dev/null || true
  # urund's state: the secret its containers were labelled with (urund, stopped above,
  # removed its containers).
  rm -rf /var/lib/urun
  if with_systemd; then systemctl daemon-reload || true; fi
  # The demo's user and image, if --demo made them (a user or image of that name that
  # was there before is not ours to remove).
  sed -n 's/^user //p' "$NEW" | while read -r u; do userdel -r "$u" 2>/dev/null || true; done
  sed -n 's/^image //p' "$NEW" | while read -r i; do docker image rm "$i" >/dev/null 2>&1 || true; done
  echo "urun removed (kept: /etc/urun/policy.toml, the group urun, $LOG)"
  exit 0
fi

# 1. A Docker daemon.
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  if with_systemd; then systemctl start docker; else
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  i=0; until docker info >/dev/null 2>&1; do i=$((i+1)); [ $i -le 60 ] || { echo "dockerd did not start" >&2; exit 1; }; sleep 1; done
fi

# 2. The binaries, and the man pages and completions generated from their definitions.
if [ -z "$BIN_DIR" ]; then
  BIN_DIR=target/release
  if [ ! -x target/release/urun ] || [ ! -x target/release/urund ]; then
    command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo not found: install Rust (rustup.rs) or pass --bin-dir with built binaries" >&2; exit 1; }
    cargo build --release --locked
  fi
fi
for b in urun urund; do
  [ -x "$BIN_DIR/$b" ] || { echo "install.sh: $BIN_DIR/$b not found" >&2; exit 1; }
done
stop_urund
umask 022
put 0755 "$BIN_DIR/urun" "$PREFIX/bin/urun"
put 0755 "$BIN_DIR/urund" "$PREFIX/sbin/urund"
put 0644 README.md "$PREFIX/share/doc/urun/README.md"
put 0644 SECURITY.md "$PREFIX/share/doc/urun/SECURITY.md"
if [ -f packaging/shell/urun.sh ]; then put 0644 packaging/shell/urun.sh "$PREFIX/share/urun/shell/urun.sh"; fi
if [ -f examples/gen-docs.rs ] && command -v cargo >/dev/null 2>&1; then
  docs=$(mktemp -d)
  if cargo run --quiet --locked --example gen-docs -- "$docs" >&2; then
    put_doc() { src=$(find "$docs" -name "$1" -type f | head -1); [ -z "$src" ] || put 0644 "$src" "$2"; }
    put_doc urun.1 "$PREFIX/share/man/man1/urun.1"
    put_doc urund.8 "$PREFIX/share/man/man8/urund.8"
    for page in urun-build.1 urun-images.1 urun-rmi.1 urun-push.1; do
      put_doc "$page" "$PREFIX/share/man/man1/$page"
    done
    put_doc urun.bash "$PREFIX/share/bash-completion/completions/urun"
    put_doc urund.bash "$PREFIX/share/bash-completion/completions/urund"
    put_doc _urun "$PREFIX/share/zsh/site-functions/_urun"
    put_doc _urund "$PREFIX/share/zsh/site-functions/_urund"
    put_doc urun.fish "$PREFIX/share/fish/vendor_completions.d/urun.fish"
    put_doc urund.fish "$PREFIX/share/fish/vendor_completions.d/urund.fish"
  fi
  rm -rf "$docs"
fi

# 3. The units (pointing at $PREFIX), sysusers/tmpfiles entries, the group, the policy.
put 0644 packaging/systemd/urund.socket "$UNITS/urund.socket"
service=$(mktemp)
sed "s|/usr/sbin/urund|$PREFIX/sbin/urund|" packaging/systemd/urund.service >"$service"
put 0644 "$service" "$UNITS/urund.service"
rm -f "$service"
put 0644 packaging/sysusers.d/urun.conf /etc/sysusers.d/urun.conf
put 0644 packaging/tmpfiles.d/urun.conf /etc/tmpfiles.d/urun.conf
getent group urun >/dev/null || groupadd --system urun
[ -d /run/urun ] || install -d -m 0755 -o root -g root /run/urun
# The policy is the administrator's from now on: never overwritten, kept on uninstall.
if [ ! -e /etc/urun/policy.toml ]; then
  install -d -m 0755 /etc/urun
  install -m 0644 packaging/policy.toml /etc/urun/policy.toml
fi
save_manifest

# 4. The helper.
if with_systemd; then
  systemctl daemon-reload
  systemctl enable --now urund.socket
  echo "urund.socket enabled and started (urund starts on the first connection; logs: journalctl -u urund)"
else
  (umask 077; nohup "$PREFIX/sbin/urund" --socket "$SOCKET" >>"$LOG" 2>&1 & echo $! >"$PIDFILE")
  i=0; until [ -S "$SOCKET" ]; do
    i=$((i+1)); kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ $i -le 100 ] || { tail -5 "$LOG" >&2; exit 1; }; sleep 0.1
  done
  echo "urund running (pid $(cat "$PIDFILE"), log $LOG); no systemd here, so it is not restarted at boot"
fi
echo "add users with: usermod -aG urun USER (they must log in again)"

# 5. The demo, as an unprivileged member of the group.
if [ "$MODE" = demo ]; then
  # note LINE: records in the manifest what the demo made, for --uninstall.
  note() { grep -qxF "$1" "$MANIFEST" || echo "$1" >>"$MANIFEST"; }
  if ! id "$DEMO_USER" >/dev/null 2>&1; then
    useradd -m -s /bin/sh -G urun "$DEMO_USER"
    note "user $DEMO_USER"
  fi
  docker image inspect "$DEMO_IMAGE" >/dev/null 2>&1 || note "image $DEMO_IMAGE"
  packaging/busybox-image.sh "$DEMO_IMAGE"
  as_demo() { setpriv --reuid="$DEMO_USER" --regid="$DEMO_USER" --init-groups --reset-env "$@"; }
  echo "\$ urun $DEMO_IMAGE id      # as $DEMO_USER ($(id -u $DEMO_USER))"
  as_demo "$PREFIX/bin/urun" "$DEMO_IMAGE" id
  echo "\$ urun $DEMO_IMAGE sh -c 'grep -E \"CapEff|NoNewPrivs|Seccomp:\" /proc/self/status; touch /x'"
  as_demo "$PREFIX/bin/urun" "$DEMO_IMAGE" sh -c 'grep -E "CapEff|NoNewPrivs|Seccomp:" /proc/self/status; touch /x' || echo "(exit $?)"
  echo "\$ echo hello | urun -i $DEMO_IMAGE tr a-z A-Z"
  echo hello | as_demo "$PREFIX/bin/urun" -i "$DEMO_IMAGE" tr a-z A-Z
fi
