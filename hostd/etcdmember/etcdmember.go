// Package etcdmember runs the members of the fleet's etcd cluster: real etcd (its server
// package, go.etcd.io/etcd/server/v3/embed, served by `hostd etcd`), each member its own
// process, so that it outlives a hostd restart and can be stopped or killed alone.
//
// A member is described by a Config (data dir, client and peer URLs, the initial cluster,
// mutual TLS with certificates from the fleet CA) written as etcd's own configuration file.
// The first host bootstraps a one-member cluster ("new"); a later host is added with the
// member API (AddMember) and starts with the cluster it was told ("existing").
package etcdmember

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
)

// Config is one member.
type Config struct {
	Name    string
	DataDir string
	// ClientURL is where clients (hostd's store) reach the member, PeerURL where the other
	// members do; both https. The member listens on them and advertises them.
	ClientURL, PeerURL string
	// InitialCluster is name=peerURL,... of every member including this one; State is
	// "new" for a cluster being bootstrapped, "existing" for a member joining one.
	InitialCluster string
	State          string
	// Token tells clusters apart when they are bootstrapped (the fleet's id).
	Token string
	// CAFile is the fleet CA; CertFile and KeyFile are the member's certificate, good for
	// server and client use (members dial each other). Both listeners require a client
	// certificate the CA signed.
	CAFile, CertFile, KeyFile string
	// HeartbeatMS and ElectionMS are raft's timing (defaults 100 and 1000, etcd's).
	HeartbeatMS, ElectionMS int
}

// Limits beyond etcd's defaults: hostd commits a connection report of up to 10,000
// WorkSpaces in one transaction.
const (
	maxTxnOps       = 16384
	maxRequestBytes = 16 << 20
	quotaBytes      = 2 << 30
)

// File is the member's etcd configuration file (the format of `etcd --config-file`).
func (c Config) File() ([]byte, error) {
	switch {
	case c.Name == "" || c.DataDir == "" || c.ClientURL == "" || c.PeerURL == "":
		return nil, errors.New("etcd member: name, data dir, client URL and peer URL are required")
	case c.CAFile == "" || c.CertFile == "" || c.KeyFile == "":
		return nil, fmt.Errorf("etcd member %s: CA, certificate and key files are required (mutual TLS)", c.Name)
	case c.State != "new" && c.State != "existing":
		return nil, fmt.Errorf("etcd member %s: state %q must be new or existing", c.Name, c.State)
	case !strings.HasPrefix(c.ClientURL, "https://") || !strings.HasPrefix(c.PeerURL, "https://"):
		return nil, fmt.Errorf("etcd member %s: client and peer URLs must be https", c.Name)
	}
	if c.HeartbeatMS == 0 {
		c.HeartbeatMS = 100
	}
	if c.ElectionMS == 0 {
		c.ElectionMS = 1000
	}
	if c.InitialCluster == "" {
		c.InitialCluster = c.Name + "=" + c.PeerURL
	}
	sec := map[string]any{
		"cert-file": c.CertFile, "key-file": c.KeyFile,
		"client-cert-auth": true, "trusted-ca-file": c.CAFile,
	}
	return yaml.Marshal(map[string]any{
		"name":                        c.Name,
		"data-dir":                    c.DataDir,
		"listen-client-urls":          c.ClientURL,
		"advertise-client-urls":       c.ClientURL,
		"listen-peer-urls":            c.PeerURL,
		"initial-advertise-peer-urls": c.PeerURL,
		"initial-cluster":             c.InitialCluster,
		"initial-cluster-state":       c.State,
		"initial-cluster-token":       c.Token,
		"heartbeat-interval":          c.HeartbeatMS,
		"election-timeout":            c.ElectionMS,
		"max-txn-ops":                 maxTxnOps,
		"max-request-bytes":           maxRequestBytes,
		"quota-backend-bytes":         quotaBytes,
		// History for watches to resume from: an hour's worth.
		"auto-compaction-mode":      "periodic",
		"auto-compaction-retention": "1h",
		"client-transport-security": sec,
		"peer-transport-security":   sec,
		"logger":                    "zap",
		"log-level":                 "warn",
		"log-outputs":               []string{"stderr"},
	})
}

