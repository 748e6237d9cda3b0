#!/usr/bin/env bash
# Prepare everything tests/vm/run-in-vm.sh needs, from Debian packages only:
#   - qemu-system-x86 and busybox-static (apt-get install, only if missing),
#   - Debian's stock kernel (the package linux-image-amd64 depends on), fetched with
#     `apt-get download` + `dpkg -x`: the uncompressed vmlinux (for PVH boot) and its
#     modules (depmod'ed), cached under tests/vm/cache/<kernel version>/,
#   - a busybox initramfs with tests/vm/init and the virtio/9p/overlay/fuse modules.
# Idempotent and non-interactive; a rerun with a warm cache takes well under a second.
#
# Environment:
#   CGSIGHT_VM_KERNEL   pin a kernel ABI name (e.g. 6.1.0-56-amd64) instead of asking apt
#                       which one linux-image-amd64 points to.
#   CGSIGHT_VM_KEEP_OLD=1  keep caches of other kernel versions (default: pruned).
#   CGSIGHT_VM_CACHE    cache directory (default tests/vm/cache; a path outside the work
#                       tree survives fresh clones, e.g. /var/cache/cgsight-vm).
# Options: -v (say what it does), --check (exit 0 iff the cache is ready; no apt, no work).
# Quiet on success unless -v.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CGSIGHT_VM_CACHE:-$HERE/cache}
VERBOSE=0
CHECK=0
for a in "$@"; do
	case "$a" in
	-v) VERBOSE=1 ;;
	--check) CHECK=1 ;;
	*) echo "usage: $0 [-v] [--check]" >&2; exit 2 ;;
	esac
done

say() { if [ "$VERBOSE" = 1 ]; then echo "vm-setup: $*" >&2; fi; }
warn() { echo "vm-setup: $*" >&2; }
die() {
	echo "vm-setup: error: $*" >&2
	exit 1
}

# Modules the initramfs loads; their dependencies are added from modules.dep.
# Missing ones are fine if they are built in (modules.builtin).
INITRAMFS_MODULES="virtio_pci virtio_console virtio_rng virtio_blk 9pnet_virtio 9p overlay fuse crc32c_generic ext4"
# Bump when the way the initramfs is built changes.
INITRAMFS_RECIPE=1

initramfs_key() {
	(
		cat "$HERE/init" "$1"
		echo "$INITRAMFS_MODULES $INITRAMFS_RECIPE"
	) | sha256sum | cut -c1-16
}

# --check: is the cache that run-in-vm.sh will use complete and current? (No apt.)
if [ "$CHECK" = 1 ]; then
	[ -r "$CACHE/current" ] || exit 1
	# shellcheck disable=SC1091
	. "$CACHE/current"
	[ -e "$VMLINUX" ] && [ -e "$INITRD" ] && [ -x "$BUSYBOX" ] &&
		[ "$INITRD" = "$CACHE/$KVER/initramfs-$(initramfs_key "$BUSYBOX").cpio" ]
	exit
fi

# One setup at a time (v1 and v2 lanes may start together).
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
		die "need root for: $*"
	fi
}

APT_UPDATED=0
apt_update_once() {
	[ "$APT_UPDATED" = 1 ] && return 0
	say "apt-get update"
	as_root apt-get update -qq >/dev/null || warn "apt-get update failed"
	APT_UPDATED=1
}

# 1. Host tools.
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need_pkgs+=(busybox-static)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
	say "installing ${need_pkgs[*]}"
	apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
	if ! apt_install 2>/dev/null; then
		apt_update_once
		apt_install || die "apt-get install ${need_pkgs[*]} failed"
	fi
fi
BUSYBOX=$(dpkg-query -L busybox-static | grep -E '/bin/busybox$' | head -n1)
[ -x "$BUSYBOX" ] || die "busybox-static installed but its binary was not found"

