#!/bin/sh
# own-init-disk.sh OUT CACHE: a Debian 12 cloud-like disk for the BYOL import test
# (hostd/controller TestImportOwnKernel): minbase + systemd, udev, Debian's kernel and
# initramfs-tools, as a partitioned raw disk (MBR, ext4 in partition 1), with a marker
# service of its own (own-init.service writes /var/lib/own-init-ran at boot). The
# mmdebstrap tarball is cached under CACHE/own-init keyed by this script; the .debs are
# shared with the graphical image's cache.
set -eu
out=$1 cache=$(realpath -m "$2")
pkgs=systemd-sysv,udev,linux-image-amd64,initramfs-tools,e2fsprogs
key=$(sha256sum "$0" | cut -c1-16)
dir=$cache/own-init debs=$cache/graphical/debs
mkdir -p "$dir" "$debs"
tar=$dir/debian-$key.tar
if [ ! -f "$tar" ]; then
	mmdebstrap --variant=minbase --mode=root --format=tar --include=$pkgs \
		--setup-hook='mkdir -p "$1"/var/cache/apt/archives/partial' \
		--setup-hook="sync-in $debs /var/cache/apt/archives" \
		--customize-hook="sync-out /var/cache/apt/archives $debs" \
		--skip=download/empty \
		--customize-hook='mkdir -p "$1/etc/systemd/system/multi-user.target.wants"' \
		--customize-hook='printf "[Unit]\nDescription=the imported image'"'"'s own service\n[Service]\nType=oneshot\nExecStart=/bin/sh -c \"uname -r > /var/lib/own-init-ran\"\n[Install]\nWantedBy=multi-user.target\n" > "$1/etc/systemd/system/own-init.service"' \
		--customize-hook='ln -sf /etc/systemd/system/own-init.service "$1/etc/systemd/system/multi-user.target.wants/own-init.service"' \
		--customize-hook='echo own-init > "$1/etc/hostname"; : > "$1/etc/machine-id"' \
		bookworm "$tar.part"
	mv "$tar.part" "$tar"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root"
tar -C "$tmp/root" -xf "$tar"
# 1 MiB of MBR and alignment, then the ext4 partition.
size=1536
mkfs.ext4 -q -F -L own-init-root -d "$tmp/root" "$tmp/part" $((size - 1))M
truncate -s ${size}M "$out.part"
# The MBR: partition 1, Linux (0x83), from sector 2048 for the filesystem's sectors
# (written by hand: sfdisk is not on every host).
le32() { printf "\\$(printf %03o $(($1 & 255)))\\$(printf %03o $(($1 >> 8 & 255)))\\$(printf %03o $(($1 >> 16 & 255)))\\$(printf %03o $(($1 >> 24 & 255)))"; }
{ printf '\000\000\000\000\203\000\000\000'; le32 2048; le32 $(((size - 1) * 2048)); } | dd of="$out.part" bs=1 seek=446 conv=notrunc status=none
printf '\125\252' | dd of="$out.part" bs=1 seek=510 conv=notrunc status=none
dd if="$tmp/part" of="$out.part" bs=1M seek=1 conv=notrunc,sparse status=none
mv "$out.part" "$out"
