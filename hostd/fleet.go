package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"deskhost/hostd/fleet"
	"deskhost/hostd/store"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hwid"
)

// hardwareID is this host's hardware identity when the host config does not give one
// (hostd.fleet.hardwareId): the firmware's DMI system UUID, as init reads it (hwid).
var hardwareID = func() (string, error) {
	id, err := hwid.Read("/sys", nil)
	if err != nil {
		return "", fmt.Errorf("%w: set hostd.fleet.hardwareId (dmi-uuid:… or mac:…)", err)
	}
	return id.String(), nil
}

// cmdline is the kernel command line, where a PXE-booted host finds the fleet to join.
var cmdline = func() string { b, _ := os.ReadFile("/proc/cmdline"); return string(b) }

// fleetLocal is this host's fleet settings from the host config (and, for a host told
// nothing there, the kernel command line: deskhost.join=URL deskhost.fleetca=sha256:…).
func fleetLocal(cfg *hostconfig.Config, log *slog.Logger) (fleet.Local, error) {
	f := cfg.Hostd.Fleet
	exe, err := os.Executable()
	if err != nil {
		return fleet.Local{}, err
	}
	l := fleet.Local{Dir: f.Dir, Name: f.Name, Advertise: f.Advertise, Listen: f.Listen, Join: f.Join, CAFingerprint: f.CAFingerprint,
		Members: f.Members, EtcdClientPort: f.EtcdClientPort, EtcdPeerPort: f.EtcdPeerPort, HardwareID: f.HardwareID,
		ComputeTypes: cfg.Hostd.ComputeTypes, Timeout: f.Timeout.Duration, Command: []string{exe, "etcd"}, Log: log.With("component", "fleet")}
	if l.Name == "" {
		l.Name, _ = os.Hostname()
	}
	if !f.Bootstrap && l.Join == "" {
		for _, field := range strings.Fields(cmdline()) {
			if v, ok := strings.CutPrefix(field, "deskhost.join="); ok {
				l.Join = v
			} else if v, ok := strings.CutPrefix(field, "deskhost.fleetca="); ok && l.CAFingerprint == "" {
				l.CAFingerprint = v
			}
		}
		if l.Join != "" {
			if err := hostconfig.CheckJoinURL(l.Join); err != nil {
				return l, fmt.Errorf("kernel command line deskhost.join: %w", err)
			}
		}
	}
	if l.HardwareID == "" {
		if l.HardwareID, err = hardwareID(); err != nil && l.Join != "" {
			return l, err
		}
	}
	if c := f.Capacity; c != nil {
		l.Capacity = fleet.Resources{VCPUs: c.VCPUs, MemoryMiB: c.MemoryMiB}
	} else {
		l.Capacity = detectCapacity()
	}
	l.Addresses = serviceAddresses(cfg, l.Advertise)
	return l, nil
}

// detectCapacity is what a host gives WorkSpaces when its config does not say: every
// CPU, and its memory less 2 GiB for the host itself.
func detectCapacity() fleet.Resources {
	r := fleet.Resources{VCPUs: runtime.NumCPU()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				r.MemoryMiB = max(kb/1024-2048, 512)
			}
		}
	}
	return r
}

// serviceAddresses are where this host's API, broker and gateway are reached: their
// listen addresses with advertise for an unspecified host.
func serviceAddresses(cfg *hostconfig.Config, advertise string) fleet.Addresses {
	at := func(listen string) string {
		if listen == "" {
			return ""
		}
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return ""
		}
		if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && advertise != "" {
			host = advertise
		}
		return net.JoinHostPort(host, port)
	}
	a := fleet.Addresses{API: at(cfg.Hostd.API.Listen)}
	if cfg.HasZeroclient() {
		if zc, err := cfg.Zeroclient.Resolved(); err == nil {
			a.Broker = at(zc.Broker.Listen)
			a.Gateway = at(zc.Gateway.Listen)
			if zc.Gateway.AdvertiseAddress != "" {
				_, port, _ := net.SplitHostPort(zc.Gateway.Listen)
				a.Gateway = net.JoinHostPort(zc.Gateway.AdvertiseAddress, port)
			}
		}
	}
	return a
}

