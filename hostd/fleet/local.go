package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/store"
	"deskhost/internal/atomicfile"
	"deskhost/internal/catalog"
	"deskhost/internal/certs"
)

// Local is this host's fleet settings (the host config's hostd.fleet, with what hostd
// knows of itself).
type Local struct {
	// Dir keeps the fleet CA's certificate, this host's certificate and key, its fleet
	// state and its etcd member's data (root only).
	Dir       string
	Name      string
	Advertise string // this host's IP address, where the others reach it
	// Listen is the fleet port's listen address (joins, peers' calls).
	Listen string
	// Join is a fleet host's fleet port (https://host:port) to ask to join through;
	// CAFingerprint, if set, is the fleet CA to expect there.
	Join, CAFingerprint string
	// Members is how many etcd members the fleet keeps (1, 3 or 5): a host joining while
	// there are fewer becomes one.
	Members                      int
	EtcdClientPort, EtcdPeerPort int
	HardwareID                   string
	Capacity                     Resources
	ComputeTypes                 map[catalog.ComputeType]catalog.Hardware
	// Addresses are this host's services' (API, broker, gateway); the fleet and etcd ones
	// are filled in from the fields above.
	Addresses Addresses
	// Timeout bounds every etcd call of the store.
	Timeout time.Duration
	// Command runs an etcd member (`hostd etcd`), with Env added to its environment.
	Command, Env []string
	Log          *slog.Logger
}

// Membership is what a host keeps of its membership (Dir/state.json); its presence means
// the host is in a fleet.
type Membership struct {
	FleetID       string `json:"fleetId"`
	HostID        string `json:"hostId"`
	CAFingerprint string `json:"caFingerprint"`
	// Endpoints are the etcd members' client URLs, as last known.
	Endpoints []string `json:"endpoints"`
	// Member is this host's etcd member, if it runs one.
	Member *MemberState `json:"member,omitempty"`
	// Bootstrapping: the first host has started making the fleet and not finished.
	Bootstrapping bool `json:"bootstrapping,omitempty"`
}

// MemberState is how this host's etcd member first started.
type MemberState struct {
	Name           string `json:"name"`
	InitialCluster string `json:"initialCluster"`
	State          string `json:"state"` // new or existing
	Token          string `json:"token"`
	// Learner: added as a learner and not yet promoted to a voting member.
	Learner bool `json:"learner,omitempty"`
}

// Files in Local.Dir.
const (
	stateFile   = "state.json"
	caFile      = "ca.pem"
	hostCert    = "host.pem"
	hostKey     = "host-key.pem"
	caKeyDir    = "ca"
	etcdDir     = "etcd"
	memberPID   = "member.pid"
	joinCodeTxt = "join-code"
)

func (l Local) path(name string) string { return filepath.Join(l.Dir, name) }

// CAFile, CertFile and KeyFile are the fleet CA's certificate and this host's certificate
// and key (PEM), which zeroclient and peers use too.
func (l Local) CAFile() string   { return l.path(caFile) }
func (l Local) CertFile() string { return l.path(hostCert) }
func (l Local) KeyFile() string  { return l.path(hostKey) }

// JoinCodeFile holds the join code while the host waits for approval, for the console.
func (l Local) JoinCodeFile() string { return l.path(joinCodeTxt) }

func (l Local) clientURL() string {
	return "https://" + net.JoinHostPort(l.Advertise, strconv.Itoa(l.EtcdClientPort))
}

func (l Local) peerURL() string {
	return "https://" + net.JoinHostPort(l.Advertise, strconv.Itoa(l.EtcdPeerPort))
}

// FleetAddress is this host's fleet port, host:port, as the others reach it.
func (l Local) FleetAddress() string {
	_, port, _ := net.SplitHostPort(l.Listen)
	return net.JoinHostPort(l.Advertise, port)
}

