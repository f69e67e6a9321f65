package hostconfig

import (
	"strings"
	"testing"
	"time"
)

func TestInitSection(t *testing.T) {
	c, err := Parse([]byte(good + `init:
  hostname: host-01
  console: {ttys: [ttyS1], baud: 57600}
  time: {servers: ["10.0.0.1", "ntp.example.com:123"], timeout: 2s}
  services:
    zeroclient: {enabled: false}
    hostd: {args: [serve, --debug], env: [GODEBUG=x=1], restartDelay: 2s, ready: {unix: /run/x.sock}}
  network:
    stateFile: /perm/netcfg/state.json
    interfaces: {management: {name: eth0, dhcp: true}, primary: {name: eth1, dhcp: true}}
`))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Init
	in.Defaults()
	if in.Hostname != "host-01" || in.Console.Baud != 57600 || in.Time.Timeout.Duration != 2*time.Second ||
		in.Services["hostd"].RestartDelay.Duration != 2*time.Second || in.Services["hostd"].MaxRestartDelay.Duration != DefaultMaxRestartDelay ||
		*in.Services["zeroclient"].Enabled || in.Log.RingLines != DefaultLogRingLines || in.Time.Interval.Duration != DefaultTimeInterval {
		t.Errorf("init: %+v", in)
	}
	b, err := in.NetworkYAML()
	if err != nil || !strings.Contains(string(b), "stateFile: /perm/netcfg/state.json") {
		t.Errorf("network yaml: %v\n%s", err, b)
	}
	// Defaults without a section.
	var none Init
	none.Defaults()
	if none.Hostname != DefaultHostname || len(none.Console.TTYs) != 2 || none.ReadyTimeout.Duration != DefaultReadyTimeout {
		t.Errorf("defaults: %+v", none)
	}
	if b, _ := none.NetworkYAML(); b != nil {
		t.Errorf("no network section gave %q", b)
	}
}

func TestInitSectionRejects(t *testing.T) {
	for _, tc := range []struct{ section, want string }{
		{"init: {hostnme: x}", "field hostnme not found"},
		{"init: {hostname: Host_1}", `init.hostname "Host_1"`},
		{"init: {console: {ttys: [/dev/ttyS0]}}", `init.console.ttys[0]`},
		{"init: {console: {baud: 12345}}", "init.console.baud 12345"},
		{"init: {time: {servers: ['a b']}}", "init.time.servers[0]"},
		{"init: {time: {servers: ['x:99999']}}", "init.time.servers[0]"},
		{"init: {time: {timeout: soon}}", "duration"},
		{"init: {nameservers: [dns.example.com]}", "init.nameservers[0]"},
		{"init: {services: {sshd: {}}}", "init.services.sshd: unknown service"},
		{"init: {services: {hostd: {argz: []}}}", "field argz not found"},
		{"init: {services: {hostd: {env: [FOO]}}}", "init.services.hostd.env[0]"},
		{"init: {services: {hostd: {ready: {unix: /a, tcp: ':1'}}}}", "unix or tcp, not both"},
		{"init: {services: {hostd: {ready: {tcp: nope}}}}", "init.services.hostd.ready.tcp"},
		{"init: {services: {hostd: {restartDelay: 1m, maxRestartDelay: 1s}}}", "maxRestartDelay"},
		{"init: {services: {netcfg: {enabled: true}}}", "services.netcfg.enabled"},
		{"init: {network: [a, b]}", "init.network"},
		{"init: {log: {maxBytes: 10}}", "init.log.maxBytes"},
	} {
		_, err := Parse([]byte(good + tc.section + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.section, err, tc.want)
		}
	}
	// netcfg's own service is fine when hostd is left out.
	if _, err := Parse([]byte(good + "init: {services: {netcfg: {enabled: true}, hostd: {enabled: false}}}\n")); err != nil {
		t.Errorf("netcfg without hostd: %v", err)
	}
}
