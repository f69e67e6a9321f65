package workspace

import (
	"strings"
	"testing"
	"time"

	"deskhost/internal/catalog"
)

// TestMigratedVolumes: the guide's sizing (guide catalog §7.4).
func TestMigratedVolumes(t *testing.T) {
	std := catalog.Bundle{RootGiB: 80, UserGiB: 50}
	power := catalog.Bundle{RootGiB: 175, UserGiB: 100}
	for _, c := range []struct {
		name             string
		root, user, srcB int
		to               catalog.Bundle
		wantR, wantU     int
	}{
		{"default user grows to the new default", 80, 10, 10, std, 80, 50},
		{"root grows to the new default", 80, 50, 50, power, 175, 100},
		{"a customised user size is kept, even smaller", 80, 10, 50, power, 175, 10},
		{"a customised larger one too", 175, 500, 100, std, 175, 500},
		{"a default larger than the new one stays", 175, 100, 100, std, 175, 100},
		{"the source bundle is gone: kept", 80, 10, 0, std, 80, 10},
	} {
		r, u := MigratedVolumes(Properties{RootVolumeSizeGib: c.root, UserVolumeSizeGib: c.user}, c.srcB, c.to)
		if r != c.wantR || u != c.wantU {
			t.Errorf("%s: %d/%d, want %d/%d", c.name, r, u, c.wantR, c.wantU)
		}
	}
}

// TestRestoreFromMigration: a failed migration's source returns to its prior state.
func TestRestoreFromMigration(t *testing.T) {
	now := time.Unix(1e9, 0)
	for _, c := range []struct {
		prior State
		want  State
	}{{Available, Starting}, {Stopped, Stopped}, {Error, Error}} {
		w := Workspace{ID: "ws-a", Migration: &Migration{Target: "ws-b", Prior: c.prior, PriorErrorCode: "BootFailed", PriorErrorMessage: "why"}}
		w.SetState(Updating, now)
		if !w.MigrationSource() || w.MigrationTarget() {
			t.Fatal("a source in UPDATING is a migration's source")
		}
		if running, ok := w.WantsRunning(); running || !ok {
			t.Error("a migration's source wants its guest off")
		}
		w.RestoreFromMigration(now)
		if w.State != c.want || w.Migration != nil {
			t.Errorf("prior %s: %s %+v", c.prior, w.State, w.Migration)
		}
		if c.prior == Error && (w.ErrorCode != "BootFailed" || w.ErrorMessage != "why") {
			t.Errorf("an ERROR source lost its reason: %s %s", w.ErrorCode, w.ErrorMessage)
		}
	}
	if err := CheckState(OpMigrate, "ws-a", AdminMaintenance); err == nil {
		t.Error("ADMIN_MAINTENANCE WorkSpaces cannot be migrated")
	}
}

// TestCheckOpSaysWhyUpdating: an UPDATING WorkSpace's refusal names what runs — the
// migration it is the source of, or the modification (the guide's self-service rule,
// which says nothing of migrations).
func TestCheckOpSaysWhyUpdating(t *testing.T) {
	now := time.Unix(1e9, 0)
	src := Workspace{ID: "ws-a", Migration: &Migration{Target: "ws-b", Prior: Stopped}}
	src.SetState(Updating, now)
	err := src.CheckOp(OpReboot)
	if err == nil || !strings.Contains(err.Error(), "migrating to WorkSpace ws-b") || !strings.Contains(err.Error(), "returns to STOPPED") || strings.Contains(err.Error(), MsgWhileModifying) {
		t.Errorf("migration source: %v", err)
	}
	mod := Workspace{ID: "ws-c", Modification: Modification{Resource: ResourceComputeType, Return: Available}}
	mod.SetState(Updating, now)
	if err := mod.CheckOp(OpRebuild); err == nil || !strings.Contains(err.Error(), MsgWhileModifying) || strings.Contains(err.Error(), "migrating") {
		t.Errorf("modification: %v", err)
	}
	ok := Workspace{ID: "ws-d"}
	ok.SetState(Available, now)
	if err := ok.CheckOp(OpReboot); err != nil {
		t.Errorf("AVAILABLE reboots: %v", err)
	}
}
