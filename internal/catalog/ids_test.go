package catalog

import (
	"strings"
	"testing"
)

func TestNewHasGuideForm(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range []IDKind{KindWorkspace, KindBundle, KindDirectory, KindImage} {
		for i := 0; i < 200; i++ {
			id := NewID(k)
			if len(id) != len(k.Prefix)+10 {
				t.Fatalf("%s: %q is not prefix + 10 characters", k.Name, id)
			}
			if err := CheckID(k, id); err != nil {
				t.Fatalf("New made an id Check refuses: %v", err)
			}
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
	}
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		k    IDKind
		id   string
		want string
	}{
		{KindWorkspace, "wsb-0123456789", "must start with"},
		{KindWorkspace, "ws-abc", "8 to 63"},
		{KindWorkspace, "ws-ABCDEFGHIJ", "outside"},
		{KindDirectory, "d-12345a67bz", "outside [0-9a-f]"},
		{KindBundle, "", "must start with"},
	} {
		err := CheckID(tc.k, tc.id)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckID(%s, %q) = %v, want error containing %q", tc.k.Name, tc.id, err, tc.want)
		}
	}
	if err := CheckID(KindDirectory, "d-92673056e8"); err != nil {
		t.Errorf("the guide's example directory id is refused: %v", err)
	}
}
