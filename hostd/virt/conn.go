package virt

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"libvirt.org/go/libvirtxml"
)

// Conn is a connection to libvirtd.
type Conn struct {
	l      *libvirt.Libvirt
	socket string
}

// Dial connects to libvirtd's read-write socket, retrying until ctx ends: libvirtd takes
// seconds to answer after it starts. A libvirtd that accepts the connection but does not
// answer (it holds new clients while its drivers initialise, which under load can take
// very long) does not hold Dial past ctx: go-libvirt's Connect has no deadline, so the
// connection is closed under it, and a connection unanswered for connectAttempt is
// replaced by a new one.
func Dial(ctx context.Context, socket string) (*Conn, error) {
	var last error
	for {
		d := &closableDialer{Dialer: dialers.NewLocal(dialers.WithSocket(socket), dialers.WithLocalTimeout(5*time.Second))}
		l := libvirt.NewWithDialer(d)
		done := make(chan error, 1)
		go func() { done <- l.Connect() }()
		attempt := time.NewTimer(connectAttempt)
		select {
		case last = <-done:
			attempt.Stop()
			if last == nil {
				return &Conn{l: l, socket: socket}, nil
			}
		case <-attempt.C:
			// Unanswered: try again on a new connection.
			d.close()
			<-done
			last = fmt.Errorf("no answer within %s", connectAttempt)
		case <-ctx.Done():
			attempt.Stop()
			d.close()
			<-done
			return nil, fmt.Errorf("connect to libvirtd at %s: no answer: %w", socket, ctx.Err())
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to libvirtd at %s: %w", socket, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// connectAttempt bounds one connection's wait for libvirtd's answer before Dial tries a
// new one. libvirtd answers in well under a second once up, and within about 8 s of its
// start on these machines.
var connectAttempt = 20 * time.Second

// closableDialer remembers the connection it made, so that Dial can close it under a
// Connect that waits for an answer.
type closableDialer struct {
	Dialer interface{ Dial() (net.Conn, error) }
	mu     sync.Mutex
	conn   net.Conn
	closed bool
}

func (d *closableDialer) Dial() (net.Conn, error) {
	c, err := d.Dialer.Dial()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		c.Close()
		return nil, errors.New("dial abandoned")
	}
	d.conn = c
	return c, nil
}

func (d *closableDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		d.conn.Close()
	}
}

// Close disconnects.
func (c *Conn) Close() error { return c.l.Disconnect() }

// Disconnected is closed when the connection to libvirtd is lost.
func (c *Conn) Disconnected() <-chan struct{} { return c.l.Disconnected() }

// DomainState is what libvirt says a domain is doing.
type DomainState int

const (
	Missing DomainState = iota // no such domain
	Running
	Paused
	ShuttingDown
	Shutoff
	Crashed
	Other
)

func (s DomainState) String() string {
	return [...]string{"missing", "running", "paused", "shutting-down", "shutoff", "crashed", "other"}[s]
}

// Active reports whether a qemu process exists for the domain.
func (s DomainState) Active() bool { return s == Running || s == Paused || s == ShuttingDown }

// State returns the domain's state, Missing if it is not defined.
func (c *Conn) State(name string) (DomainState, error) {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return Missing, nil
	}
	if err != nil {
		return Other, fmt.Errorf("look up domain %s: %w", name, err)
	}
	st, _, err := c.l.DomainGetState(d, 0)
	if libvirt.IsNotFound(err) {
		return Missing, nil
	}
	if err != nil {
		return Other, fmt.Errorf("state of domain %s: %w", name, err)
	}
	switch libvirt.DomainState(st) {
	case libvirt.DomainRunning:
		return Running, nil
	case libvirt.DomainPaused:
		return Paused, nil
	case libvirt.DomainShutdown:
		return ShuttingDown, nil
	case libvirt.DomainShutoff:
		return Shutoff, nil
	case libvirt.DomainCrashed:
		return Crashed, nil
	}
	return Other, nil
}