// Member is a running member process.
type Member struct {
	Config  Config
	command []string
	env     []string
	// Log is where the process's output goes: DataDir + ".log".
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start writes the member's configuration next to its data dir and starts command (for
// example {"/usr/sbin/hostd", "etcd"}) with --config-file. It does not wait for the member
// to serve: a member of a cluster being bootstrapped serves only once a majority is up.
func Start(cfg Config, command []string, env []string) (*Member, error) {
	if len(command) == 0 {
		return nil, errors.New("etcd member: no command")
	}
	b, err := cfg.File()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(cfg.DataDir)), 0o700); err != nil {
		return nil, fmt.Errorf("etcd member %s: %w", cfg.Name, err)
	}
	path := filepath.Clean(cfg.DataDir) + ".yaml"
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("etcd member %s: %w", cfg.Name, err)
	}
	m := &Member{Config: cfg, command: slices.Concat(command, []string{"--config-file", path}), env: env, Log: filepath.Clean(cfg.DataDir) + ".log"}
	return m, m.start()
}

func (m *Member) start() error {
	logf, err := os.OpenFile(m.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", m.Config.Name, err)
	}
	cmd := exec.Command(m.command[0], m.command[1:]...)
	cmd.Env = append(os.Environ(), m.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a terminal's ^C reaches hostd, which stops members in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("etcd member %s: start %s: %w", m.Config.Name, m.command[0], err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() {
		m.err = cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	return nil
}

// PID is the member process's id.
func (m *Member) PID() int { return m.cmd.Process.Pid }

// Exited is closed when the process ends.
func (m *Member) Exited() <-chan struct{} { return m.done }

// Stop asks the member to stop (SIGTERM) and kills it if it has not within 10 s.
func (m *Member) Stop() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(10 * time.Second):
		return m.Kill()
	}
}

// Kill ends the member at once (SIGKILL), as a crash or a power cut would.
func (m *Member) Kill() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	return nil
}

// Restart starts the stopped member again with the same data dir: it rejoins its cluster
// (its membership is in the data dir, the initial cluster no longer matters).
func (m *Member) Restart() error {
	select {
	case <-m.done:
	default:
		return fmt.Errorf("etcd member %s: still running", m.Config.Name)
	}
	return m.start()
}

