// Package api is hostd's admin API: AWS's WorkSpaces JSON 1.1 protocol (POST / with
// X-Amz-Target: WorkspacesService.<Operation>), authenticated with AWS Signature Version 4
// against the host's configured access keys, throttled per principal with the guide's token
// bucket, served over HTTPS on the management network and over a root-only unix socket for
// the local console and CLI. Administrators drive it with the tools they already use:
// `aws workspaces ... --endpoint-url https://host:port` and the AWS SDKs.
//
// Every call is written to the audit log (log/slog) with stable keys: action, principal,
// access_key, source, request_id, result, status, duration, and a clipped params summary;
// secrets (secret keys, signatures, the Authorization header) are never logged.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

// DefaultMaxBodyBytes caps a request body; larger ones get 413 RequestEntityTooLargeException.
const DefaultMaxBodyBytes = 1 << 20

// maxAuditParams caps the request summary in an audit record, in characters.
const maxAuditParams = 1024

// LocalPrincipal is the principal of requests from root over the unix socket.
const LocalPrincipal = "local"

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Region is the SigV4 region clients sign for (hostd.api.region; default "local").
	Region string
	// AccessKeys are the credentials accepted over HTTPS (hostd.api.accessKeys).
	AccessKeys []hostconfig.AccessKey
	// Throttle is the per-principal token bucket (default rate 2/s, burst 5).
	Throttle hostconfig.Throttle
	// MaxBodyBytes caps request bodies (default 1 MiB).
	MaxBodyBytes int64
	// Now is the clock for signature expiry and throttling (default time.Now).
	Now func() time.Time
	// Logger receives the audit log and server errors (default slog.Default()).
	Logger *slog.Logger
	// BrokerGID is the group whose members may use the local socket as BrokerPrincipal;
	// -1 (or unset with BrokerGroupSet false): none.
	BrokerGID int
	// BrokerGroupSet says BrokerGID is meant (gid 0 is root's group).
	BrokerGroupSet bool
}

// BrokerPrincipal is the principal of requests from the broker group over the unix
// socket: the connection broker (zeroclient), which runs unprivileged.
const BrokerPrincipal = "broker"

// brokerOperations are the only operations BrokerPrincipal may call: what a connection
// broker needs to find, start and report on a user's WorkSpace, to route a user to the
// fleet host that runs it (FindWorkspace, IssueConnectTag), and the catalog (its
// directories and IP access control groups) that it enforces.
var brokerOperations = map[string]bool{"DescribeWorkspaces": true, "StartWorkspaces": true, ReportConnectionsOperation: true, DescribeCatalogOperation: true,
	FindWorkspaceOperation: true, IssueConnectTagOperation: true}