// openFleet makes this host's place in the fleet: the fleet made (the first host), or
// joined (a new host: its join code shown until an administrator approves it), or as it
// was (its etcd member started if it is not running), and the fleet's store opened.
func openFleet(ctx context.Context, l fleet.Local, bootstrap bool, log *slog.Logger) (*store.Etcd, fleet.Membership, error) {
	m, ok, err := fleet.ReadMembership(l.Dir)
	if err != nil {
		return nil, m, err
	}
	switch {
	case ok && !m.Bootstrapping:
		if err := l.Promote(ctx, &m); err != nil { // starts the member; promotes one a crash left a learner
			return nil, m, err
		}
	case bootstrap || ok:
		if m, err = fleet.Bootstrap(ctx, l); err != nil {
			return nil, m, err
		}
	case l.Join != "":
		log.Info("joining the fleet", "join", l.Join, "hardwareId", l.HardwareID, "pinnedCA", l.CAFingerprint)
		m, err = fleet.JoinFleet(ctx, l, func(code string) {
			// For the console and whoever reads the log: this is what an administrator approves.
			fmt.Printf("deskhost: join code %s: approve this host on a fleet host with `hostd hosts approve %s`\n", code, code)
			log.Warn("waiting for approval to join the fleet", "code", code, "approve", "hostd hosts approve "+code, "hardwareId", l.HardwareID)
		})
		if err != nil {
			return nil, m, err
		}
	default:
		return nil, m, errors.New("hostd.fleet: this host is in no fleet yet: set bootstrap: true (the first host) or join: https://FLEET-HOST:7443 (or deskhost.join= on the kernel command line)")
	}
	st, err := openStoreWhenQuorum(ctx, l, m, log)
	if err != nil {
		return nil, m, err
	}
	l.RefreshEndpoints(ctx, st, &m)
	return st, m, nil
}

// openStoreWhenQuorum opens the fleet's store, waiting while the cluster has no quorum:
// a member restarting beside others (a power cut of the rack) is itself part of the
// quorum it waits for, so exiting would only make the supervisor restart it into the same
// wait. Any other error ends the wait.
func openStoreWhenQuorum(ctx context.Context, l fleet.Local, m fleet.Membership, log *slog.Logger) (*store.Etcd, error) {
	start, said := time.Now(), time.Time{}
	for {
		st, err := l.OpenStore(m)
		var ue *store.UnavailableError
		if err == nil || !errors.As(err, &ue) {
			if err == nil && !said.IsZero() {
				log.Info("fleet store answers: quorum is back", "waited", time.Since(start))
			}
			return st, err
		}
		if time.Since(said) >= 30*time.Second {
			log.Warn("waiting for the fleet store: hostd serves once a majority of the etcd members answer", "waited", time.Since(start), "err", err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up waiting after %s)", err, time.Since(start).Round(time.Second))
		case <-time.After(time.Second):
		}
	}
}

// zeroclientTags issues connect tags at this host's gateway for peers' brokers, through
// zeroclient's root-only admin socket (its tags live in its memory only).
type zeroclientTags struct{ socket string }

func (z zeroclientTags) IssueTag(ctx context.Context, r fleet.TagRequest) (fleet.TagGrant, error) {
	if z.socket == "" {
		return fleet.TagGrant{}, errors.New("zeroclient has no admin socket on this host (zeroclient.adminSocket)")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", z.socket)
	}}}
	body, _ := json.Marshal(map[string]string{"directoryId": r.DirectoryID, "userName": r.UserName, "workspaceId": r.WorkspaceID,
		"client": r.Client.String(), "sessionId": r.SessionID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://zeroclient/tags", bytes.NewReader(body))
	if err != nil {
		return fleet.TagGrant{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fleet.TagGrant{}, fmt.Errorf("zeroclient on this host: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.Unmarshal(b, &e)
		return fleet.TagGrant{}, fmt.Errorf("zeroclient on this host: %s", e.Error)
	}
	var out struct {
		ConnectTag string    `json:"connectTag"`
		SessionID  string    `json:"sessionId"`
		Expires    time.Time `json:"expires"`
		Hostname   string    `json:"hostname"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return fleet.TagGrant{}, fmt.Errorf("zeroclient on this host: %w", err)
	}
	return fleet.TagGrant{ConnectTag: out.ConnectTag, SessionID: out.SessionID, Expires: out.Expires, Hostname: out.Hostname}, nil
}
