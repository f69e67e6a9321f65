// Command zeroclient is deskhost's connection manager: the PCoIP-style broker zero and thin
// clients log in to over HTTPS (443), and the streaming gateway (4172) that relays their
// WorkSpace's display to any RFB client with VeNCrypt.
//
//	zeroclient serve --config /perm/deskhost.yaml     run it
//	zeroclient connect --broker https://HOST --ca ca.pem --user U --password P [--passcode C] --png out.png
//	                                                  the reference zero client: log in, allocate, stream, save a frame
//	zeroclient invite --directory D --user U          make a local user's activation link (admin socket)
//	zeroclient unlock --directory D --user U          clear a user's lockouts (admin socket)
//	zeroclient activate --broker URL --ca F --code C --password P
//	                                                  set the first password (the invitation's link)
//	zeroclient netcheck --host HOST                   round trip to the health echo on 4172/4195, judged as the guide does
//	zeroclient check-config --config FILE             validate the host config (hostconfig's one validator) and exit
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"deskhost/internal/buildinfo"
	"deskhost/internal/hostconfig"
	"deskhost/internal/logging"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/echo"
	"deskhost/zeroclient/events"
	"deskhost/zeroclient/privdrop"
	"deskhost/zeroclient/rfb"
	"deskhost/zeroclient/server"
)

