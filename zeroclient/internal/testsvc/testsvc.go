// Package testsvc starts the real directory and MFA servers zeroclient's tests log in
// against: OpenLDAP's slapd and FreeRADIUS from Debian's packages, each with a config the
// test writes into its own temporary directory, listening on 127.0.0.1 on a free port,
// in the foreground as a child of the test, and stopped (that process, by its PID) when
// the test ends. No system service, no systemd, no shared state.
package testsvc

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/internal/certs"
	"deskhost/internal/testenv"
)

// need returns the path of a program from a Debian package, or marks the test missing it.
func need(t testing.TB, prog, pkg string) string {
	t.Helper()
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, prog)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.Missing(t, prog+" is not installed (Debian package "+pkg+"; scripts/install-deps.sh installs it)")
	return ""
}

// FreePort returns a port that was free on 127.0.0.1 a moment ago, for network ("tcp" or
// "udp").
func FreePort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// LDAPUser is a person entry.
type LDAPUser struct {
	UID, Password, GivenName, Surname string
}

// LDAP is a running slapd. It speaks StartTLS with a certificate for 127.0.0.1 from a CA
// made for the test (CAFile); simple binds before StartTLS are refused
// (slapd's security simple_bind=1), as a directory that cares about passwords refuses them.
type LDAP struct {
	URL             string
	CAFile          string
	Suffix          string // dc=corp,dc=example,dc=com
	UserBase        string // ou=people,<suffix>
	ServiceDN       string
	ServicePassword string
	dir             string
	slapadd         string
	conf            string
	slapd           string
	mu              sync.Mutex
	cmd             *exec.Cmd
}

