#!/usr/bin/env bash
# Installs everything shoal's build, demo and tests need on a fresh Debian
# machine that has only Go, gcc and git. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: iproute2 (ip netns for the e2e hosts); libseccomp-dev
# (the embedded runtime is built with the seccomp tag and links
# libseccomp: shoal dynamically, bin/shoal-shim statically with
# libseccomp.a and glibc's libc.a from libc6-dev, which gcc brings); docker-registry (the real registry server the image-pull
# e2e tests push to); etcd-server, etcd-client and runc (the references in
# the benchmarks); busybox-static (/bin/busybox: the rootfs of
# `make bench-runtime`); iperf3 (overlay/ throughput benchmark: VXLAN vs
# underlay); prometheus (promtool checks the /metrics text in unit tests,
# the e2e scrapes a cluster with the real server); chromium and
# chromium-driver (the dashboard's e2e tests drive headless Chromium through
# chromedriver's WebDriver protocol from Go); strace (a runtime test checks
# the order of the supervisor's fsyncs and renames).
pkgs=(iproute2 iputils-ping curl strace libc6-dev libseccomp-dev docker-registry runc etcd-server etcd-client busybox-static iperf3 prometheus chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The Debian etcd package may start a service on install; shoal's tests
	# start their own members on loopback only.
	pkill -x etcd 2>/dev/null || true
	pkill -x docker-registry 2>/dev/null || true
fi

go mod download
(cd bench && go mod download)
