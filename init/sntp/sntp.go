// Package sntp is a small SNTP client (RFC 4330): it asks NTP servers for the time and
// sets the system clock from the first good answer. The broker's one-time connect tags
// and TLS certificates need a right clock, so init runs it before zeroclient starts.
package sntp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ntpEpoch is 1900-01-01, the NTP era 0 origin.
var ntpEpoch = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// Result is one server's answer.
type Result struct {
	Server  string
	Time    time.Time     // the server's time at our receive moment
	Offset  time.Duration // Time - local clock
	RTT     time.Duration
	Stratum int
}

func toNTP(t time.Time) uint64 {
	d := t.Sub(ntpEpoch)
	sec := uint64(d / time.Second)
	frac := uint64(d%time.Second) << 32 / uint64(time.Second)
	return sec<<32 | frac
}

func fromNTP(v uint64) time.Time {
	sec, frac := v>>32, v&0xffffffff
	return ntpEpoch.Add(time.Duration(sec)*time.Second + time.Duration(frac*uint64(time.Second)>>32))
}

// Query asks one server ("host" or "host:port", port 123 by default).
func Query(ctx context.Context, server string) (Result, error) {
	addr := server
	if _, _, err := net.SplitHostPort(server); err != nil {
		addr = net.JoinHostPort(server, "123")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return Result{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	}
	req := make([]byte, 48)
	req[0] = 0<<6 | 4<<3 | 3 // LI 0, version 4, mode 3 (client)
	t1 := time.Now()
	binary.BigEndian.PutUint64(req[40:], toNTP(t1)) // transmit timestamp, echoed back as originate
	if _, err := c.Write(req); err != nil {
		return Result{}, fmt.Errorf("ntp %s: %w", server, err)
	}
	resp := make([]byte, 48)
	for {
		n, err := c.Read(resp)
		if err != nil {
			return Result{}, fmt.Errorf("ntp %s: %w", server, err)
		}
		t4 := time.Now()
		if n < 48 {
			continue
		}
		if binary.BigEndian.Uint64(resp[24:]) != binary.BigEndian.Uint64(req[40:]) {
			continue // not the answer to our request
		}
		mode, stratum := resp[0]&7, int(resp[1])
		if mode != 4 && mode != 5 {
			return Result{}, fmt.Errorf("ntp %s: answer in mode %d, not server", server, mode)
		}
		if stratum == 0 || stratum > 15 {
			return Result{}, fmt.Errorf("ntp %s: unsynchronized (stratum %d)", server, stratum)
		}
		if resp[0]>>6 == 3 {
			return Result{}, fmt.Errorf("ntp %s: clock not synchronized (leap indicator 3)", server)
		}
		t2 := fromNTP(binary.BigEndian.Uint64(resp[32:]))
		t3 := fromNTP(binary.BigEndian.Uint64(resp[40:]))
		// RFC 4330: offset = ((T2 - T1) + (T3 - T4)) / 2, delay = (T4 - T1) - (T3 - T2).
		offset := (t2.Sub(t1) + t3.Sub(t4)) / 2
		rtt := t4.Sub(t1) - t3.Sub(t2)
		return Result{Server: server, Time: t4.Add(offset), Offset: offset, RTT: rtt, Stratum: stratum}, nil
	}
}

// Sync asks the servers in order until one answers, then steps the clock by its offset.
func Sync(ctx context.Context, servers []string) (Result, error) {
	if len(servers) == 0 {
		return Result{}, errors.New("no NTP servers configured")
	}
	var errs []error
	for _, s := range servers {
		r, err := Query(ctx, s)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if err := Step(r.Offset); err != nil {
			return r, fmt.Errorf("setting the clock: %w", err)
		}
		return r, nil
	}
	return Result{}, errors.Join(errs...)
}

// Step moves the system clock by offset.
func Step(offset time.Duration) error {
	tv := unix.NsecToTimeval(time.Now().Add(offset).UnixNano())
	return unix.Settimeofday(&tv)
}

// Serve answers SNTP requests on c with the local clock as a stratum-2 server (for tests
// and for a host that should serve its VMs). It returns when c is closed.
func Serve(c net.PacketConn) error {
	buf := make([]byte, 512)
	for {
		n, addr, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		rx := time.Now()
		if n < 48 || buf[0]&7 != 3 {
			continue
		}
		resp := make([]byte, 48)
		resp[0] = 0<<6 | (buf[0]>>3&7)<<3 | 4
		resp[1] = 2
		resp[2] = buf[2]
		resp[3] = 0xec // precision ~2^-20 s
		copy(resp[12:16], "LOCL")
		binary.BigEndian.PutUint64(resp[16:], toNTP(rx))
		copy(resp[24:32], buf[40:48]) // originate = the client's transmit
		binary.BigEndian.PutUint64(resp[32:], toNTP(rx))
		binary.BigEndian.PutUint64(resp[40:], toNTP(time.Now()))
		_, _ = c.WriteTo(resp, addr)
	}
}
