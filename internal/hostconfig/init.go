package hostconfig

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/argon2id"
)

// Init configures PID 1 (init/): the host name, the operator console, time, the network
// (netcfg's desired state), the services it supervises and their logs. Every field is
// optional; Defaults fills them in. It is decoded as strictly as the rest of the file and
// checked while decoding, so `hostd serve` and init refuse the same mistakes.
//
//	init:
//	  hostname: deskhost-01
//	  console: {ttys: [ttyS0, tty1], baud: 115200, shell: false}
//	  time: {servers: [10.0.0.1, ntp.example.com:123], timeout: 5s}
//	  nameservers: [10.0.0.1]
//	  network: {...}            # netcfg's config, as in configs/netcfg-example.yaml
//	  services:
//	    zeroclient: {enabled: false}
//	    hostd: {args: [serve, --config, /run/deskhost/host.yaml, --debug]}
//	  readyTimeout: 5m
//	  log: {maxBytes: 4194304, keep: 3, ringLines: 2000}
type Init struct {
	// Hostname is set at boot and shown on the console (default "deskhost").
	Hostname string `yaml:"hostname"`
	// Console is the operator console.
	Console InitConsole `yaml:"console"`
	// Time is the NTP client, run before the broker (zeroclient) starts.
	Time InitTime `yaml:"time"`
	// Nameservers are written to /etc/resolv.conf (for NTP server names and the
	// services).
	Nameservers []string `yaml:"nameservers"`
	// Network is netcfg's desired state (netcfg/config), applied by init at boot and
	// then kept by hostd (or, with hostd disabled, by `netcfg apply --serve`); it is
	// checked by netcfg's rules. interfaces.management and interfaces.primary may leave
	// out name and mac: the NIC is then chosen at boot by rule (NICsByRule). Absent: init
	// applies no network configuration.
	Network yaml.Node `yaml:"network"`
	// Services tunes the supervised services, by name (ServiceNames).
	Services map[string]InitService `yaml:"services"`
	// ReadyTimeout bounds how long the boot waits for hostd and zeroclient before the
	// console says the host is degraded (default 10m: under emulation libvirtd alone
	// takes minutes).
	ReadyTimeout Duration `yaml:"readyTimeout"`
	// Log sizes the services' logs.
	Log InitLog `yaml:"log"`
}

// InitConsole is where the operator console runs and who may change the host from it.
// The status screen is readable by anyone at a terminal; every action that changes the
// host (network, services, WorkSpaces, power, factory reset, the shell) asks for the
// console password first.
type InitConsole struct {
	// TTYs are the terminals, names below /dev (default ttyS0 and tty1, the VGA console).
	TTYs []string `yaml:"ttys"`
	// Baud is the serial lines' speed (default 115200).
	Baud int `yaml:"baud"`
	// PasswordHash is the console password as an argon2id hash (`imagebuild
	// console-password` makes one). Without it, the password is the one set at the
	// console on first use and kept on /perm (0600). A hash is a secret too: it may be
	// guessed at offline, so imagebuild refuses to bake it into an image.
	PasswordHash string `yaml:"passwordHash"`
	// Shell enables the console's root shell (menu 5), after the console password.
	// Default off.
	Shell bool `yaml:"shell"`
}

// InitTime is the NTP client's configuration.
type InitTime struct {
	// Servers are NTP servers, "host" or "host:port". None: the clock stays as the
	// hardware clock set it, and the status screen says so. A configured server that does
	// not answer raises an alarm.
	Servers []string `yaml:"servers"`
	// Timeout bounds the whole query at boot (default 5s).
	Timeout Duration `yaml:"timeout"`
	// Interval is how often the clock is corrected afterwards (default 1h; 0s: never).
	Interval *Duration `yaml:"interval"`
}

// InitService tunes one supervised service.
type InitService struct {
	// Enabled: false leaves the service out. Default true; for zeroclient, true when
	// the image carries it; for netcfg (`netcfg apply --serve`), only when hostd is
	// disabled, since hostd keeps init.network applied itself.
	Enabled *bool `yaml:"enabled"`
	// Args replace the service's default arguments.
	Args []string `yaml:"args"`
	// Env adds NAME=value entries to its environment.
	Env []string `yaml:"env"`
	// RestartDelay is the first restart's delay, doubled on each quick failure up to
	// MaxRestartDelay (defaults 1s and 1m). A run longer than a minute resets it.
	RestartDelay    Duration `yaml:"restartDelay"`
	MaxRestartDelay Duration `yaml:"maxRestartDelay"`
	// StopTimeout is how long it gets between SIGTERM and SIGKILL (default 15s).
	StopTimeout Duration `yaml:"stopTimeout"`
	// Ready says when the service serves: it accepts connections on a unix socket or a
	// TCP address. Default: hostd's API socket for hostd, the process running otherwise.
	Ready InitReady `yaml:"ready"`
}