// Define defines (or redefines) the persistent domain for s. A redefinition keeps the
// domain's UUID, as libvirt requires.
func (c *Conn) Define(s Spec) error {
	d, err := Domain(s)
	if err != nil {
		return err
	}
	if old, err := c.l.DomainLookupByName(s.Name); err == nil {
		u := old.UUID
		d.UUID = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	}
	x, err := d.Marshal()
	if err != nil {
		return fmt.Errorf("marshal domain %s: %w", s.Name, err)
	}
	if _, err := c.l.DomainDefineXML(x); err != nil {
		return fmt.Errorf("define domain %s: %w", s.Name, err)
	}
	return nil
}

// Start boots a defined domain.
func (c *Conn) Start(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	if err := c.l.DomainCreate(d); err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	return nil
}

// StartPaused starts a defined domain's qemu with its vCPUs stopped: the guest has not
// executed an instruction until Resume. When it returns, qemu runs and has allocated its
// RAM.
func (c *Conn) StartPaused(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	if _, err := c.l.DomainCreateWithFlags(d, uint32(libvirt.DomainStartPaused)); err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	return nil
}

// Save writes a running domain's state (RAM and devices) to path, as libvirtd (root)
// writes it, and stops its qemu; the domain stays defined. It is how AutoStop hibernates.
func (c *Conn) Save(name, path string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("save domain %s: %w", name, err)
	}
	if err := c.l.DomainSaveFlags(d, path, nil, 0); err != nil {
		return fmt.Errorf("save domain %s to %s: %w", name, path, err)
	}
	return nil
}

// RestorePaused starts a domain from the state Save wrote to path, its vCPUs stopped
// until Resume (so that its RAM is held before the guest runs again).
func (c *Conn) RestorePaused(path string) error {
	if err := c.l.DomainRestoreFlags(path, nil, uint32(libvirt.DomainSavePaused)); err != nil {
		return fmt.Errorf("restore domain from %s: %w", path, err)
	}
	return nil
}

// Resume lets a paused domain's vCPUs run.
func (c *Conn) Resume(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("resume domain %s: %w", name, err)
	}
	if err := c.l.DomainResume(d); err != nil {
		return fmt.Errorf("resume domain %s: %w", name, err)
	}
	return nil
}

// Suspend stops a running domain's vCPUs; its qemu, and so its RAM, stay.
func (c *Conn) Suspend(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("pause domain %s: %w", name, err)
	}
	if err := c.l.DomainSuspend(d); err != nil {
		return fmt.Errorf("pause domain %s: %w", name, err)
	}
	return nil
}

// Shutdown asks the guest to power off (ACPI power button) and returns at once.
func (c *Conn) Shutdown(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("shut down domain %s: %w", name, err)
	}
	if err := c.l.DomainShutdownFlags(d, libvirt.DomainShutdownAcpiPowerBtn); err != nil {
		return fmt.Errorf("shut down domain %s: %w", name, err)
	}
	return nil
}

// Destroy stops a domain's qemu at once. Destroying a domain that is not running is not an
// error.
func (c *Conn) Destroy(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroy domain %s: %w", name, err)
	}
	if err := c.l.DomainDestroyFlags(d, 0); err != nil {
		if st, serr := c.State(name); serr == nil && !st.Active() {
			return nil
		}
		return fmt.Errorf("destroy domain %s: %w", name, err)
	}
	return nil
}

// Undefine removes a stopped domain's definition; a missing domain is not an error.
func (c *Conn) Undefine(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("undefine domain %s: %w", name, err)
	}
	if err := c.l.DomainUndefineFlags(d, libvirt.DomainUndefineManagedSave|libvirt.DomainUndefineNvram); err != nil && !libvirt.IsNotFound(err) {
		return fmt.Errorf("undefine domain %s: %w", name, err)
	}
	return nil
}

// XML returns the domain's live (or, when stopped, persistent) definition.
func (c *Conn) XML(name string) (*libvirtxml.Domain, error) {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return nil, fmt.Errorf("domain %s: %w", name, err)
	}
	x, err := c.l.DomainGetXMLDesc(d, 0)
	if err != nil {
		return nil, fmt.Errorf("domain %s XML: %w", name, err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		return nil, fmt.Errorf("domain %s XML: %w", name, err)
	}
	return &dom, nil
}

