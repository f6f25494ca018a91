#!/bin/sh
# etcd.sh installs Debian's etcd-server and etcd-client when etcd or etcdctl
# is missing, for the loopback benchmark (internal/bench/loopback). It does
# nothing when both are on PATH. It needs root (or sudo) and apt-get; it
# exits non-zero, saying why, when it cannot install them.
#
# The packages' own service is not started: policy-rc.d is overridden for
# the install only, so nothing listens on etcd's default ports afterwards.
set -eu

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "etcd.sh: etcd/etcdctl not on PATH and no apt-get to install them" >&2
	exit 1
fi
SUDO=
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO="sudo -n"
	else
		echo "etcd.sh: etcd/etcdctl not on PATH; installing them needs root" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
install() {
	$SUDO apt-get install -y -q --no-install-recommends etcd-server etcd-client
}
# Keep the package's service from starting during the install (exit 101:
# "action forbidden" to invoke-rc.d); restore what was there afterwards.
PRC=/usr/sbin/policy-rc.d
saved=
if [ -e "$PRC" ]; then
	saved=$(mktemp)
	$SUDO cp -p "$PRC" "$saved"
fi
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$PRC" >/dev/null
$SUDO chmod 755 "$PRC"
restore() {
	if [ -n "$saved" ]; then $SUDO mv "$saved" "$PRC"; else $SUDO rm -f "$PRC"; fi
}
trap restore EXIT

if ! install; then
	$SUDO apt-get update -q
	install
fi
command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 || {
	echo "etcd.sh: installed etcd-server and etcd-client, but etcd or etcdctl is still not on PATH" >&2
	exit 1
}
