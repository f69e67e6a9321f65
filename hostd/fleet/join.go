package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/store"
	"deskhost/internal/atomicfile"
	"deskhost/internal/certs"
)

// How a host joins (README: "Joining"):
//
//  1. The new host (empty /perm) makes its key and connects to a fleet host's fleet port.
//     It has no CA to check the server against: it takes the CA the server's chain ends
//     in (or, with caFingerprint set, insists on that one), and shows the join code,
//     JoinCode(CA, its public key), on its console and in its log.
//  2. It asks to join (POST /fleet/v1/join: hardware id, name, addresses, capacity, public
//     key). The fleet host computes the same code from the fleet's CA and the key it got,
//     and keeps the request under that code; a preapproved hardware id is approved at once.
//  3. An administrator approves the code the console shows (`hostd hosts approve CODE`).
//     A code the fleet does not list means the new host did not reach this fleet (or the
//     fleet got another key): nothing to approve.
//  4. The fleet host that holds the request signs the new host's certificate for its key
//     (any host can: the CA is in the store), makes it a learner of the etcd cluster if
//     the fleet has fewer members than it keeps, and answers: host id, certificate, CA,
//     the members' addresses. The new host checks the CA is the one its code was made
//     with and the certificate is for its key, starts its member (and has it promoted to
//     voter once it caught up), and starts serving.

type etcdMemberT = etcdserverpb.Member

// joinWait is how long one join request waits for an approval before it answers
// "waiting" and the new host asks again.
const joinWait = 45 * time.Second

type joinWire struct {
	HardwareID string    `json:"hardwareId"`
	Name       string    `json:"name"`
	Addresses  Addresses `json:"addresses"`
	Capacity   Resources `json:"capacity"`
	PublicKey  []byte    `json:"publicKey"`
}

type joinAnswer struct {
	Code      string       `json:"code"`
	Approved  bool         `json:"approved"`
	HostID    string       `json:"hostId,omitempty"`
	FleetID   string       `json:"fleetId,omitempty"`
	CA        []byte       `json:"ca,omitempty"`
	Cert      []byte       `json:"cert,omitempty"`
	Endpoints []string     `json:"endpoints,omitempty"`
	Member    *MemberState `json:"member,omitempty"`
}

