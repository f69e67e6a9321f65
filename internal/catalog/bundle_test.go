package catalog

import (
	"strings"
	"testing"
)

func TestValidateVolumesGuideGroups(t *testing.T) {
	for _, tc := range []struct {
		c          ComputeType
		root, user int
		ok         bool
	}{
		{ComputeValue, 80, 10, true}, {ComputeStandard, 80, 50, true}, {ComputePerformance, 80, 100, true},
		{ComputePower, 175, 100, true}, {ComputePowerPro, 2000, 2000, true}, {ComputeValue, 500, 1000, true},
		{ComputeValue, 80, 20, false}, {ComputeValue, 80, 200, false}, {ComputeValue, 100, 100, false},
		{ComputeValue, 174, 100, false}, {ComputeValue, 175, 99, false}, {ComputeValue, 2001, 100, false},
		{ComputeValue, 175, 2001, false}, {ComputeValue, 0, 0, false}, {ComputeValue, 79, 10, false},
		{ComputeGraphics, 100, 100, true}, {ComputeGraphicsPro, 100, 2000, true},
		{ComputeGraphics, 80, 10, false}, {ComputeGraphicsPro, 99, 100, false}, {ComputeGraphics, 100, 99, false},
	} {
		err := ValidateVolumes(tc.c, tc.root, tc.user)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateVolumes(%s, %d, %d) = %v, want ok=%v", tc.c, tc.root, tc.user, err, tc.ok)
		}
		if err != nil && !IsError(err, InvalidParameterValues) {
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
	hw := map[ComputeType]Hardware{ComputeValue: {VCPUs: 1, MemoryMiB: 256}}
	img := Image{ID: "wsi-0123456789", OS: Linux}
	good := Bundle{ID: "wsb-0123456789", ComputeType: ComputeValue, Protocol: PCoIP, RootGiB: 80, UserGiB: 10}
	if err := good.Validate(img, hw); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Bundle){
		"unknown compute": func(b *Bundle) { b.ComputeType = "HUGE" },
		"no hardware":     func(b *Bundle) { b.ComputeType = ComputePower },
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
