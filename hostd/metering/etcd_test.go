package metering

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/etcdmember/etcdtest"
	"deskhost/hostd/store"
)

func TestMain(m *testing.M) {
	etcdmember.RunIfChild() // the etcd members TestTwoRecordersEtcd starts are this binary
	os.Exit(m.Run())
}

// TestTwoRecordersEtcd: two hosts' recorders, each with its own etcd client, sample the
// same hour concurrently on a real 3-member cluster: etcd's compare-and-set leaves one
// entry per WorkSpace and hour.
func TestTwoRecordersEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	c := etcdtest.Cluster(t, 90*time.Second)
	open := func() store.Store {
		s, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints(), CAFile: c.CAFile, CertFile: c.ClientCert, KeyFile: c.ClientKey,
			Prefix: "/metering/", Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	twoRecordersOn(t, a, b)
}