# 2. Which kernel.
newest_cached() {
	local d best=
	for d in "$CACHE"/*/.complete; do
		[ -e "$d" ] || continue
		best=$(basename "$(dirname "$d")")
	done
	[ -n "$best" ] && echo "$best"
}
apt_kernel() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1
}
KVER=${CGSIGHT_VM_KERNEL:-}
if [ -z "$KVER" ]; then
	KVER=$(apt_kernel)
	if [ -z "$KVER" ]; then
		apt_update_once
		KVER=$(apt_kernel)
	fi
	if [ -z "$KVER" ]; then
		KVER=$(newest_cached) || die "apt knows no linux-image-amd64 and nothing is cached"
		warn "apt knows no linux-image-amd64; using cached kernel $KVER"
	fi
fi
KDIR=$CACHE/$KVER

# Payload of a bzImage (boot protocol >= 2.08), decompressed: that is vmlinux, an ELF
# with the Xen PVH entry note. Offsets from Documentation/x86/boot.rst:
# setup_sects at 0x1f1, payload_offset at 0x248, payload_length at 0x24c.
extract_vmlinux() {
	local bz=$1 out=$2 setup_sects off len magic
	[ "$(dd if="$bz" bs=1 skip=$((0x202)) count=4 status=none)" = HdrS ] || die "$bz is not a bzImage"
	setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
	[ "$setup_sects" = 0 ] && setup_sects=4
	off=$(((setup_sects + 1) * 512 + $(od -An -tu4 -j $((0x248)) -N4 "$bz" | tr -d ' ')))
	len=$(od -An -tu4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
	magic=$(od -An -tx1 -j "$off" -N6 "$bz" | tr -d ' \n')
	# The payload ends with a 4-byte decompressed size; decompressors that stop at the end
	# of their stream ignore it, the others only warn.
	payload() { dd if="$bz" bs=64K iflag=skip_bytes,count_bytes skip="$off" count="$len" status=none; }
	case "$magic" in
	fd377a585a00) payload | xz -dc --single-stream >"$out" ;;
	1f8b*) payload | gzip -dc >"$out" 2>/dev/null || true ;;
	28b52ffd*) payload | zstd -dc -q >"$out" 2>/dev/null || true ;;
	5d00*) payload | xz -dc --format=lzma >"$out" 2>/dev/null || true ;;
	7f454c46*) payload >"$out" ;;
	*) die "unknown kernel payload compression (magic $magic)" ;;
	esac
	[ "$(od -An -tx1 -N4 "$out" | tr -d ' \n')" = 7f454c46 ] || die "extracted vmlinux is not an ELF file"
}

# 3. Download + extract the kernel package (once per version).
if [ ! -e "$KDIR/.complete" ]; then
	say "fetching linux-image-$KVER"
	rm -rf "$KDIR" "$CACHE/.dl-$KVER"
	dl=$CACHE/.dl-$KVER
	mkdir -p "$dl"
	fetch() { (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "linux-image-$KVER" >/dev/null 2>&1); }
	if ! fetch; then
		# Stale package lists: refresh, and follow linux-image-amd64 to a newer ABI if it moved.
		apt_update_once
		if [ -z "${CGSIGHT_VM_KERNEL:-}" ] && new=$(apt_kernel) && [ -n "$new" ] && [ "$new" != "$KVER" ]; then
			rm -rf "$dl"
			KVER=$new
			KDIR=$CACHE/$KVER
			dl=$CACHE/.dl-$KVER
			mkdir -p "$dl"
		fi
		if [ ! -e "$KDIR/.complete" ]; then
			fetch || die "apt-get download linux-image-$KVER failed"
		fi
	fi
	if [ ! -e "$KDIR/.complete" ]; then
		deb=$(ls "$dl"/linux-image-"$KVER"_*.deb)
		dpkg -x "$deb" "$dl/x"
		mkdir -p "$dl/k"
		extract_vmlinux "$dl/x/boot/vmlinuz-$KVER" "$dl/k/vmlinux"
		cp "$dl/x/boot/config-$KVER" "$dl/k/config"
		# modules.dep is made by the package's postinst; make it here.
		depmod -b "$dl/x" "$KVER"
		mkdir -p "$dl/k/modules"
		mv "$dl/x/lib/modules/$KVER" "$dl/k/modules/$KVER"
		dpkg-deb -f "$deb" Version >"$dl/k/package-version"
		mv "$dl/k" "$KDIR"
		rm -rf "$dl"
		touch "$KDIR/.complete"
	fi
	rm -rf "$dl"
fi

# 4. Initramfs, keyed by the init script, busybox and the module list.
MODDIR=$KDIR/modules/$KVER
key=$(initramfs_key "$BUSYBOX")
INITRD=$KDIR/initramfs-$key.cpio
if [ ! -e "$INITRD" ]; then
	say "building initramfs $key"
	st=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
	trap 'rm -rf "$st"' EXIT
	mkdir -p "$st"/{bin,dev,proc,sys,newroot,ovl,lib/modules/"$KVER"}
	cp "$BUSYBOX" "$st/bin/busybox"
	ln -s busybox "$st/bin/sh"
	ln -s busybox "$st/bin/poweroff" # rdinit of the KVM probe in run-in-vm.sh
	cp "$HERE/init" "$st/init"
	chmod 755 "$st/init"
	mknod -m 600 "$st/dev/console" c 5 1 2>/dev/null || true
	# Dependency order: a module after everything it needs (depth first over modules.dep).
	declare -A deps=() seen=()
	while IFS= read -r line; do
		mod=${line%%:*}
		deps[$mod]=${line#*:}
	done <"$MODDIR/modules.dep"
	declare -A byname=()
	for mod in "${!deps[@]}"; do
		n=${mod##*/}
		n=${n%%.ko*}
		byname[$n]=$mod
		byname[${n//-/_}]=$mod
	done
	order=()
	visit() {
		local m=$1 d
		[ -n "${seen[$m]:-}" ] && return 0
		seen[$m]=1
		for d in ${deps[$m]}; do visit "$d"; done
		order+=("$m")
	}
	for n in $INITRAMFS_MODULES; do
		if [ -n "${byname[$n]:-}" ]; then
			visit "${byname[$n]}"
		elif grep -qE "/${n}\.ko" "$MODDIR/modules.builtin"; then
			say "$n is built in"
		else
			die "module $n is neither in modules.dep nor built in"
		fi
	done
	: >"$st/modules.load"
	for m in "${order[@]}"; do
		mkdir -p "$st/lib/modules/$KVER/$(dirname "$m")"
		case "$m" in
		*.ko) cp "$MODDIR/$m" "$st/lib/modules/$KVER/$m" ;;
		*.ko.xz) xz -dc "$MODDIR/$m" >"$st/lib/modules/$KVER/${m%.xz}" ;;
		*.ko.zst) zstd -dcq "$MODDIR/$m" >"$st/lib/modules/$KVER/${m%.zst}" ;;
		*.ko.gz) gzip -dc "$MODDIR/$m" >"$st/lib/modules/$KVER/${m%.gz}" ;;
		*) die "unexpected module file $m" ;;
		esac
		m=${m%.xz}
		m=${m%.zst}
		echo "${m%.gz}" >>"$st/modules.load"
	done
	# Uncompressed: the guest unpacks it faster than it could decompress it under TCG.
	(cd "$st" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null) >"$INITRD.tmp"
	mv "$INITRD.tmp" "$INITRD"
	rm -f "$KDIR"/initramfs-*.cpio.old
	for f in "$KDIR"/initramfs-*.cpio; do
		[ "$f" = "$INITRD" ] || rm -f "$f"
	done
	rm -rf "$st"
	trap - EXIT
fi

# 5. Pointer used by run-in-vm.sh, and pruning of other kernels.
printf 'KVER=%s\nVMLINUX=%s\nINITRD=%s\nMODULES=%s\nBUSYBOX=%s\n' \
	"$KVER" "$KDIR/vmlinux" "$INITRD" "$KDIR/modules" "$BUSYBOX" >"$CACHE/current.tmp"
mv "$CACHE/current.tmp" "$CACHE/current"
if [ "${CGSIGHT_VM_KEEP_OLD:-0}" != 1 ]; then
	for d in "$CACHE"/*/; do
		d=${d%/}
		[ "$(basename "$d")" = "$KVER" ] || rm -rf "$d"
	done
fi
say "ready: kernel $KVER ($(cat "$KDIR/package-version")), initramfs $(basename "$INITRD")"
