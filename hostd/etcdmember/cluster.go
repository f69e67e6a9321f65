package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"deskhost/internal/certs"
)

// Cluster is etcd members on this machine's loopback, under one CA, with a client
// certificate for hostd: what tests use for a fleet's store, and how a first host
// bootstraps (StartCluster with 1) and later hosts join (Join).
type Cluster struct {
	Dir     string
	Token   string
	Members []*Member
	// CAFile, and the client certificate hostd's store presents.
	CAFile, ClientCert, ClientKey string
	command, env                  []string
}

// StartCluster makes a CA and certificates under dir and bootstraps n members, and waits
// until the cluster serves.
func StartCluster(ctx context.Context, dir string, n int, command, env []string) (*Cluster, error) {
	c := &Cluster{Dir: dir, Token: "deskhost-" + filepath.Base(dir), command: command, env: env}
	caDir := filepath.Join(dir, "ca")
	c.CAFile = certs.CAPath(caDir)
	c.ClientCert, c.ClientKey = filepath.Join(dir, "client", "hostd.pem"), filepath.Join(dir, "client", "hostd-key.pem")
	if err := certs.Issue(caDir, certs.Leaf{CommonName: "hostd", Client: true}, c.ClientCert, c.ClientKey, time.Now()); err != nil {
		return nil, err
	}
	var cfgs []Config
	var initial []string
	for i := range n {
		cfg, err := c.memberConfig(fmt.Sprintf("m%d", i+1))
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, cfg)
		initial = append(initial, cfg.Name+"="+cfg.PeerURL)
	}
	for _, cfg := range cfgs {
		cfg.InitialCluster, cfg.State = strings.Join(initial, ","), "new"
		m, err := Start(cfg, c.command, c.env)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Members = append(c.Members, m)
	}
	if err := c.WaitServing(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) memberConfig(name string) (Config, error) {
	ports, err := freePorts(2)
	if err != nil {
		return Config{}, err
	}
	cert, key := filepath.Join(c.Dir, name+".pem"), filepath.Join(c.Dir, name+"-key.pem")
	if err := certs.Issue(filepath.Join(c.Dir, "ca"), certs.Leaf{CommonName: name, Names: []string{"127.0.0.1", "localhost"}, Server: true, Client: true}, cert, key, time.Now()); err != nil {
		return Config{}, err
	}
	return Config{
		Name: name, DataDir: filepath.Join(c.Dir, name),
		ClientURL: fmt.Sprintf("https://127.0.0.1:%d", ports[0]), PeerURL: fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		Token: c.Token, CAFile: c.CAFile, CertFile: cert, KeyFile: key,
	}, nil
}

// Join adds a member named name through the member API and starts it.
func (c *Cluster) Join(ctx context.Context, name string) (*Member, error) {
	cfg, err := c.memberConfig(name)
	if err != nil {
		return nil, err
	}
	cli, err := c.Client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	initial, err := AddMember(actx, cli, name, cfg.PeerURL)
	cancel()
	if err != nil {
		return nil, err
	}
	cfg.InitialCluster, cfg.State = initial, "existing"
	m, err := Start(cfg, c.command, c.env)
	if err != nil {
		return nil, err
	}
	c.Members = append(c.Members, m)
	// Joined once it has published its name and client URL to the cluster.
	for {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ml, err := cli.MemberList(lctx)
		cancel()
		if err == nil {
			for _, x := range ml.Members {
				if x.Name == name && len(x.ClientURLs) > 0 {
					return m, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("etcd member %s did not join: %w\n%s", name, ctx.Err(), m.LogTail())
		case <-m.Exited():
			return m, fmt.Errorf("etcd member %s exited while joining\n%s", name, m.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Config.ClientURL)
	}
	return out
}

// Client connects to every member with hostd's client certificate.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return Client(c.Endpoints(), c.CAFile, c.ClientCert, c.ClientKey)
}

// WaitServing waits until the cluster answers a linearizable read.
func (c *Cluster) WaitServing(ctx context.Context) error {
	cli, err := c.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := WaitServing(ctx, cli); err != nil {
		var logs []string
		for _, m := range c.Members {
			logs = append(logs, fmt.Sprintf("--- %s:\n%s", m.Config.Name, m.LogTail()))
		}
		return fmt.Errorf("%w\n%s", err, strings.Join(logs, "\n"))
	}
	return nil
}

// Close stops every member.
func (c *Cluster) Close() error {
	var errs []error
	for _, m := range c.Members {
		errs = append(errs, m.Stop())
	}
	return errors.Join(errs...)
}

// freePorts returns n loopback TCP ports free right now.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
