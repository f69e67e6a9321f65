package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"deskhost/hostd/agent"
	"deskhost/internal/runpaths"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/web"
)

const (
	webDirID = "d-00000000a7"
	amyPW    = "Web-Acc3ss!pw"
)

// webDirectory is a local directory with TOTP MFA (web device access left at its default,
// DENY) and its user amy.
func webDirectory(*env) string {
	return "id: " + webDirID + `
name: web.example.com
alias: webcorp
users: [{userName: amy, firstName: Amy, lastName: Test, email: amy@example.com}]
login:
  type: local
  netbiosName: WEBCORP
  mfa: {type: totp}
`
}

// TestWebAccessInBrowser: Debian's chromium (driven by chromedp) logs in to Web Access
// with a password and a TOTP code, opens the desktop of a real WorkSpace VM with noVNC
// over the tag-authorized WebSocket, and types into it: Alt+SysRq+H typed in the browser
// reaches the guest kernel, whose SysRq help appears on the guest's serial console. The
// clipboard crosses both ways: text sent from the page's clipboard box is read back from
// the guest agent, and text set in the guest appears in the box. A screenshot is kept. Refused: the directory's default (web access DENY), an address
// outside the directory's IP access control groups, a replayed WebSocket tag, and
// cross-site requests (a form posted from another origin, a request without the CSRF
// token, a WebSocket from another origin).
func TestWebAccessInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Missing(t, "chromium is not installed (scripts/packages/zeroclient.txt)")
	}
	e := newEnvFor(t, spec{directory: webDirectory, user: "amy"})
	ctx := context.Background()
	api := e.api()

	// amy is invited and activates: a password and her TOTP secret.
	out, err := e.zeroclient("invite", "--socket", filepath.Join(e.dir, "zc", "admin.sock"), "--directory", webDirID, "--user", "amy")
	if err != nil {
		t.Fatalf("invite: %v", err)
	}
	var inv server.InviteResponse
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatal(err)
	}
	out, err = e.zeroclient("activate", "--broker", e.brokerURL(), "--ca", e.caFile(), "--code", inv.ActivationCode, "--password", amyPW)
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	var act struct {
		TOTPSecret string `json:"totpSecret"`
	}
	if err := json.Unmarshal([]byte(out), &act); err != nil || act.TOTPSecret == "" {
		t.Fatalf("activation gave no TOTP secret: %v\n%s", err, out)
	}

	// The browser reaches zeroclient through a TCP relay the test can cut (a network drop),
	// and trusts exactly zeroclient's certificate (its public key), nothing else.
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", e.brokerPort))
	base := "https://" + proxy.addr
	spki := serverSPKI(t, fmt.Sprintf("127.0.0.1:%d", e.brokerPort))
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("ignore-certificate-errors-spki-list", spki), chromedp.WindowSize(1100, 900))
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelB()
	// The first run starts the browser, which lives as long as that run's context: bctx
	// itself, not a context with a timeout.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	run := func(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			shot(t, bctx, "failed-"+strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("%s: %v\nzeroclient:\n%s", what, err, e.zc.Tail(4000))
		}
	}
	var errText string
	submitLogin := func() {
		t.Helper()
		run("login form", 30*time.Second,
			chromedp.Navigate(base+"/web/"),
			chromedp.WaitVisible(chromedp.CSS("#signin")),
			chromedp.SendKeys(chromedp.CSS("#code"), e.regCode),
			chromedp.SendKeys(chromedp.CSS("#user"), "amy"),
			chromedp.SendKeys(chromedp.CSS("#password"), amyPW),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#error, #passcode")))
		errText = ""
		errText = evalJS[string](t, bctx, `(document.querySelector('#error') || {}).textContent || ""`)
	}
	auditHas := func(reason string) bool {
		b, _ := os.ReadFile(filepath.Join(e.dir, "zc", "events", "audit.jsonl"))
		return bytes.Contains(b, []byte(reason))
	}

	// 1. Web access is DENY by default: the guide's message, before any credential is
	// looked at.
	submitLogin()
	if errText != broker.MsgNotAuthorized {
		t.Fatalf("login with web access at its default: %q, want %q", errText, broker.MsgNotAuthorized)
	}
	if !auditHas("device type web is not allowed") {
		t.Errorf("the audit trail does not say web access was denied")
	}
	t.Log("web access denied by the directory's default: refused with the guide's message")

	// 2. Web access allowed, but an IP access control group that does not hold 127.0.0.1.
	if _, err := api.ModifyWorkspaceAccessProperties(ctx, &workspaces.ModifyWorkspaceAccessPropertiesInput{ResourceId: aws.String(webDirID),
		WorkspaceAccessProperties: &types.WorkspaceAccessProperties{DeviceTypeWeb: types.AccessPropertyValueAllow}}); err != nil {
		t.Fatal(err)
	}
	g, err := api.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("elsewhere"),
		UserRules: []types.IpRuleItem{{IpRule: aws.String("192.0.2.0/24"), RuleDesc: aws.String("not this host")}}})
	if err != nil {
		t.Fatal(err)
	}
	gid := aws.ToString(g.GroupId)
	if _, err := api.AssociateIpGroups(ctx, &workspaces.AssociateIpGroupsInput{DirectoryId: aws.String(webDirID), GroupIds: []string{gid}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !auditHas("client address not in the directory's IP access control groups") {
		if time.Now().After(deadline) {
			t.Fatalf("a login from outside the IP groups was not refused for them (last message %q)\n%s", errText, e.zc.Tail(3000))
		}
		submitLogin()
		if errText != broker.MsgNotAuthorized {
			t.Fatalf("login from outside the directory's IP groups: %q", errText)
		}
	}
	t.Log("address outside the IP access control groups: refused with the guide's message")
	if _, err := api.DisassociateIpGroups(ctx, &workspaces.DisassociateIpGroupsInput{DirectoryId: aws.String(webDirID), GroupIds: []string{gid}}); err != nil {
		t.Fatal(err)
	}

	// 3. Password, then the TOTP step (once the catalog change has reached zeroclient).
	deadline = time.Now().Add(15 * time.Second)
	var loginStart time.Time
	for {
		loginStart = time.Now()
		if submitLogin(); errText == "" {
			break
		}
		if errText != broker.MsgNotAuthorized || time.Now().After(deadline) {
			t.Fatalf("login after the IP group was disassociated: %q", errText)
		}
		time.Sleep(300 * time.Millisecond)
	}
	code, err := auth.TOTPCode(act.TOTPSecret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mfaStart := time.Now()
	run("MFA step and WorkSpace page", 60*time.Second,
		chromedp.SendKeys(chromedp.CSS("#passcode"), code),
		chromedp.Click(chromedp.CSS("#verify")),
		chromedp.WaitVisible(chromedp.CSS("#ws-state")))
	state := evalJS[string](t, bctx, `document.querySelector('#ws-state').textContent`)
	if state != "AVAILABLE" {
		t.Fatalf("the WorkSpace page says %q", state)
	}
	openStart := time.Now()
	run("open the desktop", 60*time.Second,
		chromedp.Click(chromedp.CSS("#open")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="connected"] #screen canvas`)))
	// The first frame: the canvas shows the guest's screen (lit pixels).
	var litPixels int
	deadline = time.Now().Add(60 * time.Second)
	for {
		litPixels = evalJS[int](t, bctx, canvasLitJS)
		if litPixels > 200 {
			break
		}
		if time.Now().After(deadline) {
			shot(t, bctx, "blank")
			t.Fatalf("the desktop's canvas is still blank (%d lit pixels)\n%s", litPixels, e.zc.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	browserFirstFrame := time.Since(loginStart)
	t.Logf("browser: login page → first frame on the canvas %v (MFA submit → first frame %v; \"Open desktop\" → first frame %v; %d lit pixels)",
		browserFirstFrame.Round(time.Millisecond), time.Since(mfaStart).Round(time.Millisecond), time.Since(openStart).Round(time.Millisecond), litPixels)
	e.waitConnection(types.ConnectionStateConnected, 10*time.Second)
	if !strings.Contains(e.zc.Output(), "security=WebSocket") {
		t.Errorf("the gateway did not log a WebSocket session")
	}

	// 4. Typing: Alt+SysRq+H in the browser reaches the guest's kernel, which prints its
	// SysRq help on the serial console (the tiny desktop has no other reader of keys).
	serial := runpaths.SerialLog(e.dir, e.wsID)
	before, _ := os.ReadFile(serial)
	run("focus the desktop", 10*time.Second, chromedp.Click(chromedp.CSS("#screen canvas")))
	keys := []input.DispatchKeyEventParams{
		key(input.DispatchKeyEventTypeKeyDown, "Alt", "AltLeft", 18, modAlt),
		key(input.DispatchKeyEventTypeKeyDown, "PrintScreen", "PrintScreen", 44, modAlt),
		key(input.DispatchKeyEventTypeKeyDown, "h", "KeyH", 72, modAlt),
		key(input.DispatchKeyEventTypeKeyUp, "h", "KeyH", 72, modAlt),
		key(input.DispatchKeyEventTypeKeyUp, "PrintScreen", "PrintScreen", 44, modAlt),
		key(input.DispatchKeyEventTypeKeyUp, "Alt", "AltLeft", 18, 0),
	}
	typed := time.Now()
	for _, k := range keys {
		if _, err := chromedp.Call(bctx, input.DispatchKeyEvent, k); err != nil {
			t.Fatalf("key %s %s: %v", k.Type, k.Code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		now, _ := os.ReadFile(serial)
		if len(now) > len(before) && bytes.Contains(now[len(before):], []byte("sysrq: HELP")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Alt+SysRq+H typed in the browser never reached the guest (no SysRq help on its serial console %s)\nzeroclient:\n%s", serial, e.zc.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("keystrokes typed in the browser reached the guest kernel in %v (SysRq help on its serial console)", time.Since(typed).Round(time.Millisecond))

	// Clipboard, both ways, through the domain's qemu-vdagent channel and the guest agent's
	// clipboard peer. Text pasted into the page's clipboard box and sent arrives in the
	// guest (read back through the guest agent); text set in the guest appears in the box.
	toGuest := "pasted in the browser ✓\nline two " + e.wsID
	run("send the clipboard box", 10*time.Second,
		chromedp.Click(chromedp.CSS("#clipboard-box summary")),
		chromedp.WaitVisible(chromedp.CSS("#clipboard")),
		chromedp.SetValue(chromedp.CSS("#clipboard"), toGuest),
		chromedp.Click(chromedp.CSS("#clipboard-send")))
	pasted := time.Now()
	var inGuest string
	for inGuest != toGuest {
		if time.Since(pasted) > 30*time.Second {
			t.Fatalf("the guest's clipboard holds %q, want the text sent from the browser %q\n%s", inGuest, toGuest, tailFile(serial, 2000))
		}
		time.Sleep(200 * time.Millisecond)
		inGuest, err = guestClipboard(agentSocket(e), "")
		if err != nil {
			t.Fatalf("reading the guest's clipboard: %v", err)
		}
	}
	t.Logf("clipboard browser → guest: %d bytes in %v", len(toGuest), time.Since(pasted).Round(time.Millisecond))
	fromGuest := "copied in the guest ✓ " + e.wsID
	set := time.Now()
	if _, err := guestClipboard(agentSocket(e), fromGuest); err != nil {
		t.Fatalf("setting the guest's clipboard: %v", err)
	}
	for evalJS[string](t, bctx, `document.querySelector('#clipboard').value`) != fromGuest {
		if time.Since(set) > 30*time.Second {
			t.Fatalf("the page's clipboard box shows %q, want the guest's %q", evalJS[string](t, bctx, `document.querySelector('#clipboard').value`), fromGuest)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("clipboard guest → browser: %d bytes in %v", len(fromGuest), time.Since(set).Round(time.Millisecond))

	// Resize to the window: in a window narrower than the desktop, the whole desktop is
	// scaled to fit; back in the wide window it grows again.
	canvasWidth := func() float64 {
		return evalJS[float64](t, bctx, `document.querySelector('#screen canvas').getBoundingClientRect().width`)
	}
	wide := canvasWidth()
	run("a narrow window", 10*time.Second, chromedp.EmulateViewport(480, 700))
	deadline = time.Now().Add(10 * time.Second)
	for w := canvasWidth(); w <= 0 || w > 480; w = canvasWidth() {
		if time.Now().After(deadline) {
			t.Fatalf("in a 480 px window the desktop is %.0f px wide (was %.0f): not scaled to the window", w, wide)
		}
		time.Sleep(50 * time.Millisecond)
	}
	narrow := canvasWidth()
	run("the wide window again", 10*time.Second, chromedp.EmulateViewport(1100, 900))
	deadline = time.Now().Add(10 * time.Second)
	for canvasWidth() <= narrow {
		if time.Now().After(deadline) {
			t.Fatalf("back in a 1100 px window the desktop stayed %.0f px wide", canvasWidth())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("resize: the desktop is %.0f px wide in the window, %.0f px in a 480 px window, %.0f px again after", wide, narrow, canvasWidth())

	// 5. The artifact.
	png := shot(t, bctx, "desktop")
	if img := decodePNG(t, png); lit(img, img.Bounds()) < 200 {
		t.Errorf("the screenshot %s is blank", png)
	}

	// 6. One access event for the login, with the Web platform.
	var webEvents int
	for _, ev := range readEvents(t, filepath.Join(e.dir, "zc", "events", "access.jsonl")) {
		d := ev.Detail
		if d.ClientPlatform == "Web" && d.WorkspacesClientProductName == "WorkSpaces Web client" && d.DirectoryID == webDirID &&
			d.WorkspaceID == e.wsID && d.ClientIPAddress == "127.0.0.1" && d.ActionType == "successfulLogin" {
			webEvents++
		}
	}
	if webEvents != 1 {
		t.Errorf("%d access events with the Web platform for one web login", webEvents)
	}

	// 7. A WebSocket tag works once: the second use of the same tag is refused.
	replay := evalJS[[]string](t, bctx, replayJS, chromedp.EvalAwaitPromise)
	if len(replay) != 2 || replay[0] != "open" || replay[1] != "refused" {
		t.Errorf("a tag used twice: %v, want [open refused]", replay)
	}
	if !strings.Contains(e.zc.Output(), "web: WebSocket refused") {
		t.Errorf("zeroclient did not log the replayed tag's refusal")
	}
	// A network drop (the relay resets every connection): the page reconnects by itself,
	// with a new tag, within the web session.
	sessions := strings.Count(e.zc.Output(), "security=WebSocket")
	allocated := strings.Count(e.zc.Output(), "web: allocated")
	dropped := time.Now()
	if n := proxy.cut(); n == 0 {
		t.Fatal("no connection to cut")
	}
	deadline = time.Now().Add(30 * time.Second)
	for strings.Count(e.zc.Output(), "security=WebSocket") <= sessions || strings.Count(e.zc.Output(), "web: allocated") <= allocated ||
		evalJS[string](t, bctx, `document.body.dataset.state`) != "connected" {
		if time.Now().After(deadline) {
			t.Fatalf("the desktop page did not reconnect after a network drop (state %q)\n%s",
				evalJS[string](t, bctx, `document.body.dataset.state`), e.zc.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("network drop → the desktop page reconnected by itself in %v", time.Since(dropped).Round(time.Millisecond))

	// Web Access withdrawn through the API while the desktop is open: the live web session
	// is cut, and the page says the service ended it (no reconnect). Then allowed again.
	setWeb := func(v types.AccessPropertyValue) {
		t.Helper()
		applied := strings.Count(e.zc.Output(), "catalog applied")
		if _, err := api.ModifyWorkspaceAccessProperties(ctx, &workspaces.ModifyWorkspaceAccessPropertiesInput{ResourceId: aws.String(webDirID),
			WorkspaceAccessProperties: &types.WorkspaceAccessProperties{DeviceTypeWeb: v}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(e.zc.Output(), "catalog applied") == applied {
			if time.Now().After(deadline) {
				t.Fatalf("zeroclient did not apply the catalog after DeviceTypeWeb=%s", v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	withdrawn := time.Now()
	setWeb(types.AccessPropertyValueDeny)
	deadline = time.Now().Add(10 * time.Second)
	for evalJS[string](t, bctx, `document.body.dataset.state`) != "ended" {
		if time.Now().After(deadline) {
			t.Fatalf("Web Access withdrawn, but the page is %q, want ended\n%s", evalJS[string](t, bctx, `document.body.dataset.state`), e.zc.Tail(2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(e.zc.Output(), "session cut: the directory no longer allows Web Access") {
		t.Errorf("zeroclient did not log why the web session was cut")
	}
	t.Logf("Web Access withdrawn through the API → the live web session ended in %v", time.Since(withdrawn).Round(time.Millisecond))
	setWeb(types.AccessPropertyValueAllow)

	// 8. Cross-site requests. (a) A page of another origin posts the logout form: the
	// browser sends no cookie (SameSite=Strict) and zeroclient refuses it anyway by its
	// Origin; amy is still logged in.
	evil := evilSite(t, base)
	run("cross-site form", 30*time.Second, chromedp.Navigate(evil), chromedp.WaitReady(chromedp.CSS("body")), chromedp.Sleep(2*time.Second))
	if !strings.Contains(e.zc.Output(), "web: cross-site request refused") {
		t.Errorf("zeroclient did not refuse the cross-site form by its origin\n%s", e.zc.Tail(2000))
	}
	run("still logged in", 30*time.Second, chromedp.Navigate(base+"/web/workspace"), chromedp.WaitVisible(chromedp.CSS("#ws-state")))
	// (b) With amy's own cookie: another Origin, or no CSRF token, is 403; both right is 200.
	csrf := evalJS[string](t, bctx, `document.querySelector('meta[name="csrf-token"]').content`)
	cookies, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/web/"}})
	if err != nil {
		t.Fatal(err)
	}
	var cookie *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == web.CookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.Secure || !cookie.HTTPOnly || cookie.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("the session cookie: %+v", cookie)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, // the SPKI was checked above
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(path, origin, token string) int {
		req, _ := http.NewRequest(http.MethodPost, base+path, nil)
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if token != "" {
			req.Header.Set(web.CSRFHeader, token)
		}
		r, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if c := post("/web/connect", "https://evil.example", csrf); c != http.StatusForbidden {
		t.Errorf("POST /web/connect from another origin: %d", c)
	}
	if c := post("/web/connect", base, ""); c != http.StatusForbidden {
		t.Errorf("POST /web/connect without the CSRF token: %d", c)
	}
	if c := post("/web/connect", base, "x"+csrf); c != http.StatusForbidden {
		t.Errorf("POST /web/connect with a wrong CSRF token: %d", c)
	}
	if c := post("/web/connect", base, csrf); c != http.StatusOK {
		t.Errorf("POST /web/connect with amy's cookie and token: %d (the refusals above prove nothing without this)", c)
	}
	// (c) A WebSocket from another origin, with amy's cookie and a fresh tag of hers.
	tagPath := evalJS[string](t, bctx, freshTagJS, chromedp.EvalAwaitPromise)
	wsURL := "wss://" + strings.TrimPrefix(base, "https://") + tagPath
	dctx, cancelD := context.WithTimeout(ctx, 10*time.Second)
	_, resp, err := websocket.Dial(dctx, wsURL, &websocket.DialOptions{HTTPClient: hc,
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}, "Cookie": {cookie.Name + "=" + cookie.Value}}})
	cancelD()
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a WebSocket from another origin: %v (%v)", err, resp)
	}

	// Figures: login → first frame, the browser against zeroclient connect (the next TOTP
	// step: a code is good once), which takes the desktop over from the page.
	run("desktop page again", 60*time.Second, chromedp.Navigate(base+"/web/desktop"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="connected"] #screen canvas`)))
	next, _ := auth.TOTPCode(act.TOTPSecret, time.Now().Add(30*time.Second))
	frame := filepath.Join(e.dir, "zc-frame.png")
	cstart := time.Now()
	out, err = e.zeroclient("connect", "--broker", e.brokerURL(), "--ca", e.caFile(), "--user", `WEBCORP\amy`, "--password", amyPW,
		"--passcode", next, "--png", frame)
	if err != nil {
		t.Errorf("zeroclient connect (zero client devices are allowed): %v\n%s", err, out)
	} else {
		zc := time.Since(cstart)
		// zeroclient connect took the desktop over: the page says so and does not fight
		// back (no reconnect after the service ended its session).
		allocated := strings.Count(e.zc.Output(), "web: allocated")
		deadline := time.Now().Add(15 * time.Second)
		for evalJS[string](t, bctx, `document.body.dataset.state`) != "ended" {
			if time.Now().After(deadline) {
				t.Fatalf("after a takeover the page is %q, want ended", evalJS[string](t, bctx, `document.body.dataset.state`))
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(3 * time.Second)
		if n := strings.Count(e.zc.Output(), "web: allocated"); n != allocated {
			t.Errorf("the page reconnected after its session was taken over (%d new allocations)", n-allocated)
		}
		t.Logf("figure: login → first frame: browser %v (login page load, password, TOTP, WorkSpace page, desktop page, noVNC), zeroclient connect %v (process start, password, TOTP, allocation, RFB+TLS, first frame); ratio %.2f",
			browserFirstFrame.Round(time.Millisecond), zc.Round(time.Millisecond), browserFirstFrame.Seconds()/zc.Seconds())
	}

	// Phone width: the WorkSpace page fits without scrolling sideways.
	phone := func(path, ready string) {
		t.Helper()
		run("phone width "+path, 30*time.Second, chromedp.EmulateViewport(375, 740), chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS(ready)))
		if w := evalJS[int](t, bctx, `document.documentElement.scrollWidth`); w > 375 {
			shot(t, bctx, "phone")
			t.Errorf("%s at 375 px is %d px wide", path, w)
		}
	}
	phone("/web/workspace", "#ws-state")

	// Log out: back to the login page, and the old cookie is no use.
	run("log out", 30*time.Second, chromedp.Navigate(base+"/web/workspace"), chromedp.WaitVisible(chromedp.CSS("#logout")),
		chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#signin")))
	if c := post("/web/connect", base, csrf); c != http.StatusUnauthorized {
		t.Errorf("POST /web/connect after logout: %d", c)
	}
	phone("/web/", "#signin")
}

// evalJS evaluates a JavaScript expression in the page and returns its value.
func evalJS[T any](t *testing.T, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("evaluate %.60q: %v", expr, err)
	}
	return v
}

// canvasLitJS counts the pixels of noVNC's canvas that are not black.
const canvasLitJS = `(() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 16 || d[i+1] > 16 || d[i+2] > 16) n++;
  return n;
})()`

// freshTagJS asks for a connect tag as the desktop page does and returns its WebSocket path.
const freshTagJS = `(async () => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const r = await fetch('/web/connect', {method: 'POST', headers: {'X-CSRF-Token': csrf}});
  return (await r.json()).path;
})()`

// replayJS opens a WebSocket with a fresh tag twice.
const replayJS = `(async () => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const r = await fetch('/web/connect', {method: 'POST', headers: {'X-CSRF-Token': csrf}});
  const path = (await r.json()).path;
  const open = () => new Promise((resolve) => {
    const ws = new WebSocket('wss://' + location.host + path, ['binary']);
    ws.onopen = () => { ws.close(); resolve('open'); };
    ws.onerror = () => resolve('refused');
  });
  return [await open(), await open()];
})()`

// modAlt is CDP's modifier bit for Alt.
const modAlt = 1

func key(typ input.DispatchKeyEventType, k, code string, vk int64, mods int64) input.DispatchKeyEventParams {
	p := input.DispatchKeyEventParams{Type: typ, Key: k, Code: code, WindowsVirtualKeyCode: vk, NativeVirtualKeyCode: vk, Modifiers: mods}
	if typ == input.DispatchKeyEventTypeKeyDown && len(k) == 1 {
		p.Text = k
	}
	return p
}

// serverSPKI is the base64 SHA-256 of the public key of the certificate addr serves.
func serverSPKI(t *testing.T, addr string) string {
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sum := sha256.Sum256(c.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// cutProxy relays TCP connections to target until cut resets them all.
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	conns map[*net.TCPConn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String(), conns: map[*net.TCPConn]bool{}}
	t.Cleanup(func() { l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c.(*net.TCPConn)], p.conns[u.(*net.TCPConn)] = true, true
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

// cut resets every relayed connection (no FIN, no WebSocket close frame) and returns how
// many there were.
func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.SetLinger(0)
		c.Close()
	}
	clear(p.conns)
	return n
}

// evilSite serves, from another origin, a page that posts Web Access's logout form.
func evilSite(t *testing.T, base string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := `<!doctype html><html><body><form id="f" method="post" action="` + base + `/web/logout"><input name="csrf" value="guess"></form>
<script>document.getElementById('f').submit();</script></body></html>`
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/"
}

// shot saves a screenshot of the page as a test artifact (kept after the test: its path
// is logged) and returns its path.
func shot(t *testing.T, ctx context.Context, name string) string {
	dir := os.Getenv("ZEROCLIENT_E2E_KEEP")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "deskhost-artifacts")
	}
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.png", t.Name(), name, time.Now().UTC().Format("20060102T150405")))
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return path
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Logf("screenshot %s is not a PNG: %v", name, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot (artifact): %s", path)
	return path
}

func agentSocket(e *env) string { return runpaths.AgentSocket(e.dir, e.wsID) }

// guestClipboard reads the guest's clipboard through its agent, after setting it to set
// when set is not empty. hostd's health checks connect to the same socket now and then
// (qemu serves one connection at a time): the connection is held only for the call.
func guestClipboard(socket, set string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, socket)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if set != "" {
		if err := c.SetClipboard(ctx, set); err != nil {
			return "", err
		}
	}
	return c.Clipboard(ctx)
}

// tailFile is the end of a file, for failure messages.
func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
