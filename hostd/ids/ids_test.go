package ids

import (
	"strings"
	"testing"
)

func TestNewHasGuideForm(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range []Kind{Workspace, Bundle, Directory, Image} {
		for i := 0; i < 200; i++ {
			id := New(k)
			if len(id) != len(k.Prefix)+10 {
				t.Fatalf("%s: %q is not prefix + 10 characters", k.Name, id)
			}
			if err := Check(k, id); err != nil {
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
		k    Kind
		id   string
		want string
	}{
		{Workspace, "wsb-0123456789", "must start with"},
		{Workspace, "ws-abc", "8 to 63"},
		{Workspace, "ws-ABCDEFGHIJ", "outside"},
		{Directory, "d-12345a67bz", "outside [0-9a-f]"},
		{Bundle, "", "must start with"},
	} {
		err := Check(tc.k, tc.id)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%s, %q) = %v, want error containing %q", tc.k.Name, tc.id, err, tc.want)
		}
	}
	if err := Check(Directory, "d-92673056e8"); err != nil {
		t.Errorf("the guide's example directory id is refused: %v", err)
	}
}
