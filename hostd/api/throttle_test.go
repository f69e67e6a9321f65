package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/workspaces"

	"deskhost/internal/hostconfig"
)

// TestLimiterGuideTable reproduces the guide's nine-second worked table (catalog §22.4)
// with the default rate 2/s and burst 5: in each second the call throttled the second
// before is retried first, then "net requests allowed" is read, then the new calls are sent.
func TestLimiterGuideTable(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(hostconfig.DefaultThrottleRate, hostconfig.DefaultThrottleBurst, clock.Now)
	sent := []int{0, 2, 5, 2, 3, 0, 0, 0, 0}
	wantAllowed := []int{5, 5, 5, 2, 2, 1, 3, 5, 5}
	var allowed, served, throttled []int
	queued := 0
	for s := range sent {
		if s > 0 {
			clock.Advance(time.Second)
		}
		retried := 0
		for range queued {
			if l.Allow("admin") {
				retried++
			}
		}
		queued -= retried
		allowed = append(allowed, l.Available("admin"))
		ok := 0
		for range sent[s] {
			if l.Allow("admin") {
				ok++
			} else {
				queued++
			}
		}
		served = append(served, ok)
		throttled = append(throttled, sent[s]-ok)
	}
	if !slices.Equal(allowed, wantAllowed) {
		t.Errorf("net requests allowed %v, want the guide's %v", allowed, wantAllowed)
	}
	// Second 5 is the only one with a throttled call ("one of the three API calls is
	// throttled"), and it gets through in second 6.
	if want := []int{0, 0, 0, 0, 1, 0, 0, 0, 0}; !slices.Equal(throttled, want) {
		t.Errorf("throttled per second %v, want %v", throttled, want)
	}
	if want := []int{0, 2, 5, 2, 2, 0, 0, 0, 0}; !slices.Equal(served, want) {
		t.Errorf("served per second %v, want %v", served, want)
	}
	if queued != 0 {
		t.Errorf("%d calls still throttled at the end", queued)
	}
}

func TestLimiterPerPrincipalAndFractionalRefill(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(2, 5, clock.Now)
	for i := range 5 {
		if !l.Allow("a") {
			t.Fatalf("call %d of the burst throttled", i+1)
		}
	}
	if l.Allow("a") {
		t.Fatal("sixth call in the same instant allowed")
	}
	if !l.Allow("b") {
		t.Fatal("another principal is throttled by a's calls")
	}
	if d := l.RetryAfter("a"); d != 500*time.Millisecond {
		t.Errorf("RetryAfter %v, want 500ms", d)
	}
	clock.Advance(499 * time.Millisecond)
	if l.Allow("a") {
		t.Fatal("allowed before the next token")
	}
	clock.Advance(time.Millisecond)
	if !l.Allow("a") {
		t.Fatal("throttled after half a second at 2/s")
	}
	clock.Advance(time.Hour)
	if n := l.Available("a"); n != 5 {
		t.Errorf("after an hour %d available, want the burst 5", n)
	}
}

// TestThrottlingOverHTTP: the excess call gets HTTP 400 ThrottlingException "Rate exceeded",
// per access key, and passes once the bucket refills.
func TestThrottlingOverHTTP(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, envOptions{throttle: hostconfig.Throttle{Rate: 2, Burst: 5}, now: clock.Now})
	call := func() rawResult {
		return e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces", body: []byte(`{}`)})
	}
	for i := range 5 {
		if r := call(); r.status != http.StatusOK {
			t.Fatalf("call %d: %d %s %s", i+1, r.status, r.errType, r.message)
		}
	}
	r := call()
	if r.status != http.StatusBadRequest || r.errType != "ThrottlingException" || r.message != "Rate exceeded" {
		t.Fatalf("sixth call: %d %s %q", r.status, r.errType, r.message)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// The SDK sees the same error (retries are off in the test client).
	_, err := e.client(accessKeyID, secretKey).DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{})
	apiErr(t, err, "ThrottlingException")
	// Another key has its own bucket.
	if _, err := e.client(accessKeyID2, secretKey2).DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{}); err != nil {
		t.Errorf("second key: %v", err)
	}
	clock.Advance(500 * time.Millisecond)
	if r := call(); r.status != http.StatusOK {
		t.Errorf("after refill: %d %s", r.status, r.errType)
	}
	if r := call(); r.errType != "ThrottlingException" {
		t.Errorf("second call after one token: %d %s", r.status, r.errType)
	}
}
