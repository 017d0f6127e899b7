#!/bin/sh
# Prepares this machine for urun's end-to-end tests. Idempotent and safe to run from
# several test processes at once (flock). Needs root.
#  - a reachable Docker daemon: if `docker info` fails, installs Debian's docker.io
#    and starts dockerd in the background, then waits for it;
#  - the Debian packages the tests use (docker-registry: a local registry for pull and
#    push tests; apache2-utils: htpasswd, its bcrypt credentials);
#  - the local test image (no registry is reachable), built by
#    packaging/busybox-image.sh as $URUN_TEST_IMAGE.
set -eu
IMAGE=${URUN_TEST_IMAGE:-urun-test/busybox:latest}
[ "$(id -u)" = 0 ] || { echo "tests/setup.sh: must run as root (creates users, runs urund)" >&2; exit 1; }
exec 9>/run/urun-test-setup.lock
flock 9

apt_install() {
  missing=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "tests/setup.sh: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q --no-install-recommends $missing >/dev/null
  }
}

apt_install busybox-static util-linux passwd python3 tmux procps docker-registry apache2-utils zsh systemd init-system-helpers binutils strace runsc gcc

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  if ! docker info >/dev/null 2>&1; then
    echo "tests/setup.sh: starting dockerd" >&2
    nohup dockerd >/var/log/urun-test-dockerd.log 2>&1 &
    i=0
    until docker info >/dev/null 2>&1; do
      i=$((i + 1))
      [ $i -le 60 ] || { echo "dockerd did not start; see /var/log/urun-test-dockerd.log" >&2; exit 1; }
      sleep 1
    done
  fi
fi

"$(dirname "$0")/../packaging/busybox-image.sh" "$IMAGE"
