// Package e2e tests zeroclient as a zero client meets it: the real hostd with a real
// WorkSpace VM, real slapd and FreeRADIUS, the real zeroclient binary, its reference client,
// and TigerVNC's viewer under Xvfb.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/hostdtest"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/events"
	"deskhost/zeroclient/gateway"
	"deskhost/zeroclient/rfb"
)

type connectResult struct {
	WorkspaceID string `json:"workspaceId"`
	Gateway     string `json:"gateway"`
	SessionID   string `json:"sessionId"`
	ConnectTag  string `json:"connectTag"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
	Colours     int    `json:"colours"`
	PNG         string `json:"png"`
}

// TestEndToEnd: the reference client logs in against slapd with a FreeRADIUS passcode
// (PIN, Access-Challenge, token code), allocates, streams through the gateway and gets a
// frame that is not blank; TigerVNC's viewer then connects with a fresh tag (VeNCrypt
// X509Vnc) and shows the desktop; the used tag is refused; the events, audit trail and
// metrics say what happened; ADMIN_MAINTENANCE and a STOPPED AutoStop WorkSpace get the
// guide's treatment. The WorkSpace VM is booted once for all of it.
func TestEndToEnd(t *testing.T) {
	for _, p := range []string{"Xvfb", "xtigervncviewer", "xwd"} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.Missing(t, p+" is not installed (scripts/packages/zeroclient.txt)")
		}
	}
	e := newEnv(t)
	pwFile := filepath.Join(e.dir, "alice.pw")
	os.WriteFile(pwFile, []byte(alicePW+"\n"), 0o600)
	framePNG := filepath.Join(e.dir, "frame.png")
	connectArgs := func(user string, extra ...string) []string {
		return append([]string{"connect", "--broker", e.brokerURL(), "--ca", e.caFile(), "--user", user, "--password-file", pwFile,
			"--registration-code", e.regCode, "--passcode", alicePIN, "--passcode", aliceCode}, extra...)
	}

	// 1. The reference client: the whole flow, a PNG of the desktop.
	out, err := e.zeroclient(connectArgs("alice", "--png", framePNG)...)
	if err != nil {
		t.Fatalf("zeroclient connect: %v\n%s\nzeroclient log:\n%s", err, out, e.zc.Tail(6000))
	}
	var res connectResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("connect output: %v\n%s", err, out)
	}
	if res.WorkspaceID != e.wsID || res.Colours < 2 || res.Width == 0 {
		t.Fatalf("connect: %+v", res)
	}
	ref := decodePNG(t, framePNG)
	if n := lit(ref, ref.Bounds()); n < 200 {
		t.Errorf("reference frame has only %d lit pixels", n)
	}
	t.Logf("reference client: %dx%d frame, %d+ colours, %d lit pixels, saved %s", res.Width, res.Height, res.Colours, lit(ref, ref.Bounds()), framePNG)

	// 2. A fresh tag (the NETBIOS\user form this time), for TigerVNC with X509Vnc.
	out, err = e.zeroclient(connectArgs(`CORP\alice`, "--no-stream", "--print-tag")...)
	if err != nil {
		t.Fatalf("connect --no-stream: %v", err)
	}
	var alloc connectResult
	json.Unmarshal([]byte(out), &alloc)
	if len(alloc.ConnectTag) != 22 || alloc.WorkspaceID != e.wsID {
		t.Fatalf("allocation: %+v", alloc)
	}
	shot := tigerVNC(t, e, alloc.ConnectTag)
	win := image.Rect(0, 0, res.Width, res.Height)
	if n := lit(shot, win); n < 200 {
		t.Fatalf("TigerVNC's window shows %d lit pixels: blank", n)
	}
	if sim := similarity(ref, shot, win); sim < 0.8 {
		t.Errorf("TigerVNC's window matches the reference frame in only %.0f%% of pixels", sim*100)
	} else {
		t.Logf("TigerVNC's window matches the reference client's frame in %.1f%% of pixels", sim*100)
	}
	if !strings.Contains(e.zc.Output(), "security=X509Vnc") {
		t.Errorf("gateway did not log an X509Vnc session")
	}

	// The viewer has gone: hostd hears that the session ended, and when it began.
	st := e.waitConnection(types.ConnectionStateDisconnected, 10*time.Second)
	if last := aws.ToTime(st.LastKnownUserConnectionTimestamp); time.Since(last) > 2*time.Minute {
		t.Errorf("hostd's last known user connection is %v", last)
	}

	// 3. The used tag is refused (by the full-tag path too), with the gateway's reason.
	tlsCfg, _ := client.TLSConfig(e.caFile(), "127.0.0.1")
	_, err = client.Stream(alloc.Gateway, tlsCfg, rfb.VeNCryptX509Plain, "alice", alloc.ConnectTag, 10*time.Second)
	var refused *rfb.RefusedError
	if !errors.As(err, &refused) || refused.Reason != gateway.ReasonBadTag {
		t.Errorf("reusing the tag: %v", err)
	}
	// Unencrypted RFB is refused.
	checkPlainRFBRefused(t, alloc.Gateway)

	// 4. What people are told: one access event per login, in the guide's form, also on
	// the webhook; failures only in the audit trail.
	if _, err := e.zeroclient("connect", "--broker", e.brokerURL(), "--ca", e.caFile(), "--user", "alice", "--password", "wrong-password", "--no-stream"); err == nil {
		t.Error("a wrong password logged in")
	}
	accessEvents := readEvents(t, filepath.Join(e.dir, "zc", "events", "access.jsonl"))
	if len(accessEvents) != 2 {
		t.Fatalf("%d access events for 2 successful logins", len(accessEvents))
	}
	for _, ev := range accessEvents {
		d := ev.Detail
		if ev.DetailType != "WorkSpaces Access" || d.ActionType != "successfulLogin" || d.ClientIPAddress != "127.0.0.1" ||
			d.ClientPlatform != "Teradici PCoIP Zero Client and Tera2" || d.DirectoryID != directoryID || d.WorkspaceID != e.wsID ||
			d.WorkspacesClientProductName != "Teradici PCoIP Zero Client" {
			t.Errorf("access event: %+v", ev)
		}
		if _, err := time.Parse(events.LoginTimeFormat, d.LoginTime); err != nil || len(d.LoginTime) != len("2018-07-01T17:52:51.595Z") {
			t.Errorf("loginTime %q is not the guide's millisecond form", d.LoginTime)
		}
	}
	audit, _ := os.ReadFile(filepath.Join(e.dir, "zc", "events", "audit.jsonl"))
	if !strings.Contains(string(audit), brokerxml.AuthFailed) {
		t.Errorf("the failed login is not in the audit log:\n%s", audit)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.webhook.got()) < 2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(e.webhook.got()); n != 2 {
		t.Errorf("webhook got %d events, want 2", n)
	}

	// 5. Metrics: two allocations, both connected.
	ws := `workspace_id="` + e.wsID + `"`
	if a, s, f := e.metric("deskhost_zeroclient_connection_attempts_total", ws), e.metric("deskhost_zeroclient_connection_successes_total", ws), e.metric("deskhost_zeroclient_connection_failures_total", ws); a != 2 || s != 2 || f != 0 {
		t.Errorf("ConnectionAttempt %v, ConnectionSuccess %v, ConnectionFailure %v; want 2, 2, 0", a, s, f)
	}
	if d := e.metric("deskhost_zeroclient_session_disconnects_total", ws); d < 2 {
		t.Errorf("SessionDisconnect %v, want ≥ 2", d)
	}
	if n := e.metric("deskhost_zeroclient_session_launch_seconds_count", ws); n != 2 {
		t.Errorf("SessionLaunchTime count %v, want 2", n)
	}

	// 6. Health echo on UDP and TCP, 4172 (gateway port) and 4195 (echo port).
	out, err = e.zeroclient("netcheck", "--host", "127.0.0.1", "--ports", fmt.Sprintf("%d,%d", e.gwPort, e.echoPort), "--count", "2")
	if err != nil || strings.Count(out, ": good for") != 4 {
		t.Errorf("netcheck: %v\n%s", err, out)
	}

	t.Run("measure", func(t *testing.T) { measure(t, e) })

	// 6b. IP access control groups are hostd's catalog records, and a change applies live.
	t.Run("ipgroups", func(t *testing.T) { liveIPGroups(t, e, connectArgs) })

	// 7. ADMIN_MAINTENANCE: users cannot log in to the WorkSpace.
	setState(t, e, types.TargetWorkspaceStateAdminMaintenance)
	_, err = e.zeroclient(connectArgs("alice", "--no-stream")...)
	if err == nil || !strings.Contains(err.Error(), brokerxml.AllocMaintenance) || !strings.Contains(err.Error(), broker.MsgMaintenance) {
		t.Errorf("login during ADMIN_MAINTENANCE: %v", err)
	}
	setState(t, e, types.TargetWorkspaceStateAvailable)

	// 8. A STOPPED AutoStop WorkSpace is started by allocate-resource and then streamed.
	if _, err := e.api().StopWorkspaces(context.Background(), &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: aws.String(e.wsID)}}}); err != nil {
		t.Fatal(err)
	}
	e.waitState(types.WorkspaceStateStopped, 90*time.Second)
	start := time.Now()
	out, err = e.zeroclient(connectArgs("alice", "--timeout", "90s")...)
	if err != nil {
		t.Fatalf("login to a STOPPED AutoStop WorkSpace: %v\n%s", err, e.zc.Tail(6000))
	}
	json.Unmarshal([]byte(out), &res)
	if res.Colours < 2 {
		t.Errorf("after the start: %+v", res)
	}
	t.Logf("STOPPED → started → streamed in %s (the guide: typically under 90 s)", time.Since(start).Round(time.Second))
}

// liveIPGroups: a group allowing this host's address is created and associated through
// hostd's API; a session streams under it; the rule is revoked, and within 1 s the live
// session is cut by zeroclient's gateway and a new login from the address is refused with
// the guide's message (the associated group, now empty, blocks all). Deleting the group
// while associated is refused; once disassociated and deleted, logins work again.
func liveIPGroups(t *testing.T, e *env, connectArgs func(string, ...string) []string) {
	ctx := context.Background()
	api := e.api()
	g, err := api.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("loopback"),
		UserRules: []types.IpRuleItem{{IpRule: aws.String("127.0.0.0/8"), RuleDesc: aws.String("this host")}}})
	if err != nil {
		t.Fatal(err)
	}
	gid := aws.ToString(g.GroupId)
	if _, err := api.AssociateIpGroups(ctx, &workspaces.AssociateIpGroupsInput{DirectoryId: aws.String(directoryID), GroupIds: []string{gid}}); err != nil {
		t.Fatal(err)
	}
	_, err = api.DeleteIpGroup(ctx, &workspaces.DeleteIpGroupInput{GroupId: aws.String(gid)})
	if err == nil || !strings.Contains(err.Error(), "ResourceAssociatedException") {
		t.Errorf("deleting an associated group: %v", err)
	}

	// A live session from 127.0.0.1, which the group allows.
	out, err := e.zeroclient(connectArgs("alice", "--no-stream", "--print-tag")...)
	if err != nil {
		t.Fatalf("login allowed by the group: %v\n%s", err, e.zc.Tail(4000))
	}
	var alloc connectResult
	json.Unmarshal([]byte(out), &alloc)
	tlsCfg, _ := client.TLSConfig(e.caFile(), "127.0.0.1")
	c, err := net.DialTimeout("tcp", alloc.Gateway, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc, err := rfb.ClientVeNCrypt(c, tlsCfg, rfb.VeNCryptX509Plain, "alice", alloc.ConnectTag)
	if err != nil {
		t.Fatal(err)
	}
	si, err := rfb.ClientInit(tc, true)
	if err != nil {
		t.Fatal(err)
	}
	frame := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
	rfb.RequestRawFrame(tc, si.Width, si.Height, false)
	if _, err := rfb.ReadUpdate(tc, frame); err != nil {
		t.Fatalf("streaming under the group: %v", err)
	}
	e.waitConnection(types.ConnectionStateConnected, 10*time.Second)
	ended := make(chan time.Time, 1)
	go func() {
		// Keep the session busy with frame requests until it ends.
		go func() {
			for rfb.RequestRawFrame(tc, si.Width, si.Height, true) == nil {
				time.Sleep(200 * time.Millisecond)
			}
		}()
		tc.SetReadDeadline(time.Now().Add(30 * time.Second))
		io.Copy(io.Discard, tc)
		ended <- time.Now()
	}()

	// Revoke the rule that let the session in (the session is still streaming).
	time.Sleep(500 * time.Millisecond)
	select {
	case <-ended:
		t.Fatalf("the session ended before any revocation\nzeroclient:\n%s", e.zc.Tail(4000))
	default:
	}
	revoked := time.Now()
	if _, err := api.RevokeIpRules(ctx, &workspaces.RevokeIpRulesInput{GroupId: aws.String(gid), UserRules: []string{"127.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ended:
		d := at.Sub(revoked)
		if d < 0 || d > time.Second {
			t.Errorf("the live session was cut %v after the revocation; the bound is 1 s", d)
		}
		// zeroclient logs the cut before it closes the connection, but its log reaches
		// this process through a pipe and a copying goroutine: give it a moment.
		logged := time.Now().Add(2 * time.Second)
		for !strings.Contains(e.zc.Output(), "session cut: the client address is no longer allowed") && time.Now().Before(logged) {
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(e.zc.Output(), "session cut: the client address is no longer allowed") {
			t.Errorf("zeroclient's gateway did not log the cut:\n%s", e.zc.Tail(4000))
		}
		t.Logf("revoked rule → live session cut in %v", d.Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("the live session from a revoked range was not cut\nzeroclient:\n%s", e.zc.Tail(4000))
	}
	_, err = e.zeroclient(connectArgs("alice", "--no-stream")...)
	if err == nil || !strings.Contains(err.Error(), broker.MsgNotAuthorized) {
		t.Errorf("login from the revoked range: %v", err)
	}
	t.Logf("revoked rule → login refused %v after the revocation (the login's own round trips included)", time.Since(revoked).Round(time.Millisecond))

	// Back as it was: no group, every address allowed.
	if _, err := api.DisassociateIpGroups(ctx, &workspaces.DisassociateIpGroupsInput{DirectoryId: aws.String(directoryID), GroupIds: []string{gid}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DeleteIpGroup(ctx, &workspaces.DeleteIpGroupInput{GroupId: aws.String(gid)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err = e.zeroclient(connectArgs("alice", "--no-stream")...); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("login after the group was removed: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func setState(t *testing.T, e *env, s types.TargetWorkspaceState) {
	t.Helper()
	if _, err := e.api().ModifyWorkspaceState(context.Background(), &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String(e.wsID), WorkspaceState: s}); err != nil {
		t.Fatalf("ModifyWorkspaceState %s: %v", s, err)
	}
}

// checkPlainRFBRefused: a client that asks for security type None or VNC without TLS gets
// a failure with the reason, never a desktop.
func checkPlainRFBRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var v [12]byte
	c.Read(v[:])
	c.Write([]byte(rfb.ProtocolVersion38))
	var types [2]byte
	if _, err := c.Read(types[:]); err != nil || types != [2]byte{1, rfb.SecVeNCrypt} {
		t.Errorf("security types offered: %v (%v); want only VeNCrypt", types, err)
	}
	c.Write([]byte{rfb.SecNone})
	var res [4]byte
	c.Read(res[:])
	if res != [4]byte{0, 0, 0, 1} {
		t.Errorf("choosing None got result %v, want failed", res)
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// lit counts the pixels in r that are not black.
func lit(img image.Image, r image.Rectangle) int {
	n := 0
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if cr, cg, cb, _ := img.At(x, y).RGBA(); cr|cg|cb > 0x1000 {
				n++
			}
		}
	}
	return n
}

// similarity is the fraction of pixels in r that are (nearly) the same in a and b.
func similarity(a, b image.Image, r image.Rectangle) float64 {
	same, total := 0, 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			d := absDiff(ar, br) + absDiff(ag, bg) + absDiff(ab, bb)
			if d < 3*0x1000 {
				same++
			}
			total++
		}
	}
	if total == 0 {
		return 0
	}
	return float64(same) / float64(total)
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

// tigerVNC runs TigerVNC's viewer under its own Xvfb with the connect tag as the VNC
// password (VeNCrypt X509Vnc, trusting the broker's CA), waits for the desktop to show,
// and returns a screenshot of the screen (the viewer's window is at +0+0).
func tigerVNC(t *testing.T, e *env, tag string) image.Image {
	t.Helper()
	display := ""
	for n := 50 + os.Getpid()%40; n < 200; n++ { // a display nobody else holds
		if _, err := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n)); os.IsNotExist(err) {
			display = fmt.Sprintf(":%d", n)
			break
		}
	}
	xvfb := hostdtest.Start(t, "Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-br")
	defer xvfb.Stop()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat("/tmp/.X11-unix/X" + display[1:]); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Xvfb did not start: %s", xvfb.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	home := t.TempDir()
	viewer := exec.Command("xtigervncviewer", "-SecurityTypes", "X509Vnc", "-X509CA", e.caFile(), "-geometry", "+0+0",
		"-Shared", "-AlertOnFatalError=0", "-ReconnectOnError=0", fmt.Sprintf("127.0.0.1::%d", e.gwPort))
	viewer.Env = []string{"DISPLAY=" + display, "HOME=" + home, "PATH=/usr/bin:/bin", "VNC_PASSWORD=" + tag}
	var vout bytes.Buffer
	viewer.Stdout, viewer.Stderr = &vout, &vout
	if err := viewer.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		viewer.Process.Kill()
		viewer.Wait()
	}()
	deadline = time.Now().Add(45 * time.Second)
	var shot image.Image
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		xwd := exec.Command("xwd", "-root", "-silent")
		xwd.Env = []string{"DISPLAY=" + display}
		b, err := xwd.Output()
		if err != nil {
			continue
		}
		if shot, err = readXWD(b); err != nil {
			t.Fatal(err)
		}
		if lit(shot, image.Rect(0, 0, 720, 400)) > 200 && strings.Contains(vout.String(), "Connected to host") {
			var buf bytes.Buffer
			png.Encode(&buf, shot)
			os.WriteFile(filepath.Join(e.dir, "tigervnc.png"), buf.Bytes(), 0o644)
			if keep := os.Getenv("ZEROCLIENT_E2E_KEEP"); keep != "" {
				os.WriteFile(filepath.Join(keep, "tigervnc.png"), buf.Bytes(), 0o644)
				b, _ := os.ReadFile(filepath.Join(e.dir, "frame.png"))
				os.WriteFile(filepath.Join(keep, "reference-frame.png"), b, 0o644)
			}
			t.Logf("TigerVNC:\n%s", strings.TrimSpace(vout.String()))
			// While the viewer streams, hostd knows the user is connected (zeroclient's
			// presence report: AutoStop's idle timer and DescribeWorkspacesConnectionStatus).
			e.waitConnection(types.ConnectionStateConnected, 10*time.Second)
			return shot
		}
	}
	t.Fatalf("TigerVNC showed no desktop within 45 s:\n%s\nzeroclient:\n%s", vout.String(), e.zc.Tail(6000))
	return nil
}

func readEvents(t *testing.T, path string) []events.Envelope {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Envelope
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var ev events.Envelope
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}
