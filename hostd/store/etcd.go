package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"deskhost/internal/catalog"
)

// EtcdConfig is how hostd reaches the fleet's etcd cluster.
type EtcdConfig struct {
	// Endpoints are the members' client URLs (https://host:2379).
	Endpoints []string
	// CAFile is the fleet CA members' certificates are checked against; CertFile and
	// KeyFile are this host's client certificate (mutual TLS: members refuse clients
	// without one the CA signed).
	CAFile, CertFile, KeyFile string
	// Prefix is the root every key lives under, so that several deployments (or tests)
	// can share one cluster; "/deskhost/" by default.
	Prefix string
	// Timeout bounds every call to etcd (default 5 s): without quorum a call fails after
	// at most this long, never hangs.
	Timeout time.Duration
	// Attempts bounds how often Update runs its function when other writers keep
	// changing what it read (default 20).
	Attempts int
	Log      *slog.Logger
}

// DefaultPrefix is the root of hostd's keys in etcd.
const DefaultPrefix = "/deskhost/"

// Etcd is the fleet store: hostd's buckets as key prefixes in etcd.
//
// Keys: Prefix + bucket + "/" + key holds a record; Prefix + bucket (no slash) is the
// bucket's deletion marker, rewritten by every commit that deletes from the bucket, so that
// a transaction that listed the bucket notices a deletion as well as a new or changed key.
//
// View reads at one revision (the first read's), so it sees one snapshot. Update is
// optimistic and serializable: it reads at one revision, buffers its writes, and commits
// them in one etcd transaction guarded by comparisons of everything it read (each key's
// modification revision; for a listed bucket, that no key under it and not its deletion
// marker changed since the read revision). If the guard fails, another writer got there
// first: fn runs again on fresh data, up to Attempts times.
type Etcd struct {
	cli    *clientv3.Client
	cfg    EtcdConfig
	closed atomic.Bool
	down   atomic.Bool // last call found the cluster unavailable (for logging the change once)
}

// OpenEtcd connects to the cluster and checks that it answers a linearizable read (so
// that a host without quorum says so at start).
func OpenEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	tlsInfo := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
	tlsCfg, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd store: client TLS (ca %s, cert %s, key %s): %w", cfg.CAFile, cfg.CertFile, cfg.KeyFile, err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         tlsCfg,
		DialTimeout: cfg.Timeout,
		// The client's own retries of reads against a member that went away, and its
		// keepalives, so a dead member is noticed and left within seconds.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		AutoSyncInterval:     0,
		Logger:               zap.NewNop(), // hostd logs what matters through slog
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store: connect to %v: %w", cfg.Endpoints, err)
	}
	s := &Etcd{cli: cli, cfg: cfg}
	ctx, cancel := s.callCtx(context.Background())
	_, err = cli.Get(ctx, cfg.Prefix+"\x00probe")
	cancel()
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd store: open: %w", s.classify("read", err))
	}
	return s, nil
}

// Prefix is the root of the store's keys.
func (s *Etcd) Prefix() string { return s.cfg.Prefix }

// Client is the etcd client, for what the store does not cover (leases, members).
func (s *Etcd) Client() *clientv3.Client { return s.cli }

func (s *Etcd) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.cli.Close()
}

// callCtx bounds one etcd call, and asks the member to refuse it at once when it has no
// leader (instead of waiting for one that may not come).
func (s *Etcd) callCtx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, s.cfg.Timeout)
	return clientv3.WithRequireLeader(ctx), cancel
}

func (s *Etcd) key(bucket, key string) string     { return s.cfg.Prefix + bucket + "/" + key }
func (s *Etcd) bucketPrefix(bucket string) string { return s.cfg.Prefix + bucket + "/" }
func (s *Etcd) marker(bucket string) string       { return s.cfg.Prefix + bucket }

func checkBucket(bucket string) error {
	if bucket == "" || strings.ContainsAny(bucket, "/\x00") {
		return fmt.Errorf("store: bucket name %q: must be non-empty, without / or NUL", bucket)
	}
	return nil
}

