package broker_test

import (
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

// TestSessionResume: the directory's session resume timeout (the guide's 20 minutes by
// default, 5 minutes set on one directory). A client that comes back with its session
// cookie within the timeout is given its WorkSpace without logging in again; after it,
// allocate-resource is refused with a message saying why, and a full login works.
func TestSessionResume(t *testing.T) {
	dirs := []catalog.Directory{
		{ID: "d-0000000007", Name: "plain.example.com", Users: users("paul")},
		{ID: "d-0000000002", Name: "office.example.com", Users: users("erin"),
			Login: catalog.Login{Session: catalog.SessionPolicy{ResumeTimeoutMinutes: 5}}},
	}
	ws := staticWorkspaces{"d-0000000007/paul": {ID: "ws-paul000001", State: "AVAILABLE", Protocol: "PCOIP"},
		"d-0000000002/erin": {ID: "ws-erin000001", State: "AVAILABLE", Protocol: "PCOIP"}}
	clk := &clock{t: time.Now()}
	r := newRigWith(t, server.Options{Workspaces: ws, Catalog: server.StaticCatalog(dirs), Now: clk.now})
	for _, tc := range []struct {
		user, domain, ws string
		timeout          time.Duration
	}{
		{"paul", "plain.example.com", "ws-paul000001", 20 * time.Minute},
		{"erin", "office.example.com", "ws-erin000001", 5 * time.Minute},
	} {
		b := r.broker()
		if _, err := b.Hello(client.Identity); err != nil {
			t.Fatal(err)
		}
		if err := b.Login(tc.user, pw, tc.domain, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Allocate(tc.ws); err != nil {
			t.Fatalf("%s: first allocation: %v", tc.user, err)
		}
		// Disconnected for just under the timeout: the same session resumes, no credentials.
		clk.add(tc.timeout - time.Second)
		if a, err := b.Allocate(tc.ws); err != nil || a.Target == nil {
			t.Fatalf("%s: reconnect after %s (timeout %s): %+v %v", tc.user, tc.timeout-time.Second, tc.timeout, a, err)
		}
		// Away for the whole timeout: the session is gone, and the client is told why.
		clk.add(tc.timeout)
		a, err := b.Allocate(tc.ws)
		if err == nil || a.Result.ID != brokerxml.AllocNotAuthed || a.Result.Str != broker.MsgSessionEnded(tc.timeout) {
			t.Fatalf("%s: reconnect after %s: %+v %v; want %s %q", tc.user, tc.timeout, a, err, brokerxml.AllocNotAuthed, broker.MsgSessionEnded(tc.timeout))
		}
		// Asking again: the session is simply not there.
		if a, _ := b.Allocate(tc.ws); a == nil || a.Result.Str != broker.MsgNotAuthed {
			t.Errorf("%s: second refused allocation: %+v", tc.user, a)
		}
		// A new login works.
		if _, err := b.Hello(client.Identity); err != nil {
			t.Fatal(err)
		}
		if err := b.Login(tc.user, pw, tc.domain, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Allocate(tc.ws); err != nil {
			t.Fatalf("%s: allocation after logging in again: %v", tc.user, err)
		}
	}
	if got := broker.MsgSessionEnded(20 * time.Minute); got != "Your session ended because you were disconnected for more than 20 minutes, the session resume timeout your administrator set. Log in again." {
		t.Errorf("message: %q", got)
	}
}

var _ workspaces.Backend = staticWorkspaces{}