// ReadState reads this host's fleet state; ok is false before it joined or made a fleet.
func ReadMembership(dir string) (Membership, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return Membership{}, false, nil
	}
	if err != nil {
		return Membership{}, false, fmt.Errorf("fleet state: %w", err)
	}
	var s Membership
	if err := json.Unmarshal(b, &s); err != nil {
		return Membership{}, false, fmt.Errorf("fleet state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return s, true, nil
}

func (l Local) writeState(s Membership) error {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("fleet state: %w", err)
	}
	return atomicfile.WriteFile(l.path(stateFile), mustJSON(s), 0o600)
}

// memberConfig is this host's etcd member as etcdmember runs it.
func (l Local) memberConfig(m *MemberState) etcdmember.Config {
	return etcdmember.Config{
		Name: m.Name, DataDir: filepath.Join(l.Dir, etcdDir, m.Name),
		ClientURL: l.clientURL(), PeerURL: l.peerURL(),
		InitialCluster: m.InitialCluster, State: m.State, Token: m.Token,
		CAFile: l.CAFile(), CertFile: l.CertFile(), KeyFile: l.KeyFile(),
	}
}

// StartMember starts this host's etcd member unless it is running (a member outlives a
// hostd restart: it is a process of its own). hostd starts it, and does not stop it.
func (l Local) StartMember(s Membership) error {
	if s.Member == nil {
		return nil
	}
	pidPath := filepath.Join(l.Dir, etcdDir, memberPID)
	if running(pidPath) {
		return nil
	}
	m, err := etcdmember.Start(l.memberConfig(s.Member), l.Command, l.Env)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(pidPath, []byte(strconv.Itoa(m.PID())+"\n"), 0o600); err != nil {
		return fmt.Errorf("etcd member pid file: %w", err)
	}
	l.Log.Info("etcd member started", "name", s.Member.Name, "pid", m.PID(), "client", l.clientURL(), "peer", l.peerURL(), "log", m.Log)
	return nil
}

// MemberPID is the pid of this host's etcd member as its pid file says (0 if none).
func MemberPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, etcdDir, memberPID))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// running reports whether the pid file names a live `hostd etcd` process.
func running(pidPath string) bool {
	b, err := os.ReadFile(pidPath)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmd), "--config-file") && !strings.Contains(string(cmd), "\x00serve\x00")
}

// OpenStore opens the fleet's store with this host's credentials.
func (l Local) OpenStore(s Membership) (*store.Etcd, error) {
	return store.OpenEtcd(store.EtcdConfig{Endpoints: s.Endpoints, CAFile: l.CAFile(), CertFile: l.CertFile(), KeyFile: l.KeyFile(),
		Timeout: l.Timeout, Log: l.Log.With("component", "store")})
}

// hostKey reads this host's key, making it the first time: it is kept across join
// attempts, so that the join code (which hashes its public key) stays the same.
func (l Local) hostKey() (*ecdsa.PrivateKey, []byte, error) {
	if b, err := os.ReadFile(l.KeyFile()); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, nil, fmt.Errorf("fleet: %s holds no PEM key", l.KeyFile())
		}
		k, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("fleet: %s: %w", l.KeyFile(), err)
		}
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return k, pub, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("fleet: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, _ := x509.MarshalECPrivateKey(k)
	if err := certs.WritePEM(l.KeyFile(), der, true); err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return k, pub, err
}