// InitReady is a readiness check: one of Unix or TCP.
type InitReady struct {
	Unix string `yaml:"unix"`
	TCP  string `yaml:"tcp"`
}

// InitLog sizes the services' logs: a ring buffer of lines in memory (what the console
// shows) and files under /perm/log rotated at MaxBytes, Keep old ones.
type InitLog struct {
	MaxBytes  int64 `yaml:"maxBytes"`
	Keep      int   `yaml:"keep"`
	RingLines int   `yaml:"ringLines"`
}

// ServiceNames are the services init supervises, in start order.
var ServiceNames = []string{"netcfg", "virtlogd", "libvirtd", "hostd", "zeroclient"}

// Defaults of the init section.
const (
	DefaultHostname        = "deskhost"
	DefaultBaud            = 115200
	DefaultTimeTimeout     = 5 * time.Second
	DefaultTimeInterval    = time.Hour
	DefaultReadyTimeout    = 10 * time.Minute
	DefaultRestartDelay    = time.Second
	DefaultMaxRestartDelay = time.Minute
	DefaultStopTimeout     = 15 * time.Second
	DefaultLogMaxBytes     = 4 << 20
	DefaultLogKeep         = 3
	DefaultLogRingLines    = 2000
)

// DefaultTTYs are the console's terminals: the first serial port and the VGA console.
var DefaultTTYs = []string{"ttyS0", "tty1"}

// UnmarshalYAML decodes the section strictly (this form of unmarshaler keeps the
// decoder's KnownFields) and checks it.
func (i *Init) UnmarshalYAML(unmarshal func(any) error) error {
	type initSection Init
	var p initSection
	if err := unmarshal(&p); err != nil {
		return err
	}
	*i = Init(p)
	return i.Validate()
}

var (
	hostnameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ttyRe      = regexp.MustCompile(`^(tty[0-9]{1,2}|ttyS[0-9]{1,2}|ttyAMA[0-9]|hvc[0-9]|ttyUSB[0-9])$`)
	envRe      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
)

// Validate checks the section; every error names its field under "init.".
func (i *Init) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("init."+format, args...)) }
	if i.Hostname != "" && !hostnameRe.MatchString(i.Hostname) {
		bad("hostname %q: lower-case letters, digits and '-', at most 63", i.Hostname)
	}
	for k, t := range i.Console.TTYs {
		if !ttyRe.MatchString(t) {
			bad("console.ttys[%d] %q: a terminal name below /dev such as ttyS0 or tty1", k, t)
		}
	}
	if i.Console.PasswordHash != "" {
		if err := argon2id.Check(i.Console.PasswordHash); err != nil {
			bad("console.passwordHash: %v", err)
		}
	}
	switch i.Console.Baud {
	case 0, 9600, 19200, 38400, 57600, 115200:
	default:
		bad("console.baud %d: one of 9600, 19200, 38400, 57600, 115200", i.Console.Baud)
	}
	for k, s := range i.Time.Servers {
		if err := checkHostPort(s); err != nil {
			bad("time.servers[%d] %q: %v", k, s, err)
		}
	}
	for k, s := range i.Nameservers {
		if net.ParseIP(s) == nil {
			bad("nameservers[%d] %q: an IP address", k, s)
		}
	}
	if i.Network.Kind != 0 && i.Network.Kind != yaml.MappingNode {
		bad("network: netcfg's configuration, a mapping (see configs/netcfg-example.yaml)")
	}
	known := map[string]bool{}
	for _, n := range ServiceNames {
		known[n] = true
	}
	names := make([]string, 0, len(i.Services))
	for n := range i.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := i.Services[n]
		if !known[n] {
			bad("services.%s: unknown service; the services are %s", n, strings.Join(ServiceNames, ", "))
			continue
		}
		for k, e := range s.Env {
			if !envRe.MatchString(e) {
				bad("services.%s.env[%d] %q: NAME=value", n, k, e)
			}
		}
		if s.Ready.Unix != "" && s.Ready.TCP != "" {
			bad("services.%s.ready: unix or tcp, not both", n)
		}
		if s.Ready.Unix != "" && !strings.HasPrefix(s.Ready.Unix, "/") {
			bad("services.%s.ready.unix %q: an absolute path", n, s.Ready.Unix)
		}
		if s.Ready.TCP != "" {
			if _, _, err := net.SplitHostPort(s.Ready.TCP); err != nil {
				bad("services.%s.ready.tcp %q: %v", n, s.Ready.TCP, err)
			}
		}
		if s.MaxRestartDelay.Duration != 0 && s.MaxRestartDelay.Duration < s.RestartDelay.Duration {
			bad("services.%s: maxRestartDelay %v is shorter than restartDelay %v", n, s.MaxRestartDelay, s.RestartDelay)
		}
	}
	if nc, hd := i.Services["netcfg"], i.Services["hostd"]; nc.Enabled != nil && *nc.Enabled && (hd.Enabled == nil || *hd.Enabled) {
		bad("services.netcfg.enabled: hostd keeps init.network applied while it runs (one writer); enable netcfg's service only with services.hostd.enabled: false")
	}
	if i.Log.MaxBytes < 0 || (i.Log.MaxBytes > 0 && i.Log.MaxBytes < 64<<10) {
		bad("log.maxBytes %d: at least 65536", i.Log.MaxBytes)
	}
	if i.Log.Keep < 0 || i.Log.Keep > 100 {
		bad("log.keep %d: 0 to 100", i.Log.Keep)
	}
	if i.Log.RingLines < 0 || i.Log.RingLines > 1_000_000 {
		bad("log.ringLines %d: 0 to 1000000", i.Log.RingLines)
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: 1 to 65535", port)
		}
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return errors.New("want host or host:port")
	}
	return nil
}