// Slapd starts slapd for suffix (from a DNS domain, e.g. corp.example.com) with a service
// account and users; passwords are stored as {SSHA} hashes, as a real directory keeps them.
func Slapd(t testing.TB, domain string, users []LDAPUser) *LDAP {
	t.Helper()
	slapd := need(t, "slapd", "slapd")
	slapadd := need(t, "slapadd", "slapd")
	dir := t.TempDir()
	var dcs []string
	for _, l := range strings.Split(domain, ".") {
		dcs = append(dcs, "dc="+l)
	}
	l := &LDAP{
		Suffix: strings.Join(dcs, ","), dir: dir, slapadd: slapadd,
		ServicePassword: "svc-" + randString(12),
	}
	l.UserBase = "ou=people," + l.Suffix
	l.ServiceDN = "cn=svc-workspaces,ou=service," + l.Suffix
	l.conf = filepath.Join(dir, "slapd.conf")
	os.MkdirAll(filepath.Join(dir, "data"), 0o700)
	tlsDir := filepath.Join(dir, "tls")
	if _, err := certs.SelfSigned(tlsDir, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	l.CAFile = filepath.Join(tlsDir, certs.CAFile)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
database mdb
maxsize 16777216
suffix "%[2]s"
rootdn "cn=admin,%[2]s"
rootpw %[3]s
directory %[1]s/data
TLSCACertificateFile %[1]s/tls/ca.pem
TLSCertificateFile %[1]s/tls/cert.pem
TLSCertificateKeyFile %[1]s/tls/key.pem
# No simple bind (no password) travels before StartTLS.
security simple_bind=1
# Users prove their password by binding; only bound accounts (the service account) read.
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
`, dir, l.Suffix, randString(16))
	if err := os.WriteFile(l.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var ldif strings.Builder
	fmt.Fprintf(&ldif, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: %s\no: %s\n\n", l.Suffix, strings.Split(domain, ".")[0], domain)
	fmt.Fprintf(&ldif, "dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n\n", l.Suffix)
	fmt.Fprintf(&ldif, "dn: ou=service,%s\nobjectClass: organizationalUnit\nou: service\n\n", l.Suffix)
	fmt.Fprintf(&ldif, "dn: %s\nobjectClass: person\ncn: svc-workspaces\nsn: service\nuserPassword: %s\n\n", l.ServiceDN, ssha(l.ServicePassword))
	for _, u := range users {
		writeUser(&ldif, l.UserBase, u)
	}
	l.load(t, ldif.String())
	port := FreePort(t, "tcp")
	l.URL = fmt.Sprintf("ldap://127.0.0.1:%d", port)
	l.slapd = slapd
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		stop(l.cmd)
	})
	l.start(t)
	return l
}

// start runs slapd on l.URL and waits until it listens.
func (l *LDAP) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(l.slapd, "-h", l.URL+"/", "-f", l.conf, "-d", "0")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	l.mu.Lock()
	l.cmd = cmd
	l.mu.Unlock()
	addr := strings.TrimPrefix(l.URL, "ldap://")
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not listen within 15 s: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart stops slapd and starts it again on the same address: every connection to it
// is closed, as a directory restart closes them.
func (l *LDAP) Restart(t testing.TB) {
	t.Helper()
	l.mu.Lock()
	stop(l.cmd)
	l.mu.Unlock()
	l.start(t)
}

func writeUser(w io.Writer, base string, u LDAPUser) {
	gn, sn := u.GivenName, u.Surname
	if gn == "" {
		gn = u.UID
	}
	if sn == "" {
		sn = "Test"
	}
	fmt.Fprintf(w, "dn: uid=%s,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s %s\ngivenName: %s\nsn: %s\nuserPassword: %s\n\n",
		u.UID, base, u.UID, gn, sn, gn, sn, ssha(u.Password))
}

func (l *LDAP) load(t testing.TB, ldif string) {
	t.Helper()
	path := filepath.Join(l.dir, "load.ldif")
	os.WriteFile(path, []byte(ldif), 0o600)
	if out, err := exec.Command(l.slapadd, "-f", l.conf, "-l", path).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v: %s", err, out)
	}
}

// ssha is OpenLDAP's salted SHA-1 password scheme.
func ssha(pw string) string {
	salt := make([]byte, 8)
	rand.Read(salt)
	h := sha1.Sum(append([]byte(pw), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h[:], salt...))
}

// RADIUS is a running FreeRADIUS.
type RADIUS struct {
	Host   string
	Port   int
	Secret string
	log    *lockedBuffer
}

// RADIUSConfig says whom FreeRADIUS accepts. Passcodes maps a user to the one code that
// PAP accepts in a single Access-Request. Challenge users answer in two steps, as
// PIN-then-token servers do: the first Access-Request must carry PIN and is answered with
// an Access-Challenge ("Enter the code shown on your token", with a State); the second
// carries Code and that State.
type RADIUSConfig struct {
	Passcodes  map[string]string
	Challenges map[string]Challenge
	// OmitMessageAuthenticator leaves Message-Authenticator out of the answers, as
	// FreeRADIUS 3.2.1 (Debian 12) does unless told otherwise: the BlastRADIUS-vulnerable
	// server zeroclient must refuse. Otherwise every answer carries one, as the BlastRADIUS
	// fix has servers do.
	OmitMessageAuthenticator bool
}

// Challenge is a two-step user.
type Challenge struct{ PIN, Code string }

// ChallengePrompt is the Reply-Message of the first step.
const ChallengePrompt = "Enter the code shown on your token"

// FreeRADIUS starts FreeRADIUS in the foreground for cfg.
func FreeRADIUS(t testing.TB, cfg RADIUSConfig) *RADIUS {
	t.Helper()
	bin := need(t, "freeradius", "freeradius")
	dir := t.TempDir()
	r := &RADIUS{Host: "127.0.0.1", Port: FreePort(t, "udp"), Secret: "rad-" + randString(16), log: &lockedBuffer{}}
	var users, challenge strings.Builder
	for u, code := range cfg.Passcodes {
		fmt.Fprintf(&users, "%s Cleartext-Password := %q\n", u, code)
	}
	if !cfg.OmitMessageAuthenticator {
		// FreeRADIUS computes the attribute's value when it encodes the answer (Accept,
		// Reject or Challenge alike).
		challenge.WriteString(`
    update reply {
      &Message-Authenticator := 0x00000000000000000000000000000000
    }`)
	}
	for u, c := range cfg.Challenges {
		fmt.Fprintf(&users, "%s Cleartext-Password := %q\n", u, c.Code)
		fmt.Fprintf(&challenge, `
    if (&User-Name == %[1]q) {
      if (!&State) {
        if (&User-Password == %[2]q) {
          update reply {
            &Reply-Message := %[3]q
            &State := 0x6465736b686f73742d6368616c6c656e6765
          }
          update control {
            &Response-Packet-Type := Access-Challenge
          }
          handled
        }
        reject
      }
      if (&State != 0x6465736b686f73742d6368616c6c656e6765) {
        reject
      }
    }`, u, c.PIN, ChallengePrompt)
	}
	conf := fmt.Sprintf(`prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = %[1]s
raddbdir = %[1]s
radacctdir = %[1]s
name = radiusd
confdir = %[1]s
modconfdir = %[1]s
run_dir = %[1]s
db_dir = %[1]s
libdir = /usr/lib/freeradius
pidfile = %[1]s/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no
log {
  destination = stderr
  colourise = no
  auth = yes
}
security {
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = no
}
thread pool {
  start_servers = 2
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 3
  max_requests_per_server = 0
}
client local {
  ipaddr = 127.0.0.1
  secret = %[2]s
  # BlastRADIUS: refuse requests without a Message-Authenticator.
  require_message_authenticator = yes
}
modules {
  pap {
    normalise = yes
  }
  always handled {
    rcode = handled
  }
  always reject {
    rcode = reject
  }
  files {
    filename = %[1]s/users
  }
}
server default {
  listen {
    type = auth
    ipaddr = %[5]s
    port = %[3]d
  }
  authorize {%[4]s
    files
    pap
  }
  authenticate {
    Auth-Type PAP {
      pap
    }
  }
}
`, dir, r.Secret, r.Port, challenge.String(), r.Host)
	os.WriteFile(filepath.Join(dir, "radiusd.conf"), []byte(conf), 0o600)
	os.WriteFile(filepath.Join(dir, "dictionary"), []byte("$INCLUDE /usr/share/freeradius/dictionary\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "users"), []byte(users.String()), 0o600)
	cmd := exec.Command(bin, "-f", "-d", dir, "-l", "stdout")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start freeradius: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			r.log.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "Ready to process requests") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() { stop(cmd); pw.Close() })
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("freeradius not ready within 30 s:\n%s", r.log)
	}
	return r
}

// Log is FreeRADIUS's output so far.
func (r *RADIUS) Log() string { return r.log.String() }

// stop ends a server this package started: SIGTERM, then SIGKILL after 5 s.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func randString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
