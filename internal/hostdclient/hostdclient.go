// Package hostdclient is the one client of hostd's API (AWS's WorkSpaces JSON 1.1 protocol),
// for hostd's CLI, zeroclient, init's console and the tests. It reaches hostd over its
// root-only unix socket (hostd checks the peer instead of a signature) or over HTTPS with
// SigV4, and is AWS's Go SDK WorkSpaces client for AWS's operations, with typed calls for
// hostd's own operations, which the SDK does not know. Either way a refused call returns an
// *APIError that keeps hostd's exception name, and throttled calls are retried with backoff.
package hostdclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"

	"deskhost/internal/hostconfig"
)

// DefaultSocket is where hostd's API socket lives on the appliance.
const DefaultSocket = hostconfig.DefaultHostdSocket

// DefaultMaxAttempts is how many times a call is tried (the first and its retries) when it
// is throttled or hostd fails transiently.
const DefaultMaxAttempts = 5

// DefaultTimeout bounds each HTTP request.
const DefaultTimeout = 30 * time.Second

// Options say which hostd to reach and how. Set Socket, or Endpoint with an access key.
type Options struct {
	// Socket is hostd's root-only unix socket; no credentials are needed there.
	Socket string
	// Endpoint is hostd's HTTPS API, https://host:port; calls are signed with SigV4.
	Endpoint                     string
	AccessKeyID, SecretAccessKey string
	// RootCAs are the certificates to trust for Endpoint (default: the system's); CAFile is
	// a PEM file of them, e.g. hostd's self-signed ca.pem.
	RootCAs *x509.CertPool
	CAFile  string
	// Region is the SigV4 region hostd is configured with (default hostconfig.DefaultRegion).
	Region string
	// MaxAttempts bounds the tries of one call (default DefaultMaxAttempts; 1: no retries,
	// for tests that count requests).
	MaxAttempts int
	// Timeout bounds each HTTP request (default DefaultTimeout).
	Timeout time.Duration
}

// Client is AWS's WorkSpaces client (its methods are AWS's operations) bound to one hostd,
// with hostd's own operations added.
type Client struct {
	*workspaces.Client

	http     *http.Client
	endpoint string // base URL
	region   string
	creds    aws.CredentialsProvider // nil on the socket: no signature
	signer   *v4.Signer              // per client: it caches signing keys by access key id alone
	retryer  aws.RetryerV2
}

// Dial returns a client for hostd's unix socket (DefaultSocket if empty). Nothing is
// connected until the first call.
func Dial(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	c, err := New(Options{Socket: socket})
	if err != nil { // unreachable: a socket path alone is not wrong until it is dialled
		panic(err)
	}
	return c
}

// New returns a client for o's hostd. Nothing is connected until the first call.
func New(o Options) (*Client, error) {
	if o.Region == "" {
		o.Region = hostconfig.DefaultRegion
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	c := &Client{region: o.Region, retryer: newRetryer(o.MaxAttempts), signer: v4.NewSigner()}
	switch {
	case o.Socket != "" && o.Endpoint != "":
		return nil, errors.New("hostd client: a socket or an HTTPS endpoint, not both")
	case o.Socket != "":
		if o.AccessKeyID != "" || o.SecretAccessKey != "" || o.CAFile != "" || o.RootCAs != nil {
			return nil, errors.New("hostd client: an access key and CA certificates go with an HTTPS endpoint; the socket needs none")
		}
		path := o.Socket
		c.endpoint = "http://hostd"
		c.http = &http.Client{Timeout: o.Timeout, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost: 16,
		}}
	case o.Endpoint != "":
		u, err := url.Parse(o.Endpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("hostd endpoint %q: want https://host:port (the API is HTTPS only)", o.Endpoint)
		}
		if o.AccessKeyID == "" || o.SecretAccessKey == "" {
			return nil, errors.New("hostd endpoint " + o.Endpoint + ": an access key id and its secret are needed")
		}
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
		if o.CAFile != "" {
			pool, err := readCAFile(o.CAFile)
			if err != nil {
				return nil, err
			}
			tlsCfg.RootCAs = pool
		}
		c.endpoint = strings.TrimRight(o.Endpoint, "/")
		c.creds = credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")
		c.http = &http.Client{Timeout: o.Timeout, Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsCfg,
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	default:
		return nil, errors.New("hostd client: give hostd's socket or its HTTPS endpoint")
	}
	wo := workspaces.Options{
		Region:       c.region,
		BaseEndpoint: aws.String(c.endpoint),
		HTTPClient:   c.http,
		Retryer:      c.retryer,
		APIOptions:   []func(*middlewareStack) error{addErrorMiddleware},
	}
	if c.creds != nil {
		wo.Credentials = c.creds
	} else {
		wo.Credentials = aws.AnonymousCredentials{} // unsigned: hostd checks the socket's peer
	}
	c.Client = workspaces.New(wo)
	return c, nil
}

func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// newRetryer is the SDK's standard retryer (throttling retried after about a second,
// exponential backoff with jitter) with two changes for one known server: a connection
// that cannot be made is not retried at once (hostd is down or the path is wrong; say so
// now), and there is no client-side retry quota, so a busy client waits out throttling
// rather than failing with "retry quota exceeded".
func newRetryer(maxAttempts int) aws.RetryerV2 {
	return retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = maxAttempts
		so.RateLimiter = ratelimit.None
		so.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "dial" {
				return aws.FalseTernary
			}
			return aws.UnknownTernary
		})}, so.Retryables...)
	})
}

// signingName is the SigV4 service name hostd checks.
const signingName = "workspaces"