func (s *Etcd) View(fn func(Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	for {
		t := &etcdTx{s: s}
		err := fn(t)
		if errors.Is(err, errRetry) { // the snapshot's revision was compacted away meanwhile
			continue
		}
		return err
	}
}

func (s *Etcd) Update(fn func(Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	for attempt := 1; ; attempt++ {
		t := &etcdTx{s: s, write: true, reads: map[string]int64{}, listed: map[string]bool{},
			writes: map[string][]byte{}, deleted: map[string]bool{}}
		err := fn(t)
		if err == nil {
			err = t.commit()
		}
		if !errors.Is(err, errRetry) {
			return err
		}
		if attempt >= s.cfg.Attempts {
			return fmt.Errorf("%w (%d attempts)", ErrConflict, attempt)
		}
		// Back off a little, at random, so that colliding writers spread out.
		time.Sleep(time.Duration(rand.IntN(1+attempt*2)) * time.Millisecond)
	}
}

// errRetry: the transaction must run again (a conflict, or its snapshot was compacted).
var errRetry = errors.New("store: retry the transaction")

type etcdTx struct {
	s     *Etcd
	rev   int64 // the snapshot's revision; 0 until the first read
	write bool
	// Update only: what was read (key → modification revision, 0 if absent), which
	// buckets were listed, and the buffered writes (nil value: a deletion).
	reads   map[string]int64
	listed  map[string]bool
	writes  map[string][]byte
	deleted map[string]bool // buckets with a deletion
}

// Revision is the revision of the transaction's snapshot; 0 before its first read.
func (t *etcdTx) Revision() int64 { return t.rev }

// get runs one read at the snapshot's revision, fixing the revision at the first read.
func (t *etcdTx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.rev > 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.s.callCtx(context.Background())
	defer cancel()
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, errRetry
		}
		return nil, t.s.classify("read", err)
	}
	t.s.up()
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

func (t *etcdTx) Get(bucket, key string) ([]byte, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	k := t.s.key(bucket, key)
	if t.write {
		if v, ok := t.writes[k]; ok {
			if v == nil {
				return nil, ErrNotFound
			}
			return slices.Clone(v), nil
		}
	}
	resp, err := t.get(k)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		if t.write {
			t.reads[k] = 0
		}
		return nil, ErrNotFound
	}
	if t.write {
		t.reads[k] = resp.Kvs[0].ModRevision
	}
	return resp.Kvs[0].Value, nil
}

func (t *etcdTx) Put(bucket, key string, value []byte) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if !t.write {
		return errors.New("store: Put in a read-only transaction")
	}
	if value == nil {
		value = []byte{}
	}
	t.writes[t.s.key(bucket, key)] = slices.Clone(value)
	return nil
}

func (t *etcdTx) Delete(bucket, key string) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if !t.write {
		return errors.New("store: Delete in a read-only transaction")
	}
	t.writes[t.s.key(bucket, key)] = nil
	t.deleted[bucket] = true
	return nil
}

// page is how many keys one range read returns; a bucket is listed a page at a time,
// every page at the snapshot's revision.
const page = 1000

func (t *etcdTx) ForEach(bucket string, fn func(string, []byte) error) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	prefix := t.s.bucketPrefix(bucket)
	end := clientv3.GetPrefixRangeEnd(prefix)
	type kv struct {
		k string
		v []byte
	}
	var all []kv
	from := prefix
	for {
		resp, err := t.get(from, clientv3.WithRange(end), clientv3.WithLimit(page))
		if err != nil {
			return err
		}
		for _, x := range resp.Kvs {
			all = append(all, kv{string(x.Key), x.Value})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if t.write {
		t.listed[bucket] = true
		// This transaction's own writes, merged in key order.
		for k, v := range t.writes {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			i, found := slices.BinarySearchFunc(all, k, func(e kv, k string) int { return strings.Compare(e.k, k) })
			switch {
			case found && v == nil:
				all = slices.Delete(all, i, i+1)
			case found:
				all[i].v = v
			case v != nil:
				all = slices.Insert(all, i, kv{k, v})
			}
		}
	}
	for _, x := range all {
		if err := fn(strings.TrimPrefix(x.k, prefix), slices.Clone(x.v)); err != nil {
			return err
		}
	}
	return nil
}

// commit writes the buffered changes in one etcd transaction, if nothing that was read has
// changed since.
func (t *etcdTx) commit() error {
	if len(t.writes) == 0 {
		return nil // read-only: its snapshot was consistent, nothing to write
	}
	var cmps []clientv3.Cmp
	for k, rev := range t.reads {
		if t.listed[bucketOfKey(t.s.cfg.Prefix, k)] {
			continue // covered by the bucket's comparison below
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	for b := range t.listed {
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(t.s.bucketPrefix(b)), "<", t.rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(t.s.marker(b)), "<", t.rev+1))
	}
	ops := make([]clientv3.Op, 0, len(t.writes)+len(t.deleted))
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v := t.writes[k]; v == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(v)))
		}
	}
	for b := range t.deleted {
		ops = append(ops, clientv3.OpPut(t.s.marker(b), ""))
	}
	ctx, cancel := t.s.callCtx(context.Background())
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return t.s.classify("commit", err)
	}
	t.s.up()
	if !resp.Succeeded {
		return errRetry
	}
	return nil
}

func bucketOfKey(prefix, k string) string {
	b, _, _ := strings.Cut(strings.TrimPrefix(k, prefix), "/")
	return b
}

