package privdrop

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

// TestMain doubles as the process that drops root: with PRIVDROP_CHILD set it binds a
// port below 1024 and opens a root-only file as root, drops to nobody, and reports what it
// still can and cannot do.
func TestMain(m *testing.M) {
	if f := os.Getenv("PRIVDROP_CHILD"); f != "" {
		child(f)
		return
	}
	os.Exit(m.Run())
}

func child(rootFile string) {
	if err := NoNewPrivs(); err != nil { // re-executes this child once
		fmt.Println(err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		ln.Close()
		ln, err = net.Listen("tcp", "127.0.0.1:1") // a privileged port, bound while root
	}
	if err != nil {
		fmt.Println("bind:", err)
		os.Exit(1)
	}
	f, err := os.OpenFile(rootFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	id, err := To("nobody")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	_, werr := f.WriteString("written after the drop\n")         // an fd opened before: still usable
	_, oerr := os.OpenFile(rootFile, os.O_WRONLY|os.O_APPEND, 0) // a new open: refused
	_, lerr := net.Listen("tcp", "127.0.0.1:2")                  // a new privileged port: refused
	var status []byte
	tasks, _ := os.ReadDir("/proc/self/task") // every thread, not only the main one
	for _, t := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + t.Name() + "/status")
		status = append(status, b...)
	}
	fmt.Printf("id=%+v write=%v open=%v listen=%v accept-on=%s threads=%d\n%s", id, werr, oerr != nil, lerr != nil, ln.Addr(), len(tasks), status)
}

func TestDropToNobody(t *testing.T) {
	testenv.Root(t)
	f, err := os.CreateTemp("", "privdrop")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PRIVDROP_CHILD="+f.Name())
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, s)
	}
	for _, want := range []string{"write=<nil>", "open=true", "listen=true", "Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534",
		"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(s, want) {
			t.Errorf("after the drop: no %q in\n%s", want, s)
		}
	}
	// Every thread: none kept root, a capability, or the right to gain privileges.
	for _, bad := range []string{"Uid:\t0", "NoNewPrivs:\t0", "CapEff:\t000001"} {
		if strings.Contains(s, bad) {
			t.Errorf("a thread has %q after the drop:\n%s", bad, s)
		}
	}
	if b, _ := os.ReadFile(f.Name()); !strings.Contains(string(b), "written after the drop") {
		t.Error("the file opened before the drop was not written")
	}
	if _, err := To("root"); err == nil {
		t.Error("dropping to root accepted")
	}
}