// LogTail is the end of the member's output, for error messages.
func (m *Member) LogTail() string {
	b, _ := os.ReadFile(m.Log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Client connects to endpoints with mutual TLS.
func Client(endpoints []string, caFile, certFile, keyFile string) (*clientv3.Client, error) {
	tlsCfg, err := (&transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	return clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// WaitServing waits until the cluster answers a linearizable read through cli (it has a
// leader and a quorum).
func WaitServing(ctx context.Context, cli *clientv3.Client) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 2*time.Second)
		_, err := cli.Get(cctx, "/deskhost-health")
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd cluster not serving: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AddMember announces a new member (its peer URL) to the running cluster through the
// member API, and returns the initial cluster the new member must start with (State
// "existing"). Start it promptly: until it is up, the cluster counts it in its quorum.
// etcd refuses a new member while another has been connected for less than a few seconds
// (it would risk the quorum): AddMember waits that out, until ctx ends.
func AddMember(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	var resp *clientv3.MemberAddResponse
	err := untilHealthy(ctx, func() (err error) {
		resp, err = cli.MemberAdd(ctx, []string{peerURL})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("add etcd member %s (%s): %w", name, peerURL, err)
	}
	var parts []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ","), nil
}

// AddLearner announces a new member as a learner: it receives the log but does not count
// in the quorum until it is promoted (Promote), so a cluster of one or two members keeps
// its quorum while the new member starts and catches up (AddMember would make a
// one-member cluster wait for it). It returns the initial cluster the member starts with
// (State "existing"). A member with peerURL already announced (a repeated join) is not
// announced again.
func AddLearner(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("list etcd members: %w", err)
	}
	members := ml.Members
	var id uint64
	for _, m := range members {
		if slices.Contains(m.PeerURLs, peerURL) {
			id = m.ID
		}
	}
	if id == 0 {
		var resp *clientv3.MemberAddResponse
		if err := untilHealthy(ctx, func() (err error) {
			resp, err = cli.MemberAddAsLearner(ctx, []string{peerURL})
			return err
		}); err != nil {
			return "", fmt.Errorf("add etcd learner %s (%s): %w", name, peerURL, err)
		}
		members, id = resp.Members, resp.Member.ID
	}
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == id {
			n = name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ","), nil
}

// Promote makes the learner named name a voting member once it has caught up with the
// leader, trying until ctx ends. A member that already votes is left as it is.
func Promote(ctx context.Context, cli *clientv3.Client, name string) error {
	for {
		ml, err := cli.MemberList(ctx)
		if err == nil {
			i := slices.IndexFunc(ml.Members, func(m *etcdserverpb.Member) bool { return m.Name == name })
			switch {
			case i < 0:
				err = fmt.Errorf("no member named %s", name)
			case !ml.Members[i].IsLearner:
				return nil
			default:
				if _, err = cli.MemberPromote(ctx, ml.Members[i].ID); err == nil {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote etcd learner %s: %w (last: %v)", name, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// untilHealthy runs a membership change until etcd stops refusing it as unsafe for the
// quorum (a member connected for less than a few seconds), or ctx ends.
func untilHealthy(ctx context.Context, change func() error) error {
	for {
		err := change()
		if err == nil || !errors.Is(rpctypes.Error(err), rpctypes.ErrUnhealthy) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RemoveMember takes the member named name out of the cluster.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string) error {
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("list etcd members: %w", err)
	}
	for _, m := range resp.Members {
		if m.Name == name {
			if err := untilHealthy(ctx, func() error { _, err := cli.MemberRemove(ctx, m.ID); return err }); err != nil {
				return fmt.Errorf("remove etcd member %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("remove etcd member %s: no such member", name)
}

// Serve runs a member in this process from an etcd configuration file until ctx ends or
// the server fails. It is the body of `hostd etcd`.
func Serve(ctx context.Context, configFile string, log *slog.Logger) error {
	cfg, err := embed.ConfigFromFile(configFile)
	if err != nil {
		return fmt.Errorf("etcd member: config %s: %w", configFile, err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", cfg.Name, err)
	}
	defer e.Close()
	go func() {
		select {
		case <-e.Server.ReadyNotify():
			log.Info("etcd member serving", "name", cfg.Name, "clientURLs", cfg.AdvertiseClientUrls, "peerURLs", cfg.AdvertisePeerUrls)
		case <-ctx.Done():
		}
	}()
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd member %s: %w", cfg.Name, err)
	case <-e.Server.StopNotify():
		return fmt.Errorf("etcd member %s: the server stopped", cfg.Name)
	case <-ctx.Done():
		return nil
	}
}

// Main is `hostd etcd --config-file FILE`: a member, until SIGTERM or SIGINT.
func Main(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	path := fs.String("config-file", "", "etcd configuration file (written by the member runner)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "hostd etcd: --config-file is required")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "etcd")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Serve(ctx, *path, log); err != nil {
		log.Error("etcd member stopped", "err", err)
		return 1
	}
	return 0
}

const childEnv = "DESKHOST_ETCD_MEMBER_CHILD"

// TestCommand is how tests run members without a built hostd: the test binary itself,
// re-executed as `hostd etcd` would run (the test's TestMain calls RunIfChild first).
func TestCommand() (command, env []string) {
	return []string{os.Args[0]}, []string{childEnv + "=1"}
}

// RunIfChild serves a member and exits if this process was started by TestCommand.
func RunIfChild() {
	if os.Getenv(childEnv) == "" {
		return
	}
	args := os.Args[1:]
	for i, a := range args { // past the test binary's own flags, if any
		if a == "--config-file" {
			args = args[i:]
			break
		}
	}
	os.Exit(Main(args))
}
