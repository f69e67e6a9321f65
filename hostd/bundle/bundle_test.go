package bundle

import (
	"strings"
	"testing"

	"deskhost/hostd/apierr"
)

func TestValidateVolumesGuideGroups(t *testing.T) {
	for _, tc := range []struct {
		c          ComputeType
		root, user int
		ok         bool
	}{
		{Value, 80, 10, true}, {Standard, 80, 50, true}, {Performance, 80, 100, true},
		{Power, 175, 100, true}, {PowerPro, 2000, 2000, true}, {Value, 500, 1000, true},
		{Value, 80, 20, false}, {Value, 80, 200, false}, {Value, 100, 100, false},
		{Value, 174, 100, false}, {Value, 175, 99, false}, {Value, 2001, 100, false},
		{Value, 175, 2001, false}, {Value, 0, 0, false}, {Value, 79, 10, false},
		{Graphics, 100, 100, true}, {GraphicsPro, 100, 2000, true},
		{Graphics, 80, 10, false}, {GraphicsPro, 99, 100, false}, {Graphics, 100, 99, false},
	} {
		err := ValidateVolumes(tc.c, tc.root, tc.user)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateVolumes(%s, %d, %d) = %v, want ok=%v", tc.c, tc.root, tc.user, err, tc.ok)
		}
		if err != nil && !apierr.Is(err, apierr.InvalidParameterValues) {
			t.Errorf("error type %v, want InvalidParameterValues", err)
		}
	}
}

func TestValidateProtocol(t *testing.T) {
	if err := ValidateProtocol(WSP, Linux); err == nil || !strings.Contains(err.Error(), "only PCOIP") {
		t.Errorf("WSP on Linux: %v", err)
	}
	for _, p := range []Protocol{PCoIP, WSP} {
		if err := ValidateProtocol(p, Windows); err != nil {
			t.Errorf("%s on Windows: %v", p, err)
		}
	}
	if err := ValidateProtocol(PCoIP, Linux); err != nil {
		t.Errorf("PCOIP on Linux: %v", err)
	}
	if err := ValidateProtocol("RDP", Windows); err == nil {
		t.Error("unknown protocol accepted")
	}
}

func TestBundleValidate(t *testing.T) {
	hw := map[ComputeType]Hardware{Value: {VCPUs: 1, MemoryMiB: 256}}
	img := Image{ID: "wsi-0123456789", OS: Linux}
	good := Bundle{ID: "wsb-0123456789", ComputeType: Value, Protocol: PCoIP, RootGiB: 80, UserGiB: 10}
	if err := good.Validate(img, hw); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Bundle){
		"unknown compute": func(b *Bundle) { b.ComputeType = "HUGE" },
		"no hardware":     func(b *Bundle) { b.ComputeType = Power },
		"wsp on linux":    func(b *Bundle) { b.Protocol = WSP },
		"bad volumes":     func(b *Bundle) { b.UserGiB = 11 },
	} {
		b := good
		mut(&b)
		if err := b.Validate(img, hw); err == nil || !strings.Contains(err.Error(), b.ID) {
			t.Errorf("%s: %v, want an error naming the bundle", name, err)
		}
	}
}
