#!/usr/bin/env bash
# debian-image.sh: a container image made of real Debian packages.
#
#   bash scripts/debian-image.sh [OPTIONS] NAME[:TAG] PACKAGE... [-- CMD...]
#
# debootstraps a minbase Debian (bookworm unless SUITE says otherwise) from
# the mirror this machine's apt uses, installs PACKAGE... without recommends
# (services are not started: policy-rc.d says no), runs each --run command
# in the tree, trims documentation, manuals, translations, apt lists and
# caches, logs and device nodes, and packages the tree with
# cmd/shoal-mkimage --rootfs as bin/NAME.oci.tar (the last path element of
# NAME, without the tag), image name NAME:TAG, Cmd CMD. See
# docs/debian-images.md.
#
# Options (before NAME):
#   --stop-signal SIG   image StopSignal (nginx wants SIGQUIT)
#   --user U[:G]        image User (a name from the image's /etc/passwd works)
#   --workdir DIR       image WorkingDir
#   --env K=V           added to the image's environment; repeatable
#   --entrypoint PATH   image Entrypoint (default none: CMD is the whole command)
#   --run 'SHELL CMD'   run in the tree (chroot, /bin/sh -c) after the install; repeatable
#   --out FILE          output (default bin/NAME.oci.tar)
#
# Environment: SUITE (bookworm), MIRROR (default: the first Debian URI in
# /etc/apt, else http://deb.debian.org/debian), CACHE (bin/.debian-cache: the
# minbase tree, made once per suite and reused), SOURCE_DATE_EPOCH (passed to
# shoal-mkimage).
#
# Run it as root (debootstrap and chroot). It installs debootstrap with apt
# when missing. Everything it makes is under one temporary directory that is
# removed on exit, whatever happens; nothing is left mounted.
set -euo pipefail

die() { echo "debian-image.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
mkargs=() runs=() out=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--stop-signal | --user | --workdir | --env | --entrypoint)
		[[ $# -ge 2 ]] || die "$1 needs a value"
		mkargs+=("$1" "$2")
		shift 2
		;;
	--run)
		[[ $# -ge 2 ]] || die "--run needs a value"
		runs+=("$2")
		shift 2
		;;
	--out)
		[[ $# -ge 2 ]] || die "--out needs a value"
		out=$2
		shift 2
		;;
	-h | --help) usage ;;
	--) die "NAME[:TAG] and at least one PACKAGE come before --" ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
done
[[ $# -ge 2 ]] || usage
name=$1
shift
pkgs=() cmd=()
while [[ $# -gt 0 && $1 != -- ]]; do
	[[ $1 =~ ^[a-z0-9][a-z0-9+.-]+(=[^[:space:]]+)?$ ]] || die "bad package name '$1'"
	pkgs+=("$1")
	shift
done
[[ $# -gt 0 ]] && shift # the --
cmd=("$@")
[[ ${#pkgs[@]} -gt 0 ]] || die "no PACKAGE given"
[[ $(id -u) -eq 0 ]] || die "run me as root (debootstrap and chroot need it)"

base=${name##*/}
base=${base%%:*}
[[ $base =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "bad image name '$name'"
out=${out:-$repo/bin/$base.oci.tar}
suite=${SUITE:-bookworm}
cache=${CACHE:-$repo/bin/.debian-cache}
if [[ -z ${MIRROR:-} ]]; then
	MIRROR=$(grep -hoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
		/etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 | tr -d ' ' || true)
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

if ! command -v debootstrap >/dev/null; then
	echo "debian-image.sh: installing debootstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

work=$(mktemp -d /var/tmp/shoal-debian-image.XXXXXX)
cleanup() {
	# Nothing is mounted in the tree (apt and these packages install without
	# /proc), but make sure before removing it.
	if mount | grep -q " $work/"; then
		grep " $work/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shoal-mkimage first: a bad --stop-signal, --user or image name is refused
# now (packaging an empty tree), not after the install.
mkimage=$work/shoal-mkimage
(cd "$repo" && CGO_ENABLED=0 GOFLAGS= go build -o "$mkimage" ./cmd/shoal-mkimage)
mkdir "$work/empty"
"$mkimage" --rootfs "$work/empty" --name "$name" --out "$work/check.tar" "${mkargs[@]}" >/dev/null ||
	die "shoal-mkimage refused the options (above)"

# The minbase tree, made once per suite and mirror.
mkdir -p "$cache"
basetar=$cache/$suite-minbase.tar
if [[ ! -s $basetar ]]; then
	echo "debian-image.sh: debootstrap --variant=minbase $suite from $MIRROR (once; cached in $basetar)" >&2
	debootstrap --variant=minbase "$suite" "$work/base" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	tar -C "$work/base" --numeric-owner --xattrs -cf "$basetar.tmp" .
	mv "$basetar.tmp" "$basetar"
	rm -rf "$work/base"
fi

root=$work/root
mkdir "$root"
tar -C "$root" --numeric-owner --xattrs -xf "$basetar"
# No service is started by a package's postinst inside the tree.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo "debian-image.sh: installing ${pkgs[*]}" >&2
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root apt-get update -qq >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update failed"; }
in_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >>"$work/apt.log" 2>&1 ||
	{ tail -n 30 "$work/apt.log" >&2; die "apt-get install ${pkgs[*]} failed (log above)"; }
for r in "${runs[@]}"; do
	echo "debian-image.sh: run: $r" >&2
	in_root /bin/sh -ec "$r" || die "--run '$r' failed"
done

# Trim: what a container never reads.
in_root apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
	"$root"/var/lib/dpkg/*-old "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
	"$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/tmp/* "$root"/var/tmp/* \
	"$root"/dev/* "$root"/etc/hostname "$root"/etc/machine-id
find "$root/var/log" -type f -delete # keep the directories (nginx needs /var/log/nginx)
: >"$root/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

args=(--rootfs "$root" --name "$name" --out "$out" "${mkargs[@]}")
for c in "${cmd[@]}"; do args+=("--cmd=$c"); done
mkdir -p "$(dirname "$out")"
digest=$("$mkimage" "${args[@]}")
echo "debian-image.sh: $out: $name $digest ($(du -h "$out" | cut -f1)), command: ${cmd[*]:-(none)}" >&2
echo "$digest"
