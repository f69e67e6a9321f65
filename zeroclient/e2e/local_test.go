package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/hostdtest"
	"deskhost/hostd/virt"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/internal/testsvc"
	"deskhost/zeroclient/server"
)

// TestLocalUsersFromTheStore: a local directory's users are hostd's catalog records, and
// zeroclient's operator commands follow them: a user added with hostd's CLI can be invited
// (and activates, and logs in) at once, with no restart of anything; a user removed can no
// longer be invited. No WorkSpace is booted: the real hostd and zeroclient binaries only.
func TestLocalUsersFromTheStore(t *testing.T) {
	testenv.Root(t)
	sock := testenv.LibvirtSocket(t)
	dir, err := os.MkdirTemp("", "zcl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	hostdSock := filepath.Join(dir, "api", "hostd.sock") // not directly in the data dir (hostconfig)
	pool := "zcl-" + hostdtest.RandHex(3)
	defer func() { // hostd made its storage pool: remove it
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := virt.Dial(ctx, sock); err == nil {
			hostdtest.RemoveLeftovers(conn, dir, pool)
			conn.Close()
		}
	}()
	admin := filepath.Join(dir, "zc", "admin.sock")
	brokerPort, gwPort := testsvc.FreePort(t, "tcp"), testsvc.FreePort(t, "tcp")
	cfg := filepath.Join(dir, "deskhost.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`hostd:
  store: %[1]s/store.db
  dataDir: %[1]s
  libvirt: {socket: %[2]s, pool: %[8]s, domainType: qemu}
  network: {managementBridge: zclm%[3]s, primaryBridge: zclp%[3]s}
  api: {socket: %[4]s}
  memory: {requireInitOnFree: false} # this development machine runs without init_on_free=1
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
zeroclient:
  broker: {listen: "127.0.0.1:%[5]d", hostname: localhost}
  gateway: {listen: "127.0.0.1:%[6]d"}
  echo: {listen: []}
  tls: {selfSignedDir: %[1]s/zc/tls}
  events: {log: %[1]s/zc/access.jsonl, auditLog: %[1]s/zc/audit.jsonl}
  credentialStore: %[1]s/zc/credentials.db
  hostdSocket: %[4]s
  adminSocket: %[7]s
  authFailureFloor: 100ms
`, dir, sock, hostdtest.RandHex(3), hostdSock, brokerPort, gwPort, admin, pool)), 0o600)
	run := func(bin string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, bin), args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return stdout.String(), fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), nil
	}
	hostdCLI := func(args ...string) (string, error) { return run("hostd", append(args, "--socket", hostdSock)...) }

	h := hostdtest.Start(t, filepath.Join(binDir, "hostd"), "serve", "--config", cfg)
	defer h.Stop()
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60 s\nhostd:\n%s", what, h.Tail(3000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait("hostd", func() bool { _, err := hostdCLI("directories"); return err == nil })
	def := filepath.Join(dir, "local.yaml")
	os.WriteFile(def, []byte("id: d-00000000e1\nname: local.example.com\nlogin: {type: local}\nusers: [{userName: amy, email: amy@example.com}]\n"), 0o600)
	for _, c := range [][]string{{"directory", "put", "--file", def}, {"directories", "register", "d-00000000e1"}} {
		if _, err := hostdCLI(c...); err != nil {
			t.Fatal(err)
		}
	}
	zc := hostdtest.Start(t, filepath.Join(binDir, "zeroclient"), "serve", "--config", cfg)
	defer zc.Stop()
	wait("zeroclient", func() bool {
		c, err := net.Dial("unix", admin)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	invite := func(user string) (server.InviteResponse, error) {
		out, err := run("zeroclient", "invite", "--socket", admin, "--directory", "d-00000000e1", "--user", user)
		var r server.InviteResponse
		if err == nil {
			err = json.Unmarshal([]byte(out), &r)
		}
		return r, err
	}
	if _, err := invite("amy"); err != nil {
		t.Fatalf("inviting a user of the catalog: %v\nzeroclient:\n%s", err, zc.Tail(3000))
	}
	if _, err := invite("ben"); err == nil {
		t.Fatal("invited a user the directory does not have")
	}
	// Added with hostd's CLI: zeroclient follows the catalog, no restart.
	if _, err := hostdCLI("users", "add", "--directory", "d-00000000e1", "--user", "ben", "--email", "ben@example.com"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var inv server.InviteResponse
	wait("ben invitable", func() bool { inv, err = invite("ben"); return err == nil })
	t.Logf("user added → invitable in %v", time.Since(start).Round(time.Millisecond))
	ca := filepath.Join(dir, "zc", "tls", "ca.pem")
	broker := fmt.Sprintf("https://127.0.0.1:%d", brokerPort)
	if _, err := run("zeroclient", "activate", "--broker", broker, "--ca", ca, "--code", inv.ActivationCode, "--password", "Sup3r-Secret!"); err != nil {
		t.Fatalf("activation: %v\nzeroclient:\n%s", err, zc.Tail(3000))
	}
	// Removed: no longer invitable.
	if _, err := hostdCLI("users", "remove", "--directory", "d-00000000e1", "ben"); err != nil {
		t.Fatal(err)
	}
	wait("ben gone", func() bool { _, err := invite("ben"); return err != nil })
	if t.Failed() {
		t.Logf("zeroclient:\n%s", zc.Tail(3000))
	}
}