const usage = `usage: zeroclient <command> [options]

Commands:
  serve --config FILE [--debug]     run the broker, gateway and health echo
  connect [options]                 the reference zero client (zeroclient connect -h)
  invite --directory D --user U     make a local directory user's activation link
  unlock --directory D --user U     clear a user's login lockouts
  activate [options]                set a first password with an activation code
  netcheck --host HOST              measure the round trip to the health echo
  check-config --config FILE        validate the configuration and exit
  version                           print the build (module version, VCS revision)

serve also takes --log-format text|json and --log-level.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) int{
		"serve": serve, "connect": connect, "invite": adminCmd("invite"), "unlock": adminCmd("unlock"),
		"activate": activate, "netcheck": netcheck, "check-config": checkConfig,
		"version": func([]string) int { buildinfo.Print(os.Stdout, "zeroclient"); return 0 },
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		if os.Args[1] == "help" || os.Args[1] == "-h" || os.Args[1] == "--help" {
			fmt.Print(usage)
			return
		}
		fmt.Fprintf(os.Stderr, "zeroclient: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	os.Exit(cmd(os.Args[2:]))
}

// parseFailed is the exit status for a flag error: 0 for -h/--help (usage printed), 2 else.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "zeroclient: "+format+"\n", args...)
	return 1
}

// loadConfig loads the host config, every section validated by hostconfig (the one
// validator: zeroclient's section and the directories' login settings included); zeroclient
// needs its own section.
func loadConfig(path string) (*hostconfig.Config, error) {
	c, err := hostconfig.Load(path)
	if err != nil {
		return nil, err
	}
	if !c.HasZeroclient() {
		return nil, fmt.Errorf("host config %s: no zeroclient section (at least zeroclient.tls: the broker's certificate)", path)
	}
	return c, nil
}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "/perm/deskhost.yaml", "host config file")
	debug := fs.Bool("debug", false, "log at debug level (--log-level debug)")
	logFlags := logging.Register(fs)
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	logFlags.Debug(*debug)
	log, err := logFlags.Logger(os.Stderr)
	if err != nil {
		fail("serve: %v", err)
		return 2
	}
	c, err := loadConfig(*path)
	if err != nil {
		log.Error("zeroclient stopped", "err", err)
		return 1
	}
	var opts server.Options
	var id privdrop.Identity
	if u := c.Zeroclient.User; u != "" {
		// Before anything is opened: this re-executes zeroclient once.
		if err := privdrop.NoNewPrivs(); err != nil {
			log.Error("zeroclient stopped", "err", err)
			return 1
		}
		if id, err = privdrop.Lookup(u); err != nil {
			log.Error("zeroclient stopped", "err", err)
			return 1
		}
		opts.RunAs = &events.Owner{UID: id.UID, GID: id.GID}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := server.New(c, log, opts)
	if err != nil {
		log.Error("zeroclient stopped", "err", err)
		return 1
	}
	// Everything that needs root is done: ports bound, files open, admin socket made.
	if u := c.Zeroclient.User; u != "" {
		if err := privdrop.Become(id); err != nil {
			done, cancel := context.WithCancel(ctx)
			cancel()
			s.Run(done) // closes what New opened
			log.Error("zeroclient stopped", "err", err)
			return 1
		}
		log.Info("dropped root", "user", u, "uid", id.UID, "gid", id.GID, "groups", id.Groups)
	} else {
		log.Warn("zeroclient runs as root: set zeroclient.user")
	}
	s.Run(ctx)
	return 0
}

func checkConfig(args []string) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	path := fs.String("config", "/perm/deskhost.yaml", "host config file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if _, err := loadConfig(*path); err != nil {
		return fail("%v", err)
	}
	fmt.Println("ok")
	return 0
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// ConnectResult is what connect prints (JSON).
type ConnectResult struct {
	DirectoryID string  `json:"directoryId,omitempty"`
	WorkspaceID string  `json:"workspaceId"`
	State       string  `json:"state"`
	Gateway     string  `json:"gateway"`
	SessionID   string  `json:"sessionId"`
	ConnectTag  string  `json:"connectTag,omitempty"`
	Security    string  `json:"security,omitempty"`
	Width       int     `json:"width,omitempty"`
	Height      int     `json:"height,omitempty"`
	Colours     int     `json:"colours,omitempty"`
	PNG         string  `json:"png,omitempty"`
	Updates     int     `json:"updates,omitempty"`
	HeldSeconds float64 `json:"heldSeconds,omitempty"`
	Seconds     float64 `json:"seconds"`
}

func connect(args []string) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	brokerURL := fs.String("broker", "", "broker URL, https://HOST[:PORT]")
	ca := fs.String("ca", "", "PEM file of the CA to trust (the broker's ca.pem)")
	user := fs.String("user", "", "user name (user, NETBIOS\\user or fqdn\\user)")
	password := fs.String("password", "", "password (or --password-file, or $ZEROCLIENT_PASSWORD)")
	passwordFile := fs.String("password-file", "", "file holding the password")
	domain := fs.String("domain", "", "directory domain (default: from --registration-code, else the broker's only one)")
	regCode := fs.String("registration-code", "", "registration code: learn the directory from the broker first")
	var passcodes multi
	fs.Var(&passcodes, "passcode", "MFA passcode; repeat for each prompt of a challenge")
	totpSecret := fs.String("totp-secret", "", "TOTP secret: answer the passcode prompt with its current code")
	pngPath := fs.String("png", "", "save the desktop frame as this PNG")
	security := fs.String("security", "X509Plain", "VeNCrypt sub-type: X509Plain (whole tag) or X509Vnc (VNC auth)")
	noStream := fs.Bool("no-stream", false, "stop after allocate-resource (print the connect information)")
	printTag := fs.Bool("print-tag", false, "print the connect tag (it is a one-time credential)")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for a non-blank frame")
	hold := fs.Duration("hold", 0, "after the first frame, keep streaming this long (the whole frame each second); fails if the stream breaks")
	gateway := fs.String("gateway", "", "stream from this gateway (HOST:PORT) instead of the one allocate-resource names: a check that a tag is redeemable only at its own")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *brokerURL == "" || *ca == "" || *user == "" {
		return fail("connect needs --broker, --ca and --user")
	}
	pw := *password
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fail("%v", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	if pw == "" {
		pw = os.Getenv("ZEROCLIENT_PASSWORD")
	}
	sub := rfb.VeNCryptX509Plain
	switch *security {
	case "X509Plain":
	case "X509Vnc":
		sub = rfb.VeNCryptX509Vnc
	default:
		return fail("--security %q: want X509Plain or X509Vnc", *security)
	}
	start := time.Now()
	tlsCfg, err := client.TLSConfig(*ca, "")
	if err != nil {
		return fail("%v", err)
	}
	b, err := client.NewBroker(*brokerURL, tlsCfg)
	if err != nil {
		return fail("%v", err)
	}
	res := ConnectResult{}
	if *regCode != "" {
		reg, err := b.Register(*regCode)
		if err != nil {
			return fail("%v", err)
		}
		res.DirectoryID = reg.DirectoryID
		if *domain == "" {
			*domain = reg.DirectoryName
		}
	}
	if _, err := b.Hello(client.Identity); err != nil {
		return fail("hello: %v", err)
	}
	var answer func(string) (string, error)
	if *totpSecret != "" {
		answer = func(string) (string, error) { return auth.TOTPCode(*totpSecret, time.Now()) }
	}
	if err := b.Login(*user, pw, *domain, passcodes, answer); err != nil {
		return fail("login: %v", err)
	}
	defer b.Bye()
	rs, err := b.Resources()
	if err != nil {
		return fail("get-resource-list: %v", err)
	}
	if len(rs) == 0 {
		return fail("no desktop offered")
	}
	alloc, err := b.Allocate(rs[0].ID)
	if err != nil {
		return fail("allocate-resource: %v", err)
	}
	res.WorkspaceID, res.State, res.Gateway, res.SessionID = alloc.ResourceID, rs[0].State, client.TargetAddr(alloc.Target), alloc.Target.SessionID
	if *printTag {
		res.ConnectTag = alloc.Target.ConnectTag
	}
	if *gateway != "" {
		res.Gateway = *gateway
	}
	if !*noStream {
		res.Security = *security
		gwTLS := tlsCfg.Clone()
		gwTLS.ServerName = alloc.Target.SNI
		if net.ParseIP(alloc.Target.IPAddress) != nil {
			gwTLS.ServerName = alloc.Target.IPAddress // the made certificate names every host address
		}
		f, err := client.StreamHeld(res.Gateway, gwTLS, sub, *user, alloc.Target.ConnectTag, *timeout, *hold)
		if err != nil {
			return fail("stream: %v", err)
		}
		res.Width, res.Height, res.Colours = f.Image.Bounds().Dx(), f.Image.Bounds().Dy(), f.Colours
		res.Updates, res.HeldSeconds = f.Updates, f.Held.Seconds()
		if *pngPath != "" {
			var buf bytes.Buffer
			if err := png.Encode(&buf, f.Image); err != nil {
				return fail("png: %v", err)
			}
			if err := os.WriteFile(*pngPath, buf.Bytes(), 0o644); err != nil {
				return fail("%v", err)
			}
			res.PNG = *pngPath
		}
		if f.Colours < 2 {
			out, _ := json.Marshal(res)
			fmt.Println(string(out))
			return fail("%v", client.ErrBlank)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	return 0
}

func activate(args []string) int {
	fs := flag.NewFlagSet("activate", flag.ContinueOnError)
	brokerURL := fs.String("broker", "", "broker URL, https://HOST[:PORT]")
	ca := fs.String("ca", "", "PEM file of the CA to trust")
	code := fs.String("code", "", "activation code from the invitation")
	password := fs.String("password", "", "the new password (or $ZEROCLIENT_PASSWORD)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *password == "" {
		*password = os.Getenv("ZEROCLIENT_PASSWORD")
	}
	tlsCfg, err := client.TLSConfig(*ca, "")
	if err != nil {
		return fail("%v", err)
	}
	b, err := client.NewBroker(*brokerURL, tlsCfg)
	if err != nil {
		return fail("%v", err)
	}
	res, err := b.Activate(*code, *password)
	if err != nil {
		return fail("%v", err)
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	return 0
}

// adminCmd runs an operator command over zeroclient's admin socket.
func adminCmd(name string) func([]string) int {
	return func(args []string) int {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		sock := fs.String("socket", "/run/deskhost/zeroclient/admin.sock", "zeroclient's admin socket (zeroclient.adminSocket)")
		dir := fs.String("directory", "", "directory id (d-...)")
		user := fs.String("user", "", "user name")
		if err := fs.Parse(args); err != nil {
			return parseFailed(err)
		}
		if *dir == "" || *user == "" {
			return fail("%s needs --directory and --user", name)
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *sock)
		}}}
		body, _ := json.Marshal(server.InviteRequest{DirectoryID: *dir, UserName: *user})
		r, err := hc.Post("http://zeroclient/"+name, "application/json", bytes.NewReader(body))
		if err != nil {
			return fail("cannot reach zeroclient at %s: %v (is it running? the socket needs root)", *sock, err)
		}
		defer r.Body.Close()
		out, _ := io.ReadAll(r.Body)
		if r.StatusCode != http.StatusOK {
			var e struct{ Error string }
			json.Unmarshal(out, &e)
			return fail("%s: %s", name, e.Error)
		}
		fmt.Print(string(out))
		return 0
	}
}

func netcheck(args []string) int {
	fs := flag.NewFlagSet("netcheck", flag.ContinueOnError)
	host := fs.String("host", "", "the host's client-facing address")
	ports := fs.String("ports", "4172,4195", "ports to check")
	n := fs.Int("count", 5, "probes per port and protocol")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *host == "" {
		return fail("netcheck needs --host")
	}
	code := 0
	for _, p := range strings.Split(*ports, ",") {
		proto := echo.PCoIP
		if p == "4195" {
			proto = echo.WSP
		}
		for _, network := range []string{"udp", "tcp"} {
			rtt, err := probe(network, net.JoinHostPort(*host, p), *n)
			if err != nil {
				fmt.Printf("%s/%s: %v\n", network, p, err)
				code = 1
				continue
			}
			fmt.Printf("%s/%s: rtt %s: %s for %s\n", network, p, rtt.Round(time.Microsecond), echo.Classify(proto, rtt), proto)
		}
	}
	return code
}

// probe returns the best of n echo round trips. On TCP 4172 the gateway greets with its
// RFB version first; that greeting is skipped.
func probe(network, addr string, n int) (time.Duration, error) {
	best := time.Duration(0)
	payload := []byte("deskhost-netcheck")
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout(network, addr, 3*time.Second)
		if err != nil {
			return 0, err
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if network == "tcp" {
			// Skip a greeting if one arrives promptly.
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			var g [12]byte
			if _, err := io.ReadFull(c, g[:]); err == nil && string(g[:4]) != "RFB " {
				c.Close()
				return 0, errors.New("unexpected greeting")
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
		}
		start := time.Now()
		if _, err := c.Write(payload); err != nil {
			c.Close()
			return 0, err
		}
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(c, got); err != nil {
			c.Close()
			return 0, fmt.Errorf("no echo: %w", err)
		}
		rtt := time.Since(start)
		c.Close()
		if !bytes.Equal(got, payload) {
			return 0, errors.New("echo differs from the probe")
		}
		if best == 0 || rtt < best {
			best = rtt
		}
	}
	return best, nil
}