// Domains lists the names of all defined domains whose names start with prefix.
func (c *Conn) Domains(prefix string) ([]string, error) {
	ds, _, err := c.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	var out []string
	for _, d := range ds {
		if strings.HasPrefix(d.Name, prefix) {
			out = append(out, d.Name)
		}
	}
	return out, nil
}

// Owner returns the hostd instance marked in a domain's metadata ("" if none, or if the
// domain does not exist).
func (c *Conn) Owner(name string) (string, error) {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("domain %s: %w", name, err)
	}
	x, err := c.l.DomainGetMetadata(d, int32(libvirt.DomainMetadataElement), libvirt.OptString{OwnerNamespace}, 0)
	if isErr(err, libvirt.ErrNoDomainMetadata) || libvirt.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("domain %s metadata: %w", name, err)
	}
	var v struct {
		Owner string `xml:",chardata"`
	}
	if err := xml.Unmarshal([]byte(x), &v); err != nil {
		return "", fmt.Errorf("domain %s metadata: %w", name, err)
	}
	return strings.TrimSpace(v.Owner), nil
}

// Event is a domain lifecycle change.
type Event struct {
	Domain  string
	Stopped bool // the domain's qemu is gone (stopped, crashed, destroyed)
	Kind    string
}

// Events streams lifecycle events until ctx ends or the connection drops.
func (c *Conn) Events(ctx context.Context) (<-chan Event, error) {
	raw, err := c.l.LifecycleEvents(ctx)
	if err != nil {
		return nil, fmt.Errorf("subscribe to libvirt events: %w", err)
	}
	out := make(chan Event)
	go func() {
		defer close(out)
		for ev := range raw {
			t := libvirt.DomainEventType(ev.Event)
			e := Event{Domain: ev.Dom.Name, Kind: eventName(t)}
			e.Stopped = t == libvirt.DomainEventStopped || t == libvirt.DomainEventCrashed
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func eventName(t libvirt.DomainEventType) string {
	switch t {
	case libvirt.DomainEventDefined:
		return "defined"
	case libvirt.DomainEventUndefined:
		return "undefined"
	case libvirt.DomainEventStarted:
		return "started"
	case libvirt.DomainEventSuspended:
		return "suspended"
	case libvirt.DomainEventResumed:
		return "resumed"
	case libvirt.DomainEventStopped:
		return "stopped"
	case libvirt.DomainEventShutdown:
		return "shutdown"
	case libvirt.DomainEventPmsuspended:
		return "pmsuspended"
	case libvirt.DomainEventCrashed:
		return "crashed"
	}
	return strconv.Itoa(int(t))
}

// Screenshot returns the domain's display as an image (PPM from qemu).
func (c *Conn) Screenshot(name string) ([]byte, string, error) {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return nil, "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	var buf strings.Builder
	mime, err := c.l.DomainScreenshot(d, &buf, 0, 0)
	if err != nil {
		return nil, "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	m := ""
	if len(mime) > 0 {
		m = mime[0]
	}
	return []byte(buf.String()), m, nil
}

// QemuProcess finds the qemu process running domain name: its pid and start time. libvirt
// names the process "-name guest=NAME,...".
func QemuProcess(name string) (pid int, started time.Time, err error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, time.Time{}, err
	}
	want := "guest=" + name + ","
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), "qemu") {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.HasPrefix(arg, want) {
				st, err := processStarted(p)
				if err != nil {
					return 0, time.Time{}, err
				}
				return p, st, nil
			}
		}
	}
	return 0, time.Time{}, fmt.Errorf("no qemu process for domain %s: %w", name, os.ErrNotExist)
}

// processStarted converts /proc/pid/stat's start time (ticks since boot) to wall time.
func processStarted(pid int) (time.Time, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 20 {
		return time.Time{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			const hz = 100 // USER_HZ is 100 on every Linux ABI hostd runs on
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / hz), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
