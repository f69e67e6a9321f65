package directory

import (
	"strings"
	"testing"

	"deskhost/hostd/bundle"
)

func TestLinuxUserNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		os   bundle.OS
		ok   bool
	}{
		{strings.Repeat("a", 20), bundle.Linux, true},
		{strings.Repeat("a", 21), bundle.Linux, false},
		{"-alice", bundle.Linux, false},
		{"a.b_c-d#e f", bundle.Linux, true},
		{"a@b", bundle.Linux, false},
		{"a@b", bundle.Windows, true},
		{"-alice", bundle.Windows, true},
		{"jürgen", bundle.Linux, true},
		{"", bundle.Linux, false},
		{strings.Repeat("b", 64), bundle.Windows, false},
		{"al/ice", bundle.Linux, false},
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
