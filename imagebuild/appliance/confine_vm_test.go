package appliance_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

// desktopDisk makes a read-only ext4 image holding the desktop image, for the virtual host
// to mount as a source of WorkSpaces (the appliance has no desktop image of its own).
func desktopDisk(t *testing.T) string {
	t.Helper()
	needTool(t, "mkfs.ext4")
	src := testenv.DesktopImage(t)
	disk := filepath.Join(t.TempDir(), "desktop.ext4")
	var size int64 = 32 << 20
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			size += fi.Size() * 5 / 4
		}
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, disk, strconv.FormatInt(size>>10, 10)+"k").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d %s: %v: %s", src, err, out)
	}
	return disk
}

// The catalog the test makes through hostd's CLI in the appliance, for one WorkSpace.
const (
	vmImage        = "wsi-desktop001"
	vmDirectory    = "d-0123456789"
	vmUser         = "alice"
	vmDirYAML      = "id: " + vmDirectory + "\nname: corp.example.com\nusers: [{userName: " + vmUser + ", email: alice@example.com}]\n"
	libvirtQemuUID = 64055 // imagebuild/appliance's /etc/passwd
	zeroclientUID  = 64060
)

var (
	wsIDRe   = regexp.MustCompile(`ws-[0-9a-z]{10}`)
	wsbIDRe  = regexp.MustCompile(`wsb-[0-9a-z]{10}`)
	cgLineRe = regexp.MustCompile(`(?m)^CGDIR (\S+) cpu.max=(.*) memory.max=(.*)$`)
)

