package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

// AWS Signature Version 4, verified server-side: the client's Authorization header names
// its access key, credential scope, the headers it signed and the signature; the server
// rebuilds the canonical request from exactly those headers and the body, derives the
// signing key from its copy of the secret, and compares.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html

const (
	sigAlgorithm   = "AWS4-HMAC-SHA256"
	sigService     = "workspaces"
	sigTerminator  = "aws4_request"
	amzDateFormat  = "20060102T150405Z"
	scopeDayFormat = "20060102"
	// MaxClockSkew is how far a request's X-Amz-Date may be from the server's clock.
	MaxClockSkew = 15 * time.Minute
)

// sigAuth is a parsed Authorization header.
type sigAuth struct {
	accessKey     string
	day           string // yyyymmdd
	region        string
	service       string
	signedHeaders []string
	signature     string
}

func (a sigAuth) scope() string {
	return a.day + "/" + a.region + "/" + a.service + "/" + sigTerminator
}

// parseAuthorization parses "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/
// workspaces/aws4_request, SignedHeaders=host;x-amz-date, Signature=hex".
func parseAuthorization(h string) (sigAuth, *catalog.Error) {
	var a sigAuth
	bad := func(format string, args ...any) (sigAuth, *catalog.Error) {
		return a, catalog.Errorf(catalog.IncompleteSignature, format, args...)
	}
	rest, ok := strings.CutPrefix(h, sigAlgorithm)
	if !ok || (rest != "" && rest[0] != ' ') {
		alg, _, _ := strings.Cut(h, " ")
		return bad("Authorization header algorithm %s is not supported; use %s", quote(alg), sigAlgorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return bad("Authorization header part %s is not key=value", quote(part))
		}
		if _, dup := fields[k]; dup {
			return bad("Authorization header has %s twice", k)
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return bad("Authorization header requires a %s parameter (Credential, SignedHeaders and Signature)", k)
		}
	}
	if len(fields) != 3 {
		return bad("Authorization header has parameters other than Credential, SignedHeaders and Signature")
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[0] == "" || cred[4] != sigTerminator {
		return bad("Credential %s must be ACCESS_KEY/yyyymmdd/region/service/aws4_request", quote(fields["Credential"]))
	}
	a.accessKey, a.day, a.region, a.service = cred[0], cred[1], cred[2], cred[3]
	if _, err := time.Parse(scopeDayFormat, a.day); err != nil {
		return bad("Credential date %s is not yyyymmdd", quote(a.day))
	}
	a.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
	for i, name := range a.signedHeaders {
		if name == "" || name != strings.ToLower(name) {
			return bad("SignedHeaders %s must list lower-case header names separated by ';'", quote(fields["SignedHeaders"]))
		}
		if i > 0 && a.signedHeaders[i-1] >= name {
			return bad("SignedHeaders %s must be sorted and without repeats", quote(fields["SignedHeaders"]))
		}
	}
	a.signature = fields["Signature"]
	if len(a.signature) != 64 || strings.ToLower(a.signature) != a.signature {
		return bad("Signature must be 64 lower-case hexadecimal digits")
	}
	if _, err := hex.DecodeString(a.signature); err != nil {
		return bad("Signature must be 64 lower-case hexadecimal digits")
	}
	return a, nil
}

// verifier checks SigV4 requests against the configured access keys.
type verifier struct {
	region string
	keys   map[string]hostconfig.AccessKey
	now    func() time.Time
}

func newVerifier(region string, keys []hostconfig.AccessKey, now func() time.Time) *verifier {
	v := &verifier{region: region, keys: map[string]hostconfig.AccessKey{}, now: now}
	for _, k := range keys {
		v.keys[k.ID] = k
	}
	return v
}

// checkHeader validates everything that does not need the body: the Authorization header,
// the access key, the scope and the request time. It returns the parsed header, the key and
// the request time. Split from checkSignature so that an unauthenticated request is refused
// before its body is read.
func (v *verifier) checkHeader(r *http.Request) (sigAuth, hostconfig.AccessKey, *catalog.Error) {
	var key hostconfig.AccessKey
	h := r.Header.Values("Authorization")
	if len(h) == 0 {
		if r.URL.Query().Has("X-Amz-Signature") {
			return sigAuth{}, key, catalog.Errorf(catalog.MissingAuthenticationToken,
				"presigned URLs are not accepted; sign the request with an Authorization header")
		}
		return sigAuth{}, key, catalog.Errorf(catalog.MissingAuthenticationToken,
			"Missing Authentication Token: sign the request with AWS Signature Version 4 and an access key configured in hostd.api.accessKeys")
	}
	if len(h) > 1 {
		return sigAuth{}, key, catalog.Errorf(catalog.IncompleteSignature, "the request has more than one Authorization header")
	}
	a, aerr := parseAuthorization(h[0])
	if aerr != nil {
		return a, key, aerr
	}
	key, ok := v.keys[a.accessKey]
	if !ok {
		return a, key, catalog.Errorf(catalog.UnrecognizedClient,
			"The security token included in the request is invalid: access key %s is not configured on this host", quote(a.accessKey))
	}
	if r.Header.Get("X-Amz-Security-Token") != "" {
		return a, key, catalog.Errorf(catalog.UnrecognizedClient,
			"The security token included in the request is invalid: this host issues no session tokens; unset AWS_SESSION_TOKEN")
	}
	if a.service != sigService {
		return a, key, catalog.Errorf(catalog.InvalidSignature, "Credential should be scoped to correct service: '%s', not %s", sigService, quote(a.service))
	}
	if a.region != v.region {
		return a, key, catalog.Errorf(catalog.InvalidSignature,
			"Credential should be scoped to a valid region: this host signs for region %s, not %s", quote(v.region), quote(a.region))
	}
	if !slices.Contains(a.signedHeaders, "host") {
		return a, key, catalog.Errorf(catalog.InvalidSignature, "'Host' must be a 'SignedHeader' in the AWS Authorization")
	}
	if !slices.Contains(a.signedHeaders, "x-amz-date") {
		return a, key, catalog.Errorf(catalog.InvalidSignature, "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization")
	}
	// The operation must be signed too (every SDK signs it), or a request seen in transit
	// could be replayed within the skew window as another operation.
	if r.Header.Get("X-Amz-Target") != "" && !slices.Contains(a.signedHeaders, "x-amz-target") {
		return a, key, catalog.Errorf(catalog.InvalidSignature, "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization")
	}
	dates := r.Header.Values("X-Amz-Date")
	if len(dates) != 1 {
		return a, key, catalog.Errorf(catalog.IncompleteSignature, "the request needs exactly one X-Amz-Date header (yyyymmddThhmmssZ)")
	}
	t, err := time.Parse(amzDateFormat, dates[0])
	if err != nil {
		return a, key, catalog.Errorf(catalog.IncompleteSignature, "X-Amz-Date %s is not in the form yyyymmddThhmmssZ", quote(dates[0]))
	}
	if t.Format(scopeDayFormat) != a.day {
		return a, key, catalog.Errorf(catalog.InvalidSignature,
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'",
			a.day, t.Format(scopeDayFormat), dates[0])
	}
	now := v.now().UTC()
	switch {
	case t.Before(now.Add(-MaxClockSkew)):
		return a, key, catalog.Errorf(catalog.InvalidSignature, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			dates[0], now.Add(-MaxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	case t.After(now.Add(MaxClockSkew)):
		return a, key, catalog.Errorf(catalog.InvalidSignature, "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			dates[0], now.Add(MaxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	return a, key, nil
}

// checkSignature recomputes the signature over r and its body and compares it.
func (v *verifier) checkSignature(r *http.Request, body []byte, a sigAuth, key hostconfig.AccessKey) *catalog.Error {
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if declared := r.Header.Get("X-Amz-Content-Sha256"); declared != "" && declared != payloadHash {
		return catalog.Errorf(catalog.InvalidSignature, "The provided 'x-amz-content-sha256' header does not match what was computed")
	}
	creq := canonicalRequest(r, a.signedHeaders, payloadHash)
	creqSum := sha256.Sum256([]byte(creq))
	stringToSign := sigAlgorithm + "\n" + r.Header.Get("X-Amz-Date") + "\n" + a.scope() + "\n" + hex.EncodeToString(creqSum[:])
	k := hmacSHA256([]byte("AWS4"+key.Secret), a.day)
	k = hmacSHA256(k, a.region)
	k = hmacSHA256(k, a.service)
	k = hmacSHA256(k, sigTerminator)
	want := hex.EncodeToString(hmacSHA256(k, stringToSign))
	if subtle.ConstantTimeCompare([]byte(want), []byte(a.signature)) != 1 {
		return catalog.Errorf(catalog.InvalidSignature,
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// canonicalRequest is SigV4's canonical form of r, over the headers the client signed.
func canonicalRequest(r *http.Request, signed []string, payloadHash string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signed {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(canonicalHeaderValue(r, name))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

func canonicalHeaderValue(r *http.Request, name string) string {
	var values []string
	switch name {
	case "host":
		values = []string{r.Host}
	case "content-length":
		values = slices.Clone(r.Header.Values("Content-Length"))
		if len(values) == 0 && r.ContentLength >= 0 {
			values = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	default:
		values = slices.Clone(r.Header.Values(name))
	}
	for i, v := range values {
		values[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(values, ",")
}

// canonicalURI is the URI-encoded path, each segment encoded once more (all services but S3).
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return sigEscape(p, false)
}

func canonicalQuery(raw string) string {
	q, err := url.ParseQuery(raw)
	if err != nil || len(q) == 0 {
		return ""
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vs := slices.Clone(q[k])
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, sigEscape(k, true)+"="+sigEscape(v, true))
		}
	}
	return strings.Join(parts, "&")
}

// sigEscape percent-encodes every byte but the unreserved characters (and '/' unless
// encodeSlash), upper-case hex, as SigV4 requires.
func sigEscape(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encodeSlash) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
