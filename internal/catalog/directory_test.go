package catalog

import (
	"strings"
	"testing"
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