// checkWorkspaceConfined has hostd on the virtual host launch a real WorkSpace and checks,
// from /proc and /sys/fs/cgroup there: its qemu runs as libvirt-qemu with no capabilities,
// in a cgroup of its own whose cpu.max allows its one vCPU and whose memory.max is qemu's
// overhead (its RAM is on huge pages, which the memory controller does not count); hostd
// holds its RAM; and zeroclient serves as its own unprivileged user. The guest itself
// boots under nested emulation and need not finish: qemu's confinement is in place from
// its start.
func checkWorkspaceConfined(t *testing.T, v *vm) {
	// The desktop image, on the second disk; the catalog, as an operator makes it with
	// hostd's CLI.
	out := v.shell("mkdir -p /mnt/desktop && mount -o ro /dev/vdb /mnt/desktop && ls /mnt/desktop",
		"hostd images register --dir /mnt/desktop --id "+vmImage,
		"hostd bundles create --name Value --description 1vCPU --image "+vmImage+" --compute VALUE --user-gib 10",
		fmt.Sprintf("printf '%%b' '%s' > /tmp/corp.yaml && hostd directory put --file /tmp/corp.yaml && hostd directories register %s && echo CATALOG-OK", vmDirYAML, vmDirectory))
	bundle := wsbIDRe.FindString(out[2])
	if !strings.Contains(out[0], "vmlinux") || !strings.Contains(out[1], vmImage) || bundle == "" || !strings.Contains(out[3], "CATALOG-OK") {
		t.Fatalf("desktop image or catalog in the appliance:\n%s", strings.Join(out, "\n"))
	}
	out = v.shell(fmt.Sprintf("hostd create --directory %s --user %s --bundle %s", vmDirectory, vmUser, bundle))
	id := wsIDRe.FindString(out[0])
	if id == "" {
		t.Fatalf("hostd create in the appliance:\n%s", out[0])
	}
	// Wait for its qemu, resumed (hostd holds its RAM by then), then read it all.
	// hostd holds a new guest's RAM before it lets it run: a memfd among hostd's files
	// means qemu is up and about to run.
	// Up to 2 × 80 × 2 s: under nested emulation, on a loaded machine, hostd's create can
	// take minutes, and the console helper waits at most 3 minutes for one command.
	wait := fmt.Sprintf(`i=0; while [ $i -lt 80 ]; do [ -s /run/libvirt/qemu/%[1]s.pid ] && [ "$(ls -l /proc/$(pidof hostd)/fd | grep -c memfd:memory-backend)" -ge 1 ] && break; sleep 2; i=$((i+1)); done`, id)
	v.shell(wait)
	out = v.shell(fmt.Sprintf(wait+`; echo "STATE $(virsh -c qemu:///system domstate %[1]s)"; hostd describe %[1]s | head -8; grep -v 'admin api call' /perm/log/hostd.log | tail -n 15`, id),
		fmt.Sprintf(`pid=$(cat /run/libvirt/qemu/%s.pid); echo "PID $pid"; grep -E '^(Uid|Gid|CapEff|CapPrm|NoNewPrivs):' /proc/$pid/status; cg=$(sed -n 's/^0:://p' /proc/$pid/cgroup); echo "CGROUP $cg"; d=/sys/fs/cgroup$cg; while [ "$d" != /sys/fs/cgroup ]; do echo "CGDIR $d cpu.max=$(cat $d/cpu.max 2>/dev/null) memory.max=$(cat $d/memory.max 2>/dev/null)"; d=${d%%/*}; done`, id),
		`echo "HELD $(ls -l /proc/$(pidof hostd)/fd | grep -c memfd:memory-backend)"; grep -E 'HugePages_(Total|Free)' /proc/meminfo`,
		`grep -E '^(Uid|Gid|CapEff|NoNewPrivs):' /proc/$(pidof zeroclient)/status; ls -ln /run/deskhost/hostd.sock; echo "BROKER-DENIED $(cat /perm/log/hostd*.log | grep 'principal=broker' | grep -c 'result=AccessDenied')"`,
		fmt.Sprintf("ls -ln /perm/hostd/run/%[1]s /perm/hostd/volumes/%[1]s-root.qcow2 /mnt/desktop/vmlinux", id),
	)
	t.Logf("WorkSpace %s in the appliance:\n%s", id, strings.Join(out, "\n"))
	if !strings.Contains(out[0], "STATE running") {
		t.Fatalf("the WorkSpace's domain never ran:\n%s", out[0])
	}
	q := out[1]
	u := strconv.Itoa(libvirtQemuUID)
	for _, want := range []string{"Uid:\t" + u + "\t" + u + "\t" + u + "\t" + u, "Gid:\t" + u + "\t" + u + "\t" + u + "\t" + u,
		"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000"} {
		if !strings.Contains(q, want) {
			t.Errorf("qemu's /proc status lacks %q:\n%s", want, q)
		}
	}
	memMax, cpus := int64(-1), -1.0
	for _, m := range cgLineRe.FindAllStringSubmatch(q, -1) {
		if v, err := strconv.ParseInt(strings.TrimSpace(m[3]), 10, 64); err == nil && (memMax < 0 || v < memMax) {
			memMax = v
		}
		if f := strings.Fields(m[2]); len(f) == 2 && f[0] != "max" {
			quota, _ := strconv.ParseFloat(f[0], 64)
			period, _ := strconv.ParseFloat(f[1], 64)
			if cpus < 0 || quota/period < cpus {
				cpus = quota / period
			}
		}
	}
	// VALUE is 1 vCPU and 256 MiB on huge pages: memory.max is qemu's overhead (512 MiB)
	// and the TCG translation cache (64 MiB) — hostd/virt.Spec.MemoryLimitMiB.
	if cpus != 1 || memMax != 576<<20 {
		t.Errorf("qemu's cgroup limits: cpu.max allows %.2f CPUs (want 1), memory.max %d (want %d)\n%s", cpus, memMax, 576<<20, q)
	}
	if n := held(out[2]); n < 1 {
		t.Errorf("hostd holds no guest RAM:\n%s", out[2])
	}
	z := strconv.Itoa(zeroclientUID)
	for _, want := range []string{"Uid:\t" + z + "\t" + z + "\t" + z + "\t" + z, "CapEff:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(out[3], want) {
			t.Errorf("zeroclient's /proc status lacks %q:\n%s", want, out[3])
		}
	}
	if !regexp.MustCompile(`(?m)^srw-rw----\s+\d+\s+0\s+` + z + `\s`).MatchString(out[3]) { // the API socket: root, the broker group, 0660
		t.Errorf("hostd's socket is not the broker group's:\n%s", out[3])
	}
	// zeroclient, unprivileged, makes only calls the broker group may make (it reads the
	// catalog, and reports connections).
	if !regexp.MustCompile(`(?m)^BROKER-DENIED 0\s*$`).MatchString(out[3]) {
		t.Errorf("hostd refused some of zeroclient's calls:\n%s", out[3])
	}

	// Terminated: its RAM scrubbed and let go, its huge pages back in the pool.
	out = v.shell(fmt.Sprintf("hostd terminate %[1]s && hostd wait %[1]s --state TERMINATED", id),
		`echo "HELD $(ls -l /proc/$(pidof hostd)/fd | grep -c memfd:memory-backend)"; grep -E 'HugePages_(Total|Free)' /proc/meminfo; grep -h 'guest memory scrubbed' /perm/log/hostd*.log | tail -1`)
	t.Logf("after terminate:\n%s\n%s", out[0], out[1])
	if !strings.Contains(out[0], "TERMINATED") {
		t.Errorf("terminate in the appliance:\n%s", out[0])
	}
	total := regexp.MustCompile(`HugePages_Total:\s+(\d+)`).FindStringSubmatch(out[1])
	free := regexp.MustCompile(`HugePages_Free:\s+(\d+)`).FindStringSubmatch(out[1])
	if held(out[1]) != 0 || total == nil || free == nil || total[1] != free[1] {
		t.Errorf("after terminate hostd still holds guest RAM, or huge pages are in use:\n%s", out[1])
	}
}

// heldRe finds the count of guest-RAM memfds hostd holds in a shell's output. The output
// starts with the console's echo of the typed command, which wraps over several lines, so
// values are found by their label, never by their position.
var heldRe = regexp.MustCompile(`(?m)^HELD (\d+)\s*$`)

// held is that count, or -1 if the output has none.
func held(out string) int {
	m := heldRe.FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
