package guestservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstall(t *testing.T) {
	root := t.TempDir()
	if err := Install(root, []byte("agent")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, AgentPath))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("agent: %v %v", fi, err)
	}
	agentUnit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/deskhost-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(agentUnit), "ExecStart="+AgentPath+" -service\n") {
		t.Errorf("deskhost-agent.service does not run %s -service:\n%s", AgentPath, agentUnit)
	}
	user, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/deskhost-user.service"))
	if !strings.Contains(string(user), "Before=display-manager.service lightdm.service deskhost-agent.service") {
		t.Errorf("deskhost-user.service does not order itself before LightDM and the agent:\n%s", user)
	}
	for _, u := range Units {
		l, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants", u))
		if err != nil || l != "/etc/systemd/system/"+u {
			t.Errorf("%s not enabled: %q %v", u, l, err)
		}
	}
	fl, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fl {
		if strings.HasPrefix(f.Path, "/usr/lib/deskhost/") && !strings.HasPrefix(string(f.Data), "#!/bin/sh\n") {
			t.Errorf("%s: not a /bin/sh script", f.Path)
		}
	}
	// Again over itself (an image adopted twice).
	if err := Install(root, []byte("agent2")); err != nil {
		t.Fatal(err)
	}
}