// Bootstrap makes a new fleet with this host as its first: the fleet CA (internal/certs),
// this host's certificate, the first etcd member (a cluster of one, which later hosts
// join), and the CA in the store for every host to sign approved joins with. The store
// is etcd from the first moment: there is no catalog to move. Bootstrap is resumable: a
// host that stops half-way continues where it was at its next start.
func Bootstrap(ctx context.Context, l Local) (Membership, error) {
	s, ok, err := ReadMembership(l.Dir)
	if err != nil {
		return Membership{}, err
	}
	if ok && !s.Bootstrapping {
		return s, nil
	}
	if !ok {
		s = Membership{FleetID: "fleet-" + catalog.NewID(catalog.KindDirectory)[2:], HostID: NewHostID(), Bootstrapping: true}
		s.Member = &MemberState{Name: s.HostID, State: "new", Token: s.FleetID}
		s.Member.InitialCluster = s.Member.Name + "=" + l.peerURL()
		s.Endpoints = []string{l.clientURL()}
		if err := l.writeState(s); err != nil {
			return Membership{}, err
		}
	}
	now := time.Now()
	ca, err := certs.OpenCA(l.path(caKeyDir), now)
	if err != nil {
		return Membership{}, err
	}
	s.CAFingerprint = Fingerprint(ca.Cert.Raw)
	if err := certs.WritePEM(l.CAFile(), ca.Cert.Raw, false); err != nil {
		return Membership{}, err
	}
	_, pub, err := l.hostKey()
	if err != nil {
		return Membership{}, err
	}
	der, err := HostCert(ca, s.HostID, []string{l.Advertise}, pub, now)
	if err != nil {
		return Membership{}, err
	}
	if err := certs.WritePEM(l.CertFile(), der, false); err != nil {
		return Membership{}, err
	}
	if err := l.StartMember(s); err != nil {
		return Membership{}, err
	}
	st, err := l.waitStore(ctx, s)
	if err != nil {
		return Membership{}, err
	}
	defer st.Close()
	certPEM, keyPEM, err := certs.CAFiles(l.path(caKeyDir))
	if err != nil {
		return Membership{}, err
	}
	if _, _, err := GetCA(st); err != nil {
		if err := PutCA(st, s.FleetID, certPEM, keyPEM); err != nil {
			return Membership{}, err
		}
	}
	s.Bootstrapping = false
	if err := l.writeState(s); err != nil {
		return Membership{}, err
	}
	l.Log.Info("fleet made: this host is its first", "fleet", s.FleetID, "host", s.HostID, "caFingerprint", s.CAFingerprint)
	return s, nil
}

// waitStore opens the store once the cluster serves (a member just started needs an
// election first).
func (l Local) waitStore(ctx context.Context, s Membership) (*store.Etcd, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := l.OpenStore(s)
		if err == nil {
			return st, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("fleet: the store did not serve: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// RefreshEndpoints keeps the state's member list current (members join after this host).
func (l Local) RefreshEndpoints(ctx context.Context, st *store.Etcd, s *Membership) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ml, err := st.Client().MemberList(cctx)
	if err != nil {
		return
	}
	var eps []string
	for _, m := range ml.Members {
		if !m.IsLearner {
			eps = append(eps, m.ClientURLs...)
		}
	}
	slices.Sort(eps)
	if len(eps) == 0 || slices.Equal(eps, s.Endpoints) {
		return
	}
	s.Endpoints = eps
	if err := l.writeState(*s); err != nil {
		l.Log.Warn("fleet state: keep the members' addresses", "err", err)
	}
}

// TLS is this host's identity in the fleet: its certificate (with the CA in its chain, so
// that a joining host sees which CA it deals with) and the CA to check peers against.
func (l Local) TLS() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(l.CertFile(), l.KeyFile())
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: this host's certificate: %w", err)
	}
	caPEM, err := os.ReadFile(l.CAFile())
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: %w", err)
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: %s holds no certificate", l.CAFile())
	}
	cert.Certificate = append(cert.Certificate, blk.Bytes)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return cert, pool, nil
}

// Self is this host's record as it knows itself.
func (l Local) Self(s Membership) Host {
	a := l.Addresses
	a.Fleet = l.FleetAddress()
	if s.Member != nil {
		a.EtcdClient, a.EtcdPeer = l.clientURL(), l.peerURL()
	}
	return Host{ID: s.HostID, HardwareID: l.HardwareID, Name: l.Name, Addresses: a, Capacity: l.Capacity,
		ComputeTypes: l.ComputeTypes, EtcdMember: s.Member != nil}
}
