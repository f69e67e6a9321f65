package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"

	"deskhost/internal/hostconfig"
)

// sigServer is a plain HTTP server whose handler runs only the verifier, so that requests
// the AWS SDK's signer signed arrive through a real net/http server, as in production.
func sigServer(t *testing.T, now func() time.Time) string {
	v := newVerifier(testRegion, []hostconfig.AccessKey{{ID: accessKeyID, Secret: secretKey}}, now)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, key, aerr := v.checkHeader(r)
		if aerr == nil {
			body, _ := io.ReadAll(r.Body)
			aerr = v.checkSignature(r, body, a, key)
		}
		if aerr != nil {
			fmt.Fprintf(w, "%s: %s", aerr.Type, aerr.Message)
			return
		}
		fmt.Fprintf(w, "OK %s", key.ID)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSigV4AgainstSDKSigner(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)}
	base := sigServer(t, clock.Now)

	type req struct {
		name    string
		method  string
		path    string
		body    string
		headers [][2]string
		chunked bool
		signAt  time.Duration // offset from the server clock
		keyID   string
		secret  string
		region  string
		service string
		tamper  func(r *http.Request)
		want    string // "OK" or an error type, optionally with ": message" prefix
	}
	jsonBody := `{"WorkspaceIds":["ws-abcdefgh12"]}`
	for _, tc := range []req{
		{name: "empty body", want: "OK"},
		{name: "JSON body", body: jsonBody, want: "OK"},
		{name: "unicode body", body: `{"UserName":"Zoë Ærøskøbing 🚀"}`, want: "OK"},
		{name: "GET with query", method: http.MethodGet, path: "/?b=2&a=1&a=0&x=%20y&empty=", want: "OK"},
		{name: "escaped path", path: "/some%20path/with~odd*chars", body: jsonBody, want: "OK"},
		{name: "header with excess spaces", body: jsonBody, headers: [][2]string{{"X-Custom", "  a   b  c  "}}, want: "OK"},
		{name: "repeated header", body: jsonBody, headers: [][2]string{{"X-Multi", "one"}, {"X-Multi", "two"}}, want: "OK"},
		{name: "content sha256 header", body: jsonBody, headers: [][2]string{{"X-Amz-Content-Sha256", sha256hex(jsonBody)}}, want: "OK"},
		{name: "chunked body", body: jsonBody, chunked: true, want: "OK"},
		{name: "14 minutes slow", body: jsonBody, signAt: -14 * time.Minute, want: "OK"},
		{name: "14 minutes fast", body: jsonBody, signAt: 14 * time.Minute, want: "OK"},
		{name: "unsigned header added later", body: jsonBody, tamper: func(r *http.Request) { r.Header.Set("User-Agent", "changed") }, want: "OK"},

		{name: "no Authorization", tamper: func(r *http.Request) { r.Header.Del("Authorization") }, want: "MissingAuthenticationTokenException"},
		{name: "unknown access key", keyID: "AKIDNOTCONFIGURED01", want: "UnrecognizedClientException: The security token included in the request is invalid"},
		{name: "wrong secret", secret: "not-the-secret-at-all-0000000000", want: "InvalidSignatureException: The request signature we calculated does not match"},
		{name: "body tampered", body: jsonBody, tamper: func(r *http.Request) {
			b := strings.Replace(jsonBody, "ws-abcdefgh12", "ws-zzzzzzzz12", 1)
			r.Body = io.NopCloser(strings.NewReader(b))
		}, want: "InvalidSignatureException: The request signature"},
		{name: "signed header tampered", body: jsonBody, headers: [][2]string{{"X-Amz-Target", "WorkspacesService.DescribeWorkspaces"}}, tamper: func(r *http.Request) {
			r.Header.Set("X-Amz-Target", "WorkspacesService.TerminateWorkspaces")
		}, want: "InvalidSignatureException: The request signature"},
		{name: "date tampered by a second", body: jsonBody, tamper: func(r *http.Request) {
			r.Header.Set("X-Amz-Date", clock.Now().Add(time.Second).Format(amzDateFormat))
		}, want: "InvalidSignatureException: The request signature"},
		{name: "date moved to another day", body: jsonBody, tamper: func(r *http.Request) {
			r.Header.Set("X-Amz-Date", clock.Now().Add(-24*time.Hour).Format(amzDateFormat))
		}, want: "InvalidSignatureException: Date in Credential scope does not match"},
		{name: "query tampered", method: http.MethodGet, path: "/?a=1", tamper: func(r *http.Request) { r.URL.RawQuery = "a=2" },
			want: "InvalidSignatureException: The request signature"},
		{name: "content sha256 header lies", body: jsonBody, headers: [][2]string{{"X-Amz-Content-Sha256", sha256hex("{}")}},
			want: "InvalidSignatureException: The provided 'x-amz-content-sha256' header does not match"},
		{name: "16 minutes slow", body: jsonBody, signAt: -16 * time.Minute, want: "InvalidSignatureException: Signature expired: 20260314T145326Z is now earlier than 20260314T145426Z (20260314T150926Z - 15 min.)"},
		{name: "16 minutes fast", body: jsonBody, signAt: 16 * time.Minute, want: "InvalidSignatureException: Signature not yet current"},
		{name: "wrong region", region: "us-east-1", want: "InvalidSignatureException: Credential should be scoped to a valid region"},
		{name: "wrong service", service: "ec2", want: "InvalidSignatureException: Credential should be scoped to correct service"},
		{name: "session token", headers: [][2]string{{"X-Amz-Security-Token", "FQoGZXIvYXdzE"}}, want: "UnrecognizedClientException"},
		{name: "no X-Amz-Date", tamper: func(r *http.Request) { r.Header.Del("X-Amz-Date") }, want: "IncompleteSignatureException: the request needs exactly one X-Amz-Date"},
		{name: "garbled X-Amz-Date", tamper: func(r *http.Request) { r.Header.Set("X-Amz-Date", "yesterday") }, want: "IncompleteSignatureException: X-Amz-Date"},
		{name: "host not signed", tamper: func(r *http.Request) {
			h := r.Header.Get("Authorization")
			if !strings.Contains(h, ";host;") {
				t.Fatalf("Authorization %q: expected host in the middle of SignedHeaders", h)
			}
			r.Header.Set("Authorization", strings.Replace(h, ";host;", ";", 1))
		}, want: "InvalidSignatureException: 'Host' must be a 'SignedHeader'"},
		{name: "target not signed", body: jsonBody, headers: [][2]string{{"X-Amz-Target", "WorkspacesService.DescribeWorkspaces"}}, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-target", "", 1))
		}, want: "InvalidSignatureException: 'X-Amz-Target' must be a 'SignedHeader'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			path := tc.path
			if path == "" {
				path = "/"
			}
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(strings.NewReader(tc.body))
			}
			r, err := http.NewRequest(method, base+path, body)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Content-Type", ContentType)
			for _, h := range tc.headers {
				r.Header.Add(h[0], h[1])
			}
			keyID, secret, region, service := accessKeyID, secretKey, testRegion, "workspaces"
			if tc.keyID != "" {
				keyID = tc.keyID
			}
			if tc.secret != "" {
				secret = tc.secret
			}
			if tc.region != "" {
				region = tc.region
			}
			if tc.service != "" {
				service = tc.service
			}
			sum := sha256hex(tc.body)
			if err := signer().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret},
				r, sum, service, region, clock.Now().Add(tc.signAt)); err != nil {
				t.Fatal(err)
			}
			if tc.tamper != nil {
				tc.tamper(r)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(string(got), tc.want) {
				t.Errorf("got  %s\nwant %s…", got, tc.want)
			}
		})
	}
}

