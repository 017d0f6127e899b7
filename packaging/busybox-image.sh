#!/bin/sh
# Builds a tiny local image from Debian's busybox-static, for demos and tests on hosts
# with no registry: a bare rootfs with busybox's applets in /bin, a 1777 /tmp and
# minimal /etc/passwd and /etc/group, imported with `docker import`.
# Usage: busybox-image.sh IMAGE   (does nothing if IMAGE already exists)
set -eu
IMAGE=${1:?usage: busybox-image.sh IMAGE}
docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
if [ ! -x /bin/busybox ] || ! /bin/busybox --list >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null
fi
umask 022
root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/home"
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do
  [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
echo "built image $IMAGE from busybox-static" >&2
