#!/bin/sh
# own-init-disk.sh CACHE: a Debian 12 cloud-like system for the BYOL import test
# (hostd/controller TestImportOwnKernel, which makes it a partitioned raw disk): minbase +
# systemd, udev, Debian's kernel and initramfs-tools, with a marker service of its own
# (own-init.service writes /var/lib/own-init-ran at boot). It prints the path of the
# mmdebstrap tarball, cached under CACHE/own-init keyed by this script; the .debs are
# shared with the graphical image's cache.
set -eu
cache=$(realpath -m "$1")
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
		bookworm "$tar.part" >&2
	mv "$tar.part" "$tar"
fi
echo "$tar"
