package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"deskhost/hostd/etcdmember"
)

// BenchmarkMemberLoss measures what losing one of 3 etcd members costs hostd's writes: a
// writer commits Updates back to back while a member is killed (SIGKILL), first the
// leader, then a follower. Reported: the longest time between two successful commits
// around the kill (the stall), the writes that failed meanwhile, and the same with
// nothing killed as the baseline, in one run.
func BenchmarkMemberLoss(b *testing.B) {
	c := startCluster(b)
	s := openEtcd(b, c, "/loss/")
	defer s.Close()
	cli, err := c.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	var stall = map[string]time.Duration{}
	var failed = map[string]int{}
	for i := 0; i < b.N; i++ {
		for _, victim := range []string{"none", "leader", "follower"} {
			st, nf := writeThrough(b, s, func() {
				if victim == "none" {
					return
				}
				m := member(b, c, cli, victim == "leader")
				if err := m.Kill(); err != nil {
					b.Fatal(err)
				}
				go func() { // back after 4 s, as a restarted host's member would be
					time.Sleep(4 * time.Second)
					if err := m.Restart(); err != nil {
						b.Error(err)
					}
				}()
			})
			stall[victim] = max(stall[victim], st)
			failed[victim] += nf
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			waitAllServing(b, ctx, c)
			cancel()
		}
	}
	for _, v := range []string{"none", "leader", "follower"} {
		b.ReportMetric(float64(stall[v].Milliseconds()), v+"-stall-ms")
		b.ReportMetric(float64(failed[v])/float64(b.N), v+"-failed-writes")
	}
}

// writeThrough commits Updates back to back for 8 s, calling event after 1 s, and returns
// the longest gap between successful commits and the number that failed.
func writeThrough(b *testing.B, s *Etcd, event func()) (time.Duration, int) {
	var gap time.Duration
	failed := 0
	last := time.Now()
	stop := time.After(8 * time.Second)
	fired := time.After(time.Second)
	for n := 0; ; n++ {
		select {
		case <-stop:
			return gap, failed
		case <-fired:
			event()
			fired = nil
		default:
		}
		err := s.Update(func(tx Tx) error { return tx.Put("loss", "k", []byte(strconv.Itoa(n))) })
		if err != nil {
			failed++
		} else {
			gap = max(gap, time.Since(last))
			last = time.Now()
		}
	}
}

// member returns the cluster's leader, or a follower.
func member(b *testing.B, c *etcdmember.Cluster, cli *clientv3.Client, leader bool) *etcdmember.Member {
	b.Helper()
	for _, m := range c.Members {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, m.Config.ClientURL)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if (st.Leader == st.Header.MemberId) == leader {
			return m
		}
	}
	b.Fatal("no such member")
	return nil
}

// waitAllServing waits until every member answers and the cluster serves.
func waitAllServing(b *testing.B, ctx context.Context, c *etcdmember.Cluster) {
	b.Helper()
	for _, m := range c.Members {
		cl, err := etcdmember.Client([]string{m.Config.ClientURL}, c.CAFile, c.ClientCert, c.ClientKey)
		if err != nil {
			b.Fatal(err)
		}
		err = etcdmember.WaitServing(ctx, cl)
		cl.Close()
		if err != nil {
			b.Fatalf("%s: %v\n%s", m.Config.Name, err, m.LogTail())
		}
	}
}
