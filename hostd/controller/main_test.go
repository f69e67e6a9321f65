package controller

import (
	"os"
	"testing"

	"deskhost/hostd/etcdmember"
)

// TestMain lets this test binary serve as the children the tests start: etcd members
// (etcdmember) and an unprivileged socket client (confine_test.go).
func TestMain(m *testing.M) {
	etcdmember.RunIfChild()
	dialIfChild()
	code := m.Run()
	removeDialer()
	os.Exit(code)
}
