// Package cli is the operator's command line for hostd's admin API: `hostd <command> ...`.
// It talks to hostd through deskhost/internal/hostdclient, either over hostd's root-only unix
// socket (the default; no credentials needed) or over HTTPS with an access key, and prints
// aligned tables and errors a person can act on (the AWS error type and its message).
package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/smithy-go"

	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
)

// DefaultSocket is where hostd's admin API socket lives on the appliance.
const DefaultSocket = hostdclient.DefaultSocket

const prog = "hostd"

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the operation failed, or some items of a batch did
	exitUsage = 2 // the command line is wrong
)

// Main runs one command: args are the command and its arguments, without the program name
// (hostd's main passes os.Args[1:]). It returns the process exit code: 0 on success, 1 if
// the operation or any item of it failed, 2 for a usage error. Interrupts cancel the call.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return MainContext(ctx, args, stdout, stderr)
}

// MainContext is Main with the caller's context.
func MainContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if len(args) > 2 {
				if c, ok := commands[args[1]+" "+args[2]]; ok {
					commandUsage(stdout, c)
					return exitOK
				}
			}
			if c, ok := commands[args[1]]; ok {
				commandUsage(stdout, c)
				return exitOK
			}
			fmt.Fprintf(stderr, "%s: no command %q\n", prog, args[1])
			return exitUsage
		}
		usage(stdout)
		return exitOK
	}
	c, ok := commands[name]
	if len(args) > 1 {
		// Two-word commands: `hostd ipgroups create`, `hostd directory put`.
		if sub, ok2 := commands[name+" "+args[1]]; ok2 {
			c, ok, name, args = sub, true, name+" "+args[1], args[1:]
		}
	}
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q; `%s help` lists the commands\n", prog, name, prog)
		return exitUsage
	}
	r := &run{ctx: ctx, stdout: stdout, stderr: stderr, cmd: c}
	fs := flag.NewFlagSet(prog+" "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r.global(fs)
	if c.flags != nil {
		c.flags(r, fs)
	}
	pos, err := parseInterleaved(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(stdout, c)
		return exitOK
	}
	if err != nil {
		return r.usageError("%v", err)
	}
	r.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { r.set[f.Name] = true })
	r.endpointFrom = "--endpoint"
	if len(pos) < c.minArgs || (c.maxArgs >= 0 && len(pos) > c.maxArgs) {
		return r.usageError("expected %s", c.args)
	}
	r.args = pos
	return c.run(r)
}

// parseInterleaved lets flags and positional arguments mix, as in
// `hostd reboot ws-1 ws-2 --socket /x`.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// command is one CLI command.
type command struct {
	name    string
	args    string // the positional arguments, for usage
	summary string
	minArgs int
	maxArgs int // -1: no limit
	flags   func(r *run, fs *flag.FlagSet)
	run     func(r *run) int
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// run is one invocation: its streams, options and arguments.
type run struct {
	ctx            context.Context
	stdout, stderr io.Writer
	cmd            *command
	args           []string
	set            map[string]bool // flags given on the command line

	socket, endpoint, accessKey, secretKey, caFile, region string
	endpointFrom                                           string // "--endpoint" or the environment variable

	// Command options.
	json                            bool
	directory, user, bundle         string
	runningMode, state              string
	autostopHours, rootGiB, userGiB int
	wait                            bool
	timeout, interval               time.Duration

	// Catalog command options.
	file, name, description, image, compute, email, first, last, id, dir string
	rules, allow, deny, tags                                             multi
	selfService                                                          bool

	// Metering options.
	month string
	csv   bool

	// Encryption options.
	encryptRoot, encryptUser bool
	key, alias               string
}

// multi is a flag that may be given more than once.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func (r *run) global(fs *flag.FlagSet) {
	fs.StringVar(&r.socket, "socket", DefaultSocket, "hostd's unix socket (as root; no credentials needed)")
	fs.StringVar(&r.endpoint, "endpoint", "", "HTTPS endpoint of hostd's admin API, e.g. https://10.0.0.1:8443 (instead of the socket)")
	fs.StringVar(&r.accessKey, "access-key", "", "access key id for --endpoint (default $AWS_ACCESS_KEY_ID)")
	fs.StringVar(&r.secretKey, "secret-key", "", "secret access key for --endpoint (default $AWS_SECRET_ACCESS_KEY)")
	fs.StringVar(&r.caFile, "ca-file", "", "PEM file of the certificate(s) to trust for --endpoint, e.g. hostd's self-signed ca.pem")
	fs.StringVar(&r.region, "region", "", "SigV4 region hostd is configured with (default $AWS_REGION, else "+hostconfig.DefaultRegion+")")
}

func (r *run) usageError(format string, args ...any) int {
	fmt.Fprintf(r.stderr, "%s %s: %s\n", prog, r.cmd.name, fmt.Sprintf(format, args...))
	fmt.Fprintf(r.stderr, "usage: %s %s %s   (`%s help %s` for more)\n", prog, r.cmd.name, r.cmd.args, prog, r.cmd.name)
	return exitUsage
}