func TestParseAuthorizationMalformed(t *testing.T) {
	good := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE00000001/20260314/local/workspaces/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("ab", 32)
	if _, aerr := parseAuthorization(good); aerr != nil {
		t.Fatalf("good header refused: %v", aerr)
	}
	for _, h := range []string{
		"",
		"Bearer abc",
		"AWS4-HMAC-SHA256",
		"AWS4-HMAC-SHA256X Credential=a/b/c/d/aws4_request",
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host",
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/2026-03-14/local/workspaces/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=x-amz-date;host, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=Host, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host, Signature=xyz",
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("AB", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("zz", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, Credential=x, SignedHeaders=host, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("ab", 32) + ", Extra=1",
		"AWS4-HMAC-SHA256 Credential=AKID/20260314/local/workspaces/aws4_request, SignedHeaders=host, nonsense",
	} {
		if _, aerr := parseAuthorization(h); aerr == nil || aerr.Type != "IncompleteSignatureException" {
			t.Errorf("%q: got %v, want IncompleteSignatureException", h, aerr)
		}
	}
}

// TestSigV4ThroughAPI checks the signature errors end to end through the SDK client.
func TestSigV4ThroughAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if _, err := e.client(accessKeyID2, secretKey2).DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{}); err != nil {
		t.Fatalf("second key: %v", err)
	}
	_, err := e.client(accessKeyID, secretKey2).DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	apiErr(t, err, "InvalidSignatureException")
	_, err = e.client("AKIDNOTCONFIGURED01", secretKey).DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	apiErr(t, err, "UnrecognizedClientException")
	r := e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces", unsigned: true, body: []byte(`{}`)})
	if r.status != http.StatusForbidden || r.errType != "MissingAuthenticationTokenException" {
		t.Errorf("unsigned: %d %s %s", r.status, r.errType, r.message)
	}
	// A signature made for another region is refused before anything else happens.
	wrong := &env{t: t, url: e.url, roots: e.roots, region: "us-west-2"}
	_, err = wrong.client(accessKeyID, secretKey).DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	if ae := apiErr(t, err, "InvalidSignatureException"); !strings.Contains(ae.ErrorMessage(), `region "local"`) {
		t.Errorf("message %q", ae.ErrorMessage())
	}
	// An unauthenticated oversize body is refused for its signature before it is read.
	r = e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces", unsigned: true, body: bytes.Repeat([]byte("x"), 2<<20)})
	if r.errType != "MissingAuthenticationTokenException" {
		t.Errorf("unsigned oversize body: %d %s", r.status, r.errType)
	}
}
