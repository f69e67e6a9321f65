package hostconfig

import (
	"errors"
	"strings"
	"testing"
)

// Parse checks init.network with the validator netcfg registers, and names the section
// in its error; without init.network the validator is not asked.
func TestNetworkValidator(t *testing.T) {
	var got []string
	RegisterNetworkValidator(func(b []byte) error {
		got = append(got, string(b))
		if strings.Contains(string(b), "bad") {
			return errors.New("interfaces.management.mac: not a MAC address")
		}
		return nil
	})
	defer RegisterNetworkValidator(nil)

	if _, err := Parse([]byte(minimalHostd)); err != nil || len(got) != 0 {
		t.Fatalf("no init.network: %v, validator called with %q", err, got)
	}
	if _, err := Parse([]byte(minimalHostd + "init:\n  network: {interfaces: {management: {mac: good}}}\n")); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.Contains(got[0], "mac: good") {
		t.Fatalf("the validator got %q, want init.network as YAML", got)
	}
	_, err := Parse([]byte(minimalHostd + "init:\n  network: {interfaces: {management: {mac: bad}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "init.network: interfaces.management.mac: not a MAC address") {
		t.Fatalf("bad init.network: %v", err)
	}
}

func TestHasZeroclient(t *testing.T) {
	c, err := Parse([]byte(minimalHostd))
	if err != nil || c.HasZeroclient() {
		t.Fatalf("without the section: %v %v", err, c.HasZeroclient())
	}
	c, err = Parse([]byte(minimalHostd + "zeroclient:\n  tls: {selfSignedDir: /tmp/tls}\n"))
	if err != nil || !c.HasZeroclient() {
		t.Fatalf("with the section: %v %v", err, c.HasZeroclient())
	}
}