// fail reports an error from the API or the connection and returns exit code 1.
func (r *run) fail(err error) int {
	fmt.Fprintf(r.stderr, "%s %s: %s\n", prog, r.cmd.name, r.explain(err))
	return exitFail
}

func (r *run) failf(format string, args ...any) int {
	fmt.Fprintf(r.stderr, "%s %s: %s\n", prog, r.cmd.name, fmt.Sprintf(format, args...))
	return exitFail
}

// explain turns an SDK error into "ErrorType: message", or says which hostd could not be
// reached and why.
func (r *run) explain(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	var oe *net.OpError
	if errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded) {
		where := "unix socket " + r.socket
		hint := " (is hostd running? the socket needs root)"
		if r.endpoint != "" {
			where, hint = r.endpoint, ""
		}
		cause := err.Error()
		if oe != nil {
			cause = oe.Err.Error()
		}
		return fmt.Sprintf("cannot reach hostd at %s: %s%s", where, cause, hint)
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return fmt.Sprintf("cannot verify hostd's certificate at %s: %v (pin hostd's certificate with --ca-file or $AWS_CA_BUNDLE)", r.endpoint, ce.Err)
	}
	return err.Error()
}

// client builds hostd's API client for the chosen transport. Like awscli and the AWS SDKs,
// it takes the endpoint from $AWS_ENDPOINT_URL_WORKSPACES or $AWS_ENDPOINT_URL and the
// certificates to trust from $AWS_CA_BUNDLE when no flag says otherwise (--socket given
// explicitly wins over the environment's endpoint).
func (r *run) client() (*hostdclient.Client, error) {
	region := r.region
	for _, env := range []string{"AWS_REGION", "AWS_DEFAULT_REGION"} {
		if region == "" {
			region = os.Getenv(env)
		}
	}
	if r.endpoint == "" && !r.set["socket"] {
		for _, env := range []string{"AWS_ENDPOINT_URL_WORKSPACES", "AWS_ENDPOINT_URL"} {
			if v := os.Getenv(env); v != "" {
				r.endpoint, r.endpointFrom = v, "$"+env
				break
			}
		}
	}
	if r.endpoint != "" && r.caFile == "" {
		r.caFile = os.Getenv("AWS_CA_BUNDLE")
	}
	if r.endpoint == "" {
		if r.set["access-key"] || r.set["secret-key"] || r.set["ca-file"] {
			return nil, errors.New("--access-key, --secret-key and --ca-file go with --endpoint; the socket needs none")
		}
		return hostdclient.New(hostdclient.Options{Socket: r.socket, Region: region})
	}
	u, err := url.Parse(r.endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%s %q: want https://host:port (the admin API is HTTPS only)", r.endpointFrom, r.endpoint)
	}
	ak, sk := r.accessKey, r.secretKey
	if ak == "" {
		ak = os.Getenv("AWS_ACCESS_KEY_ID")
	}
	if sk == "" {
		sk = os.Getenv("AWS_SECRET_ACCESS_KEY")
	}
	if ak == "" || sk == "" {
		return nil, fmt.Errorf("%s needs an access key: --access-key and --secret-key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", r.endpointFrom)
	}
	return hostdclient.New(hostdclient.Options{Endpoint: r.endpoint, AccessKeyID: ak, SecretAccessKey: sk, CAFile: r.caFile, Region: region})
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [arguments] [options]\n\nCommands:\n", prog)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := newTable(w)
	for _, n := range names {
		c := commands[n]
		tw.row("  "+c.name+" "+c.args, c.summary)
	}
	tw.flush()
	fmt.Fprintf(w, `
Connection (any command):
  --socket PATH       hostd's unix socket, as root (default %s)
  --endpoint URL      HTTPS endpoint instead, e.g. https://10.0.0.1:8443 (default
                      $AWS_ENDPOINT_URL_WORKSPACES, else $AWS_ENDPOINT_URL, unless --socket), with
  --access-key ID     and --secret-key KEY (default $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY)
  --ca-file PEM       certificate to trust, e.g. hostd's self-signed ca.pem (default $AWS_CA_BUNDLE)
  --region NAME       the region hostd signs for (default $AWS_REGION, else %s)

'%s help <command>' describes a command's options.
`, DefaultSocket, hostconfig.DefaultRegion, prog)
}

func commandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: %s %s %s\n\n%s\n", prog, c.name, c.args, c.summary)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	r := &run{}
	if c.flags != nil {
		c.flags(r, fs)
	}
	var any bool
	fs.VisitAll(func(f *flag.Flag) {
		if !any {
			fmt.Fprintln(w, "\nOptions:")
			any = true
		}
		name, use := flag.UnquoteUsage(f)
		if name != "" {
			name = " " + name
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s%s\n      %s%s\n", f.Name, name, use, def)
	})
	fmt.Fprintf(w, "\nConnection options (--socket, --endpoint, ...): see `%s help`.\n", prog)
}