// brokerOperationList names brokerOperations for the refusal's message.
var brokerOperationList = func() string {
	names := make([]string, 0, len(brokerOperations))
	for n := range brokerOperations {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}()

// OptionsFromConfig is the Options the host config's api section gives; logger receives
// the audit log.
func OptionsFromConfig(c hostconfig.API, logger *slog.Logger) Options {
	return Options{Region: c.Region, AccessKeys: c.AccessKeys, Throttle: c.Throttle, Logger: logger}
}

// LookupBrokerGroup sets o's broker group from the host config's name for it ("" : none).
func (o *Options) LookupBrokerGroup(name string) error {
	if name == "" {
		return nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return fmt.Errorf("hostd.api.brokerGroup %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("hostd.api.brokerGroup %q: gid %q: %w", name, g.Gid, err)
	}
	if gid == 0 {
		return fmt.Errorf("hostd.api.brokerGroup %q is root's group", name)
	}
	o.BrokerGID, o.BrokerGroupSet = gid, true
	return nil
}

// Server is the admin API.
type Server struct {
	svc      Service
	region   string // the Region clients sign for, which is this host
	verifier *verifier
	limiter  *Limiter
	maxBody  int64
	log      *slog.Logger
	// brokerGID may use the local socket as BrokerPrincipal; -1: nobody but root.
	brokerGID int
}

// New returns a Server calling svc.
func New(svc Service, o Options) *Server {
	if o.Region == "" {
		o.Region = hostconfig.DefaultRegion
	}
	if o.Throttle.Rate == 0 {
		o.Throttle.Rate = hostconfig.DefaultThrottleRate
	}
	if o.Throttle.Burst == 0 {
		o.Throttle.Burst = hostconfig.DefaultThrottleBurst
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	brokerGID := -1
	if o.BrokerGroupSet {
		brokerGID = o.BrokerGID
	}
	return &Server{
		svc:       svc,
		region:    o.Region,
		verifier:  newVerifier(o.Region, o.AccessKeys, o.Now),
		limiter:   NewLimiter(o.Throttle.Rate, o.Throttle.Burst, o.Now),
		maxBody:   o.MaxBodyBytes,
		log:       o.Logger,
		brokerGID: brokerGID,
	}
}

// Handler is the API's HTTP handler. Requests it gets other than through ServeUnix must be
// signed; mount it at "/".
func (s *Server) Handler() http.Handler { return s }

// Limiter is the server's throttle, for inspection.
func (s *Server) Limiter() *Limiter { return s.limiter }

// call is one request's audit record.
type call struct {
	action    string
	principal string
	accessKey string
	source    string
	requestID string
	status    int
	result    string // "ok" or the error type
	message   string // the error message, if any
	failed    int    // refused items of a batch
	params    string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := &call{requestID: newRequestID(), source: r.RemoteAddr}
	w.Header().Set("x-amzn-RequestId", c.requestID)
	defer func() { s.audit(r.Context(), c, time.Since(start)) }()

	if aerr := s.serve(w, r, c); aerr != nil {
		s.writeError(w, c, aerr, 0)
	}
}

// serve handles one request, writing the success response itself; an error it returns is
// written by the caller.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, c *call) *catalog.Error {
	if r.URL.Path != "/" {
		s.writeError(w, c, catalog.Errorf(catalog.UnknownOperation, "path %s: the WorkSpaces API is POST /", quote(r.URL.Path)), http.StatusNotFound)
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.writeError(w, c, catalog.Errorf(catalog.UnknownOperation, "method %s: the WorkSpaces API is POST /", quote(r.Method)), http.StatusMethodNotAllowed)
		return nil
	}

	// Who is calling: root over the unix socket, or a SigV4-signed access key.
	peer, viaUnix := peerFrom(r.Context())
	var auth sigAuth
	var key hostconfig.AccessKey
	if viaUnix {
		c.source = peer.String()
		if peer.err != nil {
			return catalog.Errorf(catalog.AccessDenied, "cannot identify the peer on the local socket: %v", peer.err)
		}
		switch {
		case peer.uid == 0:
			c.principal = LocalPrincipal
		case s.brokerGID >= 0 && peer.gid == s.brokerGID:
			c.principal = BrokerPrincipal
		default:
			return catalog.Errorf(catalog.AccessDenied,
				"the local socket accepts only root and the broker group (peer uid %d gid %d); use the HTTPS endpoint with an access key", peer.uid, peer.gid)
		}
	} else {
		var aerr *catalog.Error
		auth, key, aerr = s.verifier.checkHeader(r)
		c.accessKey = auth.accessKey
		if aerr != nil {
			return aerr
		}
	}

	body, aerr := s.readBody(w, r)
	if aerr != nil {
		return aerr
	}
	if !viaUnix {
		if aerr := s.verifier.checkSignature(r, body, auth, key); aerr != nil {
			return aerr
		}
		c.principal = key.Name
		if c.principal == "" {
			c.principal = key.ID
		}
	}

	// One bucket per access key (names need not be unique). Local root is not throttled:
	// the guide's rate limits API callers, while the local socket serves the host's own
	// console and connection manager, which makes two calls for every user login.
	if !viaUnix {
		bucket := "key:" + key.ID
		if !s.limiter.Allow(bucket) {
			w.Header().Set("Retry-After", strconv.Itoa(int(s.limiter.RetryAfter(bucket)/time.Second)+1))
			return catalog.Errorf(catalog.Throttling, "Rate exceeded")
		}
	}

	target := r.Header.Get("X-Amz-Target")
	c.action = clip(target)
	name, op, aerr := lookupOperation(target)
	if aerr != nil {
		return aerr
	}
	c.action = name
	if c.principal == BrokerPrincipal && !brokerOperations[name] {
		return catalog.Errorf(catalog.AccessDenied, "%s: the connection broker may call only %s", name, brokerOperationList)
	}
	if op.localOnly && !viaUnix {
		return catalog.Errorf(catalog.AccessDenied, "%s is hostd's own operation for the host's services: it is taken only on the local socket", name)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != ContentType {
		return catalog.Errorf(catalog.SerializationError, "Content-Type %s: the WorkSpaces API takes %s", quote(r.Header.Get("Content-Type")), ContentType)
	}
	req := op.newReq()
	if aerr := decodeInto(body, op.input, req); aerr != nil {
		return aerr
	}
	if op.secret {
		c.params = "(not logged: the request may hold secrets)"
	} else if p, err := json.Marshal(req); err == nil {
		c.params = clipN(string(p), maxAuditParams)
	}

	resp, err := op.call(context.WithValue(r.Context(), regionKey{}, s.region), s.svc, req)
	if err != nil {
		return catalog.AsError(err)
	}
	switch v := resp.(type) {
	case createWorkspacesResult:
		c.failed = len(v.FailedRequests)
	case failedRequestsResult:
		c.failed = len(v.FailedRequests)
	}
	c.status, c.result = http.StatusOK, "ok"
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// readBody reads the body up to the limit, never buffering more.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *catalog.Error) {
	tooLarge := catalog.Errorf(catalog.RequestEntityTooLarge, "the request body is larger than %d bytes", s.maxBody)
	if r.ContentLength > s.maxBody {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, catalog.Errorf(catalog.SerializationError, "cannot read the request body: %v", err)
	}
	return body, nil
}

// statusFor is the HTTP status AWS's JSON protocol uses for an error type.
func statusFor(t catalog.ErrorType) int {
	switch t {
	case catalog.MissingAuthenticationToken, catalog.UnrecognizedClient, catalog.InvalidSignature,
		catalog.IncompleteSignature, catalog.AccessDenied:
		return http.StatusForbidden
	case catalog.RequestEntityTooLarge:
		return http.StatusRequestEntityTooLarge
	case catalog.InternalFailure:
		return http.StatusInternalServerError
	case catalog.ServiceUnavailableException:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func (s *Server) writeError(w http.ResponseWriter, c *call, e *catalog.Error, status int) {
	if status == 0 {
		status = statusFor(e.Type)
	}
	msg := e.Message
	if e.Type == catalog.InternalFailure {
		// The detail is for the operator's log, not for the client.
		s.log.Error("admin api internal failure", "request_id", c.requestID, "action", c.action, "err", e.Message)
		msg = fmt.Sprintf("internal error; hostd's log has the details under request id %s", c.requestID)
	}
	c.status, c.result, c.message = status, string(e.Type), msg
	w.Header().Set("X-Amzn-ErrorType", string(e.Type))
	writeJSON(w, status, errorBody{Type: string(e.Type), Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"__type":"InternalFailure","message":"cannot encode the response"}`)
		w.Header().Set("X-Amzn-ErrorType", string(catalog.InternalFailure))
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Server) audit(ctx context.Context, c *call, d time.Duration) {
	attrs := []slog.Attr{
		slog.String("action", c.action),
		slog.String("principal", c.principal),
		slog.String("access_key", c.accessKey),
		slog.String("source", c.source),
		slog.String("request_id", c.requestID),
		slog.String("result", c.result),
		slog.Int("status", c.status),
		slog.Duration("duration", d),
	}
	if c.message != "" {
		attrs = append(attrs, slog.String("err", c.message))
	}
	if c.failed > 0 {
		attrs = append(attrs, slog.Int("failed_items", c.failed))
	}
	if c.params != "" {
		attrs = append(attrs, slog.String("params", c.params))
	}
	level := slog.LevelInfo
	if c.status >= 500 {
		level = slog.LevelError
	}
	s.log.LogAttrs(ctx, level, "admin api call", attrs...)
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