// Defaults fills in what the section leaves out.
func (i *Init) Defaults() {
	if i.Hostname == "" {
		i.Hostname = DefaultHostname
	}
	if len(i.Console.TTYs) == 0 {
		i.Console.TTYs = append([]string(nil), DefaultTTYs...)
	}
	if i.Console.Baud == 0 {
		i.Console.Baud = DefaultBaud
	}
	if i.Time.Timeout.Duration == 0 {
		i.Time.Timeout.Duration = DefaultTimeTimeout
	}
	if i.Time.Interval == nil {
		i.Time.Interval = &Duration{DefaultTimeInterval}
	}
	if i.ReadyTimeout.Duration == 0 {
		i.ReadyTimeout.Duration = DefaultReadyTimeout
	}
	if i.Log.MaxBytes == 0 {
		i.Log.MaxBytes = DefaultLogMaxBytes
	}
	if i.Log.Keep == 0 {
		i.Log.Keep = DefaultLogKeep
	}
	if i.Log.RingLines == 0 {
		i.Log.RingLines = DefaultLogRingLines
	}
	if i.Services == nil {
		i.Services = map[string]InitService{}
	}
	for _, n := range ServiceNames {
		s := i.Services[n]
		if s.RestartDelay.Duration == 0 {
			s.RestartDelay.Duration = DefaultRestartDelay
		}
		if s.MaxRestartDelay.Duration == 0 {
			s.MaxRestartDelay.Duration = DefaultMaxRestartDelay
		}
		if s.MaxRestartDelay.Duration < s.RestartDelay.Duration {
			s.MaxRestartDelay.Duration = s.RestartDelay.Duration
		}
		if s.StopTimeout.Duration == 0 {
			s.StopTimeout.Duration = DefaultStopTimeout
		}
		i.Services[n] = s
	}
}

// NetworkYAML returns the network section as a YAML document for netcfg, or nil when
// there is none.
func (i *Init) NetworkYAML() ([]byte, error) {
	return networkYAML(i.Network)
}

func networkYAML(n yaml.Node) ([]byte, error) {
	if n.Kind == 0 {
		return nil, nil
	}
	// Block style: the file is for people too (the console shows netcfg's errors).
	n = blockStyle(n)
	b, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("init.network: %w", err)
	}
	return b, nil
}

func blockStyle(n yaml.Node) yaml.Node {
	n.Style &^= yaml.FlowStyle
	if len(n.Content) > 0 {
		c := make([]*yaml.Node, len(n.Content))
		for k, x := range n.Content {
			y := blockStyle(*x)
			c[k] = &y
		}
		n.Content = c
	}
	return n
}
