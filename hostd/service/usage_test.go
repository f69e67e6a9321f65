package service

import (
	"context"
	"strings"
	"testing"

	"deskhost/internal/catalog"
)

// TestGraphicsQuota: Graphics WorkSpaces have the guide's quota of 0 until the host config
// raises it; then the quota counts them apart from the others, and Quotas reports it.
func TestGraphicsQuota(t *testing.T) {
	s, _, _ := newService(t, 10)
	ctx := context.Background()
	gpu := func(user string) CreateRequest { r := req(user); r.BundleID = gpuID; return r }
	_, failed, err := s.CreateWorkspaces(ctx, []CreateRequest{gpu("user01")})
	if err != nil || len(failed) != 1 || failed[0].Code != string(catalog.ResourceLimitExceeded) || !strings.Contains(failed[0].Message, "quota of 0 GRAPHICS WorkSpaces") {
		t.Fatalf("a Graphics WorkSpace with the default quota: %v %+v", err, failed)
	}
	s.cfg.GPUQuota = map[catalog.ComputeType]int{catalog.ComputeGraphics: 1}
	pending, failed, err := s.CreateWorkspaces(ctx, []CreateRequest{gpu("user01"), req("user02"), gpu("user03")})
	if err != nil || len(pending) != 2 || len(failed) != 1 || failed[0].Index != 2 || !strings.Contains(failed[0].Message, "quota of 1 GRAPHICS") {
		t.Fatalf("Graphics quota 1: pending %d, failed %+v, %v", len(pending), failed, err)
	}
	qs, err := s.Quotas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int{}
	for _, q := range qs {
		got[q.Name] = [2]int{q.Limit, q.Used}
	}
	for name, want := range map[string][2]int{"WorkSpaces": {10, 2}, "Graphics WorkSpaces": {1, 1}, "GraphicsPro WorkSpaces": {0, 0}, "WorkSpaces per user": {1, 1}} {
		if got[name] != want {
			t.Errorf("%s: limit/used %v, want %v", name, got[name], want)
		}
	}
}