// Watch streams changes under bucket/prefix; see Watcher. Events come from etcd's watch,
// resumed from the last revision seen if the member serving it goes away or loses its
// leader, so nothing is skipped; only compaction ends it (ErrCompacted).
func (s *Etcd) Watch(ctx context.Context, bucket, prefix string, from int64) <-chan Event {
	out := make(chan Event)
	go func() {
		defer close(out)
		send := func(ev Event) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if err := checkBucket(bucket); err != nil {
			send(Event{Bucket: bucket, Err: err})
			return
		}
		bp := s.bucketPrefix(bucket)
		next := int64(0) // the first revision still to see; 0: from now
		if from > 0 {
			next = from + 1
		}
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			if s.closed.Load() {
				send(Event{Bucket: bucket, Err: ErrClosed})
				return
			}
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
			if next > 0 {
				opts = append(opts, clientv3.WithRev(next))
			}
			for resp := range s.cli.Watch(wctx, bp+prefix, opts...) {
				if resp.CompactRevision != 0 {
					cancel()
					send(Event{Bucket: bucket, Err: fmt.Errorf("%w (revision %d compacted)", ErrCompacted, resp.CompactRevision)})
					return
				}
				if err := resp.Err(); err != nil {
					if ctx.Err() == nil && !s.closed.Load() {
						s.cfg.Log.Warn("etcd watch interrupted; resuming", "bucket", bucket, "revision", next, "err", err)
					}
					break
				}
				if resp.Created && next == 0 {
					next = resp.Header.Revision + 1
				}
				backoff = 100 * time.Millisecond
				for _, e := range resp.Events {
					ev := Event{Bucket: bucket, Key: strings.TrimPrefix(string(e.Kv.Key), bp), Revision: e.Kv.ModRevision}
					if e.Type == clientv3.EventTypeDelete {
						ev.Deleted = true
					} else {
						ev.Value = bytes.Clone(e.Kv.Value)
					}
					if !send(ev) {
						cancel()
						return
					}
					next = e.Kv.ModRevision + 1
				}
			}
			cancel()
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	return out
}

// ErrUnavailable is matched (errors.Is) by every error that says the store cannot serve:
// no member reachable, or no quorum.
var ErrUnavailable = errors.New("store unavailable")

// UnavailableError says, in an operator's words, why the fleet store refused or could not
// finish a call, and what became of a write.
type UnavailableError struct {
	Op     string // "read" or "commit"
	Reason string
	// Unknown is set when a commit was sent but its outcome was not learnt (quorum was
	// lost while it was being replicated): it was applied whole or not at all, and a
	// read once quorum is back tells which. Otherwise nothing was applied.
	Unknown bool
	Err     error
}

func (e *UnavailableError) Error() string {
	outcome := "nothing was changed"
	switch {
	case e.Op == "read":
		outcome = "nothing could be read"
	case e.Unknown:
		outcome = "the change was either applied whole or not at all; look before retrying"
	}
	return fmt.Sprintf("the fleet store (etcd) is unavailable: %s; %s", e.Reason, outcome)
}

func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *UnavailableError) Unwrap() error        { return e.Err }

// As lets the admin API (through catalog.AsError) answer ServiceUnavailableException, an
// HTTP 503, with this message, and lets batch operations report it per item, without
// either knowing about stores.
func (e *UnavailableError) As(target any) bool {
	if p, ok := target.(**catalog.Error); ok {
		*p = catalog.Errorf(catalog.ServiceUnavailableException, "%s", e.Error())
		return true
	}
	return false
}

// classify turns an etcd client error into an UnavailableError when it means the cluster
// cannot serve, and logs the change from serving to not serving once.
func (s *Etcd) classify(op string, err error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	ue := &UnavailableError{Op: op, Err: err}
	ee := rpctypes.Error(err)
	switch {
	case errors.Is(ee, rpctypes.ErrNoLeader), strings.Contains(err.Error(), "proposal dropped"):
		ue.Reason = "no quorum: the etcd members this host reaches have no leader, so a majority of the cluster's members is down or cut off; the store answers again once a majority is back"
	case errors.Is(ee, rpctypes.ErrTimeout), errors.Is(ee, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(ee, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(ee, rpctypes.ErrLeaderChanged):
		ue.Reason = "quorum was lost while the request was being replicated (" + ee.Error() + ")"
		ue.Unknown = op == "commit"
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded:
		ue.Reason = fmt.Sprintf("no etcd member answered within %s (endpoints %s): they are down, unreachable, or without quorum", s.cfg.Timeout, strings.Join(s.cfg.Endpoints, ", "))
		ue.Unknown = op == "commit"
	case status.Code(err) == codes.Unavailable:
		ue.Reason = fmt.Sprintf("no etcd member can be reached (endpoints %s)", strings.Join(s.cfg.Endpoints, ", "))
	default:
		return fmt.Errorf("etcd store %s: %w", op, err)
	}
	if !s.down.Swap(true) {
		s.cfg.Log.Error("fleet store unavailable", "op", op, "reason", ue.Reason, "err", err)
	}
	return ue
}

// up notes a call that succeeded, logging the return of a cluster that was unavailable.
func (s *Etcd) up() {
	if s.down.Load() && s.down.Swap(false) {
		s.cfg.Log.Info("fleet store available again")
	}
}
