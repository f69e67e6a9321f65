package desktop_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/imagebuild/desktop"
	"deskhost/imagebuild/initramfs"
)

// TestMeasureBoot compares boot times to the agent's ready line: PVH vmlinux vs bzImage,
// raw vs gzip initramfs. It takes minutes, so it only runs with DESKHOST_MEASURE_BOOT=N
// (N boots per variant):
//
//	DESKHOST_MEASURE_BOOT=3 go test ./imagebuild/desktop -run TestMeasureBoot -v
func TestMeasureBoot(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("DESKHOST_MEASURE_BOOT"))
	if n <= 0 {
		t.Skip("set DESKHOST_MEASURE_BOOT=N to measure boot times (N boots per variant)")
	}
	buildTools(t)
	type variant struct {
		boot string
		comp initramfs.Compression
	}
	variants := []variant{
		{desktop.BootPVH, initramfs.None}, {desktop.BootPVH, initramfs.Gzip},
		{desktop.BootBzImage, initramfs.None}, {desktop.BootBzImage, initramfs.Gzip},
	}
	dirs := map[variant]string{}
	mans := map[variant]*desktop.Manifest{}
	base := t.TempDir()
	for _, v := range variants {
		dir := filepath.Join(base, v.boot+"-"+string(v.comp))
		m, err := desktop.Build(context.Background(), desktop.Options{Out: dir, CacheDir: cacheDir(t), Boot: v.boot, Compression: v.comp})
		if err != nil {
			t.Fatal(err)
		}
		dirs[v], mans[v] = dir, m
		st, _ := os.Stat(filepath.Join(dir, m.Initrd))
		ks, _ := os.Stat(filepath.Join(dir, m.Kernel))
		t.Logf("%s/%s: kernel %.1f MiB, initrd %.2f MiB", v.boot, v.comp, float64(ks.Size())/(1<<20), float64(st.Size())/(1<<20))
	}
	times := map[variant][]time.Duration{}
	// Interleave the variants so that load changes on the machine hit all alike.
	for i := 0; i < n; i++ {
		for _, v := range variants {
			dir, m := dirs[v], mans[v]
			vm := bootVM(t, vmOpts{kernel: filepath.Join(dir, m.Kernel), initrd: filepath.Join(dir, m.Initrd),
				root: filepath.Join(dir, m.Root), cmdline: cmdline(m)})
			d, err := vm.waitLine(agent.ReadyLine, 120*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = vm.cmd.Process.Kill()
			vm.waitExit(10 * time.Second)
			times[v] = append(times[v], d)
		}
	}
	for _, v := range variants {
		ds := times[v]
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		s := ""
		for _, d := range ds {
			s += fmt.Sprintf(" %.2f", d.Seconds())
		}
		t.Logf("%-8s %-5s ready after (s, sorted):%s  median %.2f", v.boot, v.comp, s, ds[len(ds)/2].Seconds())
	}
}