// join serves a new host's request to join (no client certificate: it has none yet).
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var in joinWire
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&in); err != nil {
		httpError(w, http.StatusBadRequest, "bad join request: "+err.Error())
		return
	}
	if err := CheckHardwareID(in.HardwareID); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if in.Name == "" || utf8.RuneCountInString(in.Name) > 64 || strings.ContainsAny(in.Name, "\x00\n\r\t") {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("host name %q: 1 to 64 characters on one line", in.Name))
		return
	}
	if _, err := x509.ParsePKIXPublicKey(in.PublicKey); err != nil {
		httpError(w, http.StatusBadRequest, "public key: "+err.Error())
		return
	}
	ca, fleetID, err := GetCA(s.Store)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	code := JoinCode(ca.Cert.Raw, in.PublicKey)
	now := s.Now()
	var j JoinRequest
	err = s.Store.Update(func(tx store.Tx) error {
		var err error
		j, err = store.GetJSON[JoinRequest](tx, Joins, code)
		if err == nil {
			return nil // asked again (the previous wait ran out): the same request
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		j = JoinRequest{Code: code, HardwareID: in.HardwareID, Name: in.Name, Addresses: in.Addresses, Capacity: in.Capacity,
			PublicKey: in.PublicKey, Requested: now}
		p, err := store.GetJSON[Preapproval](tx, Preapproved, in.HardwareID)
		if err == nil && now.Before(p.Expires) {
			approve(&j, "preapproval", now)
			if err := tx.Delete(Preapproved, in.HardwareID); err != nil { // once
				return err
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return store.PutJSON(tx, Joins, code, j)
	})
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !j.Approved {
		s.Log.Info("a host asks to join; approve it with `hostd hosts approve CODE` if the code is the one its console shows",
			"code", FormatCode(code), "name", j.Name, "hardwareId", j.HardwareID, "from", r.RemoteAddr)
		if j, err = s.waitApproval(r.Context(), code); err != nil || !j.Approved {
			writeJSON(w, http.StatusOK, joinAnswer{Code: code})
			return
		}
	}
	ans, err := s.issue(r.Context(), j, ca, fleetID)
	if err != nil {
		s.Log.Error("issue a joining host's credentials", "code", FormatCode(code), "err", err)
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.Log.Info("host joined: credentials issued", "host", j.HostID, "name", j.Name, "approvedBy", j.ApprovedBy, "etcdMember", ans.Member != nil)
	writeJSON(w, http.StatusOK, ans)
}

// waitApproval waits for the join request code to be approved (watching the store), for
// at most joinWait.
func (s *Server) waitApproval(ctx context.Context, code string) (JoinRequest, error) {
	ctx, cancel := context.WithTimeout(ctx, joinWait)
	defer cancel()
	var events <-chan store.Event
	if w, ok := s.Store.(store.Watcher); ok {
		events = w.Watch(ctx, Joins, code, 0)
	}
	for {
		j, err := readJoin(s.Store, code)
		if err != nil || j.Approved {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, nil
		case <-events:
		case <-time.After(2 * time.Second): // a watch that went away: look anyway
		}
	}
}

func readJoin(st store.Store, code string) (JoinRequest, error) {
	var j JoinRequest
	err := st.View(func(tx store.Tx) error {
		var err error
		j, err = store.GetJSON[JoinRequest](tx, Joins, code)
		return err
	})
	return j, err
}

// issue makes an approved host's credentials: its certificate and, while the fleet has
// fewer etcd members than it keeps, its membership (as a learner, promoted once it has
// caught up). Asked again (an answer lost), it answers the same.
func (s *Server) issue(ctx context.Context, j JoinRequest, ca *certs.CA, fleetID string) (joinAnswer, error) {
	e, ok := s.Store.(etcdStore)
	if !ok {
		return joinAnswer{}, errors.New("this host's store is not the fleet's etcd")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ml, err := e.Client().MemberList(cctx)
	if err != nil {
		return joinAnswer{}, fmt.Errorf("list the etcd members: %w", err)
	}
	ans := joinAnswer{Code: j.Code, Approved: true, HostID: j.HostID, FleetID: fleetID, CA: ca.Cert.Raw}
	member := slices.ContainsFunc(ml.Members, func(m *etcdMemberT) bool { return slices.Contains(m.PeerURLs, j.Addresses.EtcdPeer) })
	if !member && len(ml.Members) < s.Local.Members && j.Addresses.EtcdPeer != "" {
		member = true
	}
	if member {
		initial, err := etcdmember.AddLearner(cctx, e.Client(), j.HostID, j.Addresses.EtcdPeer)
		if err != nil {
			return joinAnswer{}, err
		}
		ans.Member = &MemberState{Name: j.HostID, InitialCluster: initial, State: "existing", Token: fleetID, Learner: true}
	}
	for _, m := range ml.Members {
		if !m.IsLearner {
			ans.Endpoints = append(ans.Endpoints, m.ClientURLs...)
		}
	}
	var names []string
	for _, a := range []string{j.Addresses.Fleet, j.Addresses.API, j.Addresses.EtcdClient} {
		if h := hostOf(a); h != "" && !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	if ans.Cert, err = HostCert(ca, j.HostID, names, j.PublicKey, s.Now()); err != nil {
		return joinAnswer{}, err
	}
	return ans, nil
}

// hostOf is the host part of host:port or of a URL.
func hostOf(a string) string {
	a = strings.TrimPrefix(a, "https://")
	if i := strings.LastIndexByte(a, ':'); i > 0 {
		a = a[:i]
	}
	return strings.Trim(a, "[]")
}

// JoinFleet joins this host to the fleet whose host l.Join is: it shows the join code
// (show, and the join code file for the console), waits for the approval (or a
// preapproval of its hardware id), keeps the credentials it gets, starts its etcd member
// if it is to run one, and returns its membership. A host that already joined returns at
// once.
func JoinFleet(ctx context.Context, l Local, show func(code string)) (Membership, error) {
	if m, ok, err := ReadMembership(l.Dir); err != nil || ok {
		return m, err
	}
	_, pub, err := l.hostKey()
	if err != nil {
		return Membership{}, err
	}
	shown := ""
	backoff := time.Second
	for {
		ans, code, err := l.askToJoin(ctx, pub, func(code string) {
			if code != shown {
				shown = code
				atomicfile.WriteFile(l.JoinCodeFile(), []byte(FormatCode(code)+"\n"), 0o644)
				show(FormatCode(code))
			}
		})
		switch {
		case err != nil:
			l.Log.Warn("join: fleet host not reached; trying again", "join", l.Join, "err", err)
			select {
			case <-ctx.Done():
				return Membership{}, ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 15*time.Second)
			continue
		case !ans.Approved:
			backoff = time.Second
			continue
		}
		m, err := l.keep(ctx, ans, code, pub)
		if err == nil {
			os.Remove(l.JoinCodeFile())
		}
		return m, err
	}
}

// askToJoin makes one join request: one connection for the CA and the code (shown before
// the request, which may wait for the approval), one for the request.
func (l Local) askToJoin(ctx context.Context, pub []byte, show func(string)) (joinAnswer, string, error) {
	var ca []byte
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // checked below: against the code, or the pin
		VerifyConnection: func(cs tls.ConnectionState) error {
			c, err := caOf(cs.PeerCertificates)
			if err != nil {
				return err
			}
			if l.CAFingerprint != "" && !strings.EqualFold(Fingerprint(c.Raw), l.CAFingerprint) {
				return fmt.Errorf("the fleet host's CA is %s, not the pinned %s", Fingerprint(c.Raw), l.CAFingerprint)
			}
			if ca != nil && !bytes.Equal(ca, c.Raw) {
				return errors.New("the fleet host's CA changed between two connections")
			}
			ca = c.Raw
			return nil
		}}
	addr := strings.TrimSuffix(strings.TrimPrefix(l.Join, "https://"), "/")
	d := tls.Dialer{Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return joinAnswer{}, "", err
	}
	conn.Close()
	code := JoinCode(ca, pub)
	show(code)
	body := mustJSON(joinWire{HardwareID: l.HardwareID, Name: l.Name, Addresses: l.Self(Membership{Member: &MemberState{}}).Addresses,
		Capacity: l.Capacity, PublicKey: pub})
	hc := &http.Client{Timeout: joinWait + 30*time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/fleet/v1/join", bytes.NewReader(body))
	if err != nil {
		return joinAnswer{}, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return joinAnswer{}, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorBody
		json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&e)
		return joinAnswer{}, "", fmt.Errorf("the fleet host refused: %s (HTTP %d)", e.Error, resp.StatusCode)
	}
	var ans joinAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ans); err != nil {
		return joinAnswer{}, "", fmt.Errorf("join answer: %w", err)
	}
	if ans.Code != code {
		// Only something between this host and the fleet makes the two differ.
		return joinAnswer{}, "", fmt.Errorf("the fleet host computed join code %s for this host, this host %s: not joining through a connection that is not end to end", FormatCode(ans.Code), FormatCode(code))
	}
	return ans, code, nil
}

// keep checks and keeps an approved join's credentials, and starts the member.
func (l Local) keep(ctx context.Context, ans joinAnswer, code string, pub []byte) (Membership, error) {
	caCert, err := x509.ParseCertificate(ans.CA)
	if err != nil {
		return Membership{}, fmt.Errorf("join: the fleet CA: %w", err)
	}
	if JoinCode(ans.CA, pub) != code {
		return Membership{}, errors.New("join: the credentials came under another CA than the one the join code was made with")
	}
	cert, err := x509.ParseCertificate(ans.Cert)
	if err != nil {
		return Membership{}, fmt.Errorf("join: this host's certificate: %w", err)
	}
	certPub, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if !bytes.Equal(certPub, pub) || cert.CheckSignatureFrom(caCert) != nil || cert.Subject.CommonName != ans.HostID {
		return Membership{}, errors.New("join: the certificate is not this host's key's, signed by the fleet CA, for the host id given")
	}
	if err := certs.WritePEM(l.CAFile(), ans.CA, false); err != nil {
		return Membership{}, err
	}
	if err := certs.WritePEM(l.CertFile(), ans.Cert, false); err != nil {
		return Membership{}, err
	}
	m := Membership{FleetID: ans.FleetID, HostID: ans.HostID, CAFingerprint: Fingerprint(ans.CA), Endpoints: ans.Endpoints, Member: ans.Member}
	if err := l.writeState(m); err != nil {
		return Membership{}, err
	}
	l.Log.Info("joined the fleet", "fleet", m.FleetID, "host", m.HostID, "etcdMember", m.Member != nil)
	return m, l.Promote(ctx, &m)
}

// Promote starts this host's etcd member if it runs one, and has the cluster promote it
// from learner to voter once it has caught up.
func (l Local) Promote(ctx context.Context, m *Membership) error {
	if m.Member == nil {
		return nil
	}
	if err := l.StartMember(*m); err != nil {
		return err
	}
	if !m.Member.Learner {
		return nil
	}
	st, err := l.waitStore(ctx, *m)
	if err != nil {
		return err
	}
	defer st.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := etcdmember.Promote(pctx, st.Client(), m.Member.Name); err != nil {
		return err
	}
	m.Member.Learner = false
	l.RefreshEndpoints(ctx, st, m)
	if err := l.writeState(*m); err != nil {
		return err
	}
	l.Log.Info("etcd member promoted to voter", "name", m.Member.Name)
	return nil
}
