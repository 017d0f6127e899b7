#!/bin/sh
# Builds the Debian package of urun with dpkg-deb, from this source tree. No debhelper
# or cargo-deb needed: a fresh machine needs only cargo and dpkg-deb.
#
#   packaging/build-deb.sh [--bin-dir DIR] [--out DIR]
#
#   --bin-dir DIR  take urun and urund from DIR (default: target/release, built with
#                  `cargo build --release --locked` if missing)
#   --out DIR      where the .deb goes (default: target/debian); its path is printed
#
# The package installs: /usr/bin/urun, /usr/sbin/urund, the systemd units, sysusers.d
# and tmpfiles.d entries, /etc/urun/policy.toml (a conffile), the documentation, and,
# when the tree can generate them (examples/gen-docs.rs), the man pages and the bash,
# zsh and fish completions; the shell snippet when packaging/shell/urun.sh exists.
# The file list is printed with the package (dpkg-deb -c) by the tests.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=$SRC/target/release
OUT=$SRC/target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR=$(realpath -m "${2:?--bin-dir needs a directory}"); shift 2 ;;
    --out) OUT=$(realpath -m "${2:?--out needs a directory}"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$SRC"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
[ -n "$VERSION" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 1; }

if [ "$BIN_DIR" = "$SRC/target/release" ] && { [ ! -x target/release/urun ] || [ ! -x target/release/urund ]; }; then
  cargo build --release --locked
fi
for b in urun urund; do
  [ -x "$BIN_DIR/$b" ] || { echo "build-deb.sh: $BIN_DIR/$b not found or not executable" >&2; exit 1; }
done

umask 022
mkdir -p "$OUT"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/urun-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
# Every file of the package, placed with its mode.
put() { install -D -m "$1" "$2" "$ROOT/$3"; }

put 0755 "$BIN_DIR/urun" usr/bin/urun
put 0755 "$BIN_DIR/urund" usr/sbin/urund
strip --strip-unneeded "$ROOT/usr/bin/urun" "$ROOT/usr/sbin/urund" 2>/dev/null || true
# Debian 12 still ships units under /lib (deb-systemd-helper looks in both).
put 0644 packaging/systemd/urund.socket lib/systemd/system/urund.socket
put 0644 packaging/systemd/urund.service lib/systemd/system/urund.service
put 0644 packaging/sysusers.d/urun.conf usr/lib/sysusers.d/urun.conf
put 0644 packaging/tmpfiles.d/urun.conf usr/lib/tmpfiles.d/urun.conf
put 0644 packaging/policy.toml etc/urun/policy.toml
put 0644 README.md usr/share/doc/urun/README.md
put 0644 SECURITY.md usr/share/doc/urun/SECURITY.md
printf 'urun %s\nLicense: MIT OR Apache-2.0\n' "$VERSION" >"$STAGE/copyright"
put 0644 "$STAGE/copyright" usr/share/doc/urun/copyright

# Shell snippet (docker run -> urun), sourced by users who want it; never enabled for
# everyone behind their back.
if [ -f packaging/shell/urun.sh ]; then
  put 0644 packaging/shell/urun.sh usr/share/urun/shell/urun.sh
fi

# Man pages and completions, generated from the clap definitions.
if [ -f examples/gen-docs.rs ]; then
  DOCS=$STAGE/docs
  mkdir -p "$DOCS"
  cargo run --quiet --locked --example gen-docs -- "$DOCS" >&2
  for f in urun.1 urund.8; do
    [ -f "$DOCS/$f" ] || { echo "build-deb.sh: gen-docs wrote no $f" >&2; exit 1; }
    sec=${f##*.}
    install -d "$ROOT/usr/share/man/man$sec"
    gzip -9n -c "$DOCS/$f" >"$ROOT/usr/share/man/man$sec/$f.gz"
  done
  # The pages of urun's other commands (urun-build.1, ...), whichever gen-docs wrote.
  for page in "$DOCS"/urun-*.1; do
    [ -f "$page" ] || continue
    gzip -9n -c "$page" >"$ROOT/usr/share/man/man1/${page##*/}.gz"
  done
  # Completions: whatever of the usual names gen-docs wrote.
  for pair in "urun.bash:usr/share/bash-completion/completions/urun" \
              "_urun:usr/share/zsh/vendor-completions/_urun" \
              "urun.fish:usr/share/fish/vendor_completions.d/urun.fish" \
              "urund.bash:usr/share/bash-completion/completions/urund" \
              "_urund:usr/share/zsh/vendor-completions/_urund" \
              "urund.fish:usr/share/fish/vendor_completions.d/urund.fish"; do
    src=$(find "$DOCS" -name "${pair%%:*}" -type f | head -1)
    [ -n "$src" ] && put 0644 "$src" "${pair#*:}"
  done
fi

# Control files.
CTRL=$ROOT/DEBIAN
install -d "$CTRL"
GLIBC=$(objdump -T "$ROOT/usr/sbin/urund" "$ROOT/usr/bin/urun" 2>/dev/null \
  | sed -n 's/.*GLIBC_\([0-9][0-9.]*\).*/\1/p' | sort -uV | tail -1)
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$CTRL/control" <<EOF
Package: urun
Version: $VERSION
Architecture: $ARCH
Maintainer: urun maintainers <urun@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= ${GLIBC:-2.31}), docker.io | docker-ce | moby-engine, passwd
Recommends: systemd, init-system-helpers
Section: admin
Priority: optional
Description: run Docker containers as yourself, without the docker group
 urun lets members of the urun group run containers through a small helper daemon,
 urund, which alone talks to the Docker socket. Every container runs as the caller's
 own uid:gid with all capabilities dropped, a read-only root, no-new-privileges,
 resource limits and no network; the administrator's policy is
 /etc/urun/policy.toml. No setuid or setgid bit is installed.
EOF
echo /etc/urun/policy.toml >"$CTRL/conffiles"
for s in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$s" "$CTRL/$s"
done

DEB=$OUT/urun_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
