package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"deskhost/hostd/agent"
	"deskhost/internal/guestservice"

	"golang.org/x/sys/unix"
)

// readChunk reads up to n bytes of p from off (read-chunk) and the file's size.
func (g *guest) readChunk(p string, off int64, n int) ([]byte, int64, error) {
	r, rel, err := g.volumeRoot(p)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	f, err := r.Open(rel)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", p)
	}
	b := make([]byte, n)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return b[:k], fi.Size(), nil
}

// adopt makes the mounted root volume boot on its own (agent.OpAdopt). Only the agent as
// PID 1 adopts: as a service, "/" is the running system.
func (g *guest) adopt() (*agent.Adoption, error) {
	g.mu.Lock()
	mounted, dev, service := g.rootMounted, g.rootFSDev, g.service
	g.mu.Unlock()
	switch {
	case service:
		return nil, errors.New("adopt: this agent runs as a service of the image's init; the image is adopted already")
	case !mounted:
		return nil, errors.New("adopt: the root volume is not mounted")
	}
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("adopt: reading the agent's own binary: %w", err)
	}
	uuid, err := extUUID(dev)
	if err != nil {
		return nil, fmt.Errorf("adopt: the root filesystem's UUID: %w", err)
	}
	ad, err := adoptRoot(g.fsPrefix+agent.RootMount, exe)
	if err != nil {
		return nil, err
	}
	ad.RootUUID = uuid
	unix.Sync()
	g.log.Printf("adopted the root volume: kernel %s, root UUID %s", ad.KernelVersion, uuid)
	return ad, nil
}

// adoptRoot checks the system tree at dir (mounted at agent.RootMount) for systemd and a
// kernel with its initramfs, then installs the agent and its units. It changes nothing
// when the tree lacks either.
func adoptRoot(dir string, exe []byte) (*agent.Adoption, error) {
	r, err := os.OpenRoot(dir) // the image's symlinks resolve inside the image
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	defer r.Close()
	if !isFile(r, "lib/systemd/systemd") && !isFile(r, "usr/lib/systemd/systemd") {
		return nil, errors.New(agent.AdoptNoSystemd + " in the image (neither /lib/systemd/systemd nor /usr/lib/systemd/systemd): the agent runs as a systemd service")
	}
	ad, err := findKernel(r)
	if err != nil {
		return nil, err
	}
	if err := guestservice.Install(dir, exe); err != nil {
		return nil, fmt.Errorf("adopt: installing the agent: %w", err)
	}
	fl, _ := guestservice.Files()
	for _, f := range fl {
		ad.Installed = append(ad.Installed, f.Path)
	}
	ad.Installed = append(ad.Installed, guestservice.AgentPath)
	return ad, nil
}

// findKernel picks the newest version in /boot with both vmlinuz-<v> and initrd.img-<v>,
// else /vmlinuz and /initrd.img (or /boot/vmlinuz, /boot/initrd.img).
func findKernel(r *os.Root) (*agent.Adoption, error) {
	ents, _ := fs.ReadDir(r.FS(), "boot")
	var versions, lone []string
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok {
			continue
		}
		if isFile(r, "boot/initrd.img-"+v) {
			versions = append(versions, v)
		} else {
			lone = append(lone, v)
		}
	}
	if len(versions) > 0 {
		sort.Slice(versions, func(i, j int) bool { return versionLess(versions[i], versions[j]) })
		v := versions[len(versions)-1]
		return kernelFiles(r, v, "boot/vmlinuz-"+v, "boot/initrd.img-"+v)
	}
	for _, d := range []string{"", "boot/"} {
		k, i := d+"vmlinuz", d+"initrd.img"
		if isFile(r, k) && isFile(r, i) {
			t, err := r.Readlink(k)
			if err != nil {
				return nil, fmt.Errorf("%s: /%s is not a symlink to a versioned kernel, so its version is unknown", agent.AdoptNoKernel, k)
			}
			v, ok := strings.CutPrefix(path.Base(t), "vmlinuz-")
			if !ok {
				return nil, fmt.Errorf("%s: /%s links to %s, not a vmlinuz-<version>", agent.AdoptNoKernel, k, t)
			}
			return kernelFiles(r, v, k, i)
		}
	}
	if len(lone) > 0 {
		return nil, fmt.Errorf("%s: /boot has vmlinuz-%s but no initrd.img-%s (the image needs an initramfs with virtio drivers; update-initramfs -c -k %s)", agent.AdoptNoKernel, lone[0], lone[0], lone[0])
	}
	return nil, fmt.Errorf("%s: no /boot/vmlinuz-<version> with its /boot/initrd.img-<version> (install a kernel package, e.g. linux-image-amd64, and initramfs-tools)", agent.AdoptNoKernel)
}

func kernelFiles(r *os.Root, v, k, i string) (*agent.Adoption, error) {
	ks, err := r.Stat(k)
	if err != nil {
		return nil, err
	}
	is, err := r.Stat(i)
	if err != nil {
		return nil, err
	}
	if ks.Size() == 0 || is.Size() == 0 {
		return nil, fmt.Errorf("%s: /%s or /%s is empty", agent.AdoptNoKernel, k, i)
	}
	return &agent.Adoption{
		KernelVersion: v,
		Kernel:        agent.RootMount + "/" + k, Initrd: agent.RootMount + "/" + i,
		KernelBytes: ks.Size(), InitrdBytes: is.Size(),
	}, nil
}

func isFile(r *os.Root, p string) bool {
	fi, err := r.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// versionLess orders kernel versions by their numbers (6.1.0-9 < 6.1.0-28), then as text.
func versionLess(a, b string) bool {
	na, nb := versionNumbers(a), versionNumbers(b)
	for i := 0; i < len(na) && i < len(nb); i++ {
		if na[i] != nb[i] {
			return na[i] < nb[i]
		}
	}
	if len(na) != len(nb) {
		return len(na) < len(nb)
	}
	return a < b
}

func versionNumbers(v string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r < '0' || r > '9' }) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// extUUID reads an ext filesystem's UUID from its superblock (s_uuid, offset 0x68).
func extUUID(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [0x78]byte
	if _, err := f.ReadAt(b[:], 1024); err != nil {
		return "", err
	}
	if !isExtMagic(b[0x38:]) {
		return "", fmt.Errorf("%s has no ext superblock", dev)
	}
	return formatUUID(b[0x68:0x78]), nil
}
