package catalog

import (
	"strings"
	"testing"
	"time"

	"deskhost/internal/strictyaml"
)

func TestLinuxUserNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		os   OS
		ok   bool
	}{
		{strings.Repeat("a", 20), Linux, true},
		{strings.Repeat("a", 21), Linux, false},
		{"-alice", Linux, false},
		{"a.b_c-d#e f", Linux, true},
		{"a@b", Linux, false},
		{"a@b", Windows, true},
		{"-alice", Windows, true},
		{"jürgen", Linux, true},
		{"", Linux, false},
		{strings.Repeat("b", 64), Windows, false},
		{"al/ice", Linux, false},
	} {
		err := ValidateUserName(tc.name, tc.os)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateUserName(%q, %s) = %v, want ok=%v", tc.name, tc.os, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "user name") {
			t.Errorf("error %q does not say what is wrong", err)
		}
	}
}

func TestFindUserIgnoresCase(t *testing.T) {
	d := Directory{Users: []User{{UserName: "Alice"}}}
	if _, ok := d.FindUser("alice"); !ok {
		t.Error("alice not found")
	}
	if _, ok := d.FindUser("bob"); ok {
		t.Error("bob found")
	}
}

func TestSessionPolicy(t *testing.T) {
	if got := (SessionPolicy{}).ResumeTimeout(); got != 20*time.Minute {
		t.Errorf("default resume timeout %s, the guide's is 20 minutes", got)
	}
	if got := (SessionPolicy{ResumeTimeoutMinutes: 5}).ResumeTimeout(); got != 5*time.Minute {
		t.Errorf("5 minutes read as %s", got)
	}
	for _, m := range []int{-1, 24*60 + 1} {
		l := Login{Session: SessionPolicy{ResumeTimeoutMinutes: m}}
		if err := l.Validate(); err == nil || !strings.Contains(err.Error(), "resumeTimeoutMinutes") {
			t.Errorf("resumeTimeoutMinutes %d: %v, want an error naming the field", m, err)
		}
	}
	l := Login{Session: SessionPolicy{ResumeTimeoutMinutes: 24 * 60}}
	if err := l.Validate(); err != nil {
		t.Errorf("a day: %v", err)
	}
}

// TestSessionPolicyYAML: the policy is a field of the directory's definition, as
// `hostd directory put --file DIR.yaml` reads it (AWS's API has no field for it).
func TestSessionPolicyYAML(t *testing.T) {
	var d Directory
	if err := strictyaml.Decode([]byte("id: d-0000000001\nname: corp.example.com\nlogin:\n  session: {resumeTimeoutMinutes: 45}\n"), &d); err != nil {
		t.Fatal(err)
	}
	if got := d.Login.Session.ResumeTimeout(); got != 45*time.Minute {
		t.Errorf("resume timeout %s, want 45m", got)
	}
	if err := CheckDefinition(d); err != nil {
		t.Errorf("definition: %v", err)
	}
	d.Login.Session.ResumeTimeoutMinutes = -5
	if err := CheckDefinition(d); err == nil || !strings.Contains(err.Error(), "login.session.resumeTimeoutMinutes -5") {
		t.Errorf("negative timeout: %v", err)
	}
	if err := strictyaml.Decode([]byte("id: d-0000000001\nname: corp.example.com\nlogin:\n  session: {resumeTimeout: 45}\n"), &d); err == nil {
		t.Error("an unknown key of the session policy was accepted")
	}
}
