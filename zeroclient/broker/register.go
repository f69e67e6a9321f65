package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/policy"
)

// Registration is what a registration code tells a client about its directory.
type Registration struct {
	DirectoryID   string          `json:"directoryId"`
	DirectoryName string          `json:"directoryName"`
	Alias         string          `json:"alias,omitempty"`
	NetBIOSName   string          `json:"netbiosName"`
	Type          string          `json:"type"`
	MFA           RegistrationMFA `json:"mfa"`
	DeviceTypes   map[string]bool `json:"deviceTypes"`
	Broker        string          `json:"broker"`
	GatewayPort   int             `json:"gatewayPort"`
}

// RegistrationMFA says whether logins take a passcode.
type RegistrationMFA struct {
	Enabled bool   `json:"enabled"`
	Type    string `json:"type,omitempty"`
	Status  string `json:"status,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

type jsonError struct {
	Error string `json:"error"`
}

// readJSONOrForm reads a small request body as JSON or form fields into a string map.
func readJSONOrForm(w http.ResponseWriter, r *http.Request) (map[string]string, int, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(w, r.Body, 8<<10)
	switch ct {
	case "application/json":
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, http.StatusRequestEntityTooLarge, errors.New("request body too large")
		}
		m := map[string]string{}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("request body is not a JSON object of strings: %v", err)
		}
		return m, 0, nil
	case "application/x-www-form-urlencoded":
		r.Body = body
		if err := r.ParseForm(); err != nil {
			return nil, http.StatusBadRequest, err
		}
		m := map[string]string{}
		for k := range r.PostForm {
			m[k] = r.PostForm.Get(k)
		}
		return m, 0, nil
	}
	return nil, http.StatusUnsupportedMediaType, errors.New("Content-Type must be application/json or application/x-www-form-urlencoded")
}

// serveRegistration answers a registration code with the directory's settings, or the
// guide's registration error for an unknown or deregistered code.
func (b *Broker) serveRegistration(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, jsonError{"registration takes POST"})
		return
	}
	m, status, err := readJSONOrForm(w, r)
	if err != nil {
		writeJSON(w, status, jsonError{err.Error()})
		return
	}
	d := b.c.Auth.ByRegistrationCode(m["registrationCode"])
	if d == nil {
		b.c.Log.Info("broker: unknown registration code", "client", r.RemoteAddr)
		writeJSON(w, http.StatusNotFound, jsonError{MsgRegistration})
		return
	}
	writeJSON(w, http.StatusOK, registrationOf(d, b.c.Hostname, b.c.GatewayPort))
}

func registrationOf(d *auth.Directory, hostname string, gatewayPort int) Registration {
	reg := Registration{DirectoryID: d.ID, DirectoryName: d.Name, Alias: d.Alias, NetBIOSName: d.NetBIOS(),
		Type: string(d.Login.Kind()), DeviceTypes: map[string]bool{}, Broker: hostname, GatewayPort: gatewayPort}
	if m := d.Login.MFA; m != nil {
		reg.MFA = RegistrationMFA{Enabled: true, Type: string(m.Type), Status: string(m.MFAStatusOrDefault())}
	}
	for t, ok := range d.Login.DeviceAccess.Map() {
		reg.DeviceTypes[string(t)] = ok
	}
	return reg
}

// ActivationResult is what a successful activation returns.
type ActivationResult struct {
	DirectoryID string `json:"directoryId"`
	UserName    string `json:"userName"`
	// TOTPSecret and TOTPURI enroll the user's authenticator app (TOTP directories).
	TOTPSecret string `json:"totpSecret,omitempty"`
	TOTPURI    string `json:"totpUri,omitempty"`
}

var activatePage = template.Must(template.New("a").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Activate your WorkSpaces account</title></head>
<body><h1>Activate your WorkSpaces account</h1>
<p>{{.User}} in {{.Dir}}. Choose a password: 8 to 64 characters, with characters from at least {{.Classes}} of:
lowercase letters, uppercase letters, numbers, and <code>{{.Special}}</code>.</p>
<form method="post" action="/activate">
<input type="hidden" name="code" value="{{.Code}}">
<label>Password <input type="password" name="password" autocomplete="new-password" required></label>
<button type="submit">Activate</button>
</form></body></html>
`))

// serveActivate is the invitation's one-time activation step for local directories: GET
// shows the form, POST (code, password) sets the first password and, for TOTP
// directories, enrolls a TOTP secret. A used or expired code, or a password the policy
// refuses, changes nothing.
func (b *Broker) serveActivate(w http.ResponseWriter, r *http.Request) {
	now := b.c.Now()
	switch r.Method {
	case http.MethodGet:
		code := r.URL.Query().Get("code")
		dirID, user, err := b.c.Creds.Lookup(code, now)
		d := b.c.Auth.ByID(dirID)
		if err != nil || d == nil {
			http.Error(w, credstore.ErrNoActivation.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		activatePage.Execute(w, map[string]any{"User": user, "Dir": d.Name, "Code": code,
			"Classes": d.Login.PasswordPolicy.Classes(), "Special": policy.SpecialCharacters})
	case http.MethodPost:
		m, status, err := readJSONOrForm(w, r)
		if err != nil {
			writeJSON(w, status, jsonError{err.Error()})
			return
		}
		var res ActivationResult
		var policyErr error
		_, _, err = b.c.Creds.Activate(m["code"], now, func(dirID, user string) (credstore.Credential, error) {
			d := b.c.Auth.ByID(dirID)
			if d == nil || d.Login.Kind() != catalog.TypeLocal {
				return credstore.Credential{}, credstore.ErrNoActivation
			}
			if policyErr = policy.CheckPassword(m["password"], d.Login.PasswordPolicy); policyErr != nil {
				return credstore.Credential{}, policyErr
			}
			hash, err := b.c.Auth.HashPassword(r.Context(), m["password"])
			if err != nil {
				return credstore.Credential{}, err
			}
			c := credstore.Credential{Hash: hash, PasswordAt: now}
			res = ActivationResult{DirectoryID: dirID, UserName: user}
			if mfa := d.Login.MFA; mfa != nil && mfa.Type == catalog.MFATOTP {
				if c.TOTPSecret, res.TOTPURI, err = auth.NewTOTPSecret("deskhost "+d.Name, user+"@"+d.Name); err != nil {
					return credstore.Credential{}, err
				}
				res.TOTPSecret = c.TOTPSecret
			}
			return c, nil
		})
		switch {
		case policyErr != nil:
			writeJSON(w, http.StatusBadRequest, jsonError{policyErr.Error()})
		case errors.Is(err, auth.ErrBusy):
			writeJSON(w, http.StatusServiceUnavailable, jsonError{MsgBusy})
		case errors.Is(err, credstore.ErrNoActivation):
			writeJSON(w, http.StatusNotFound, jsonError{err.Error()})
		case err != nil:
			b.c.Log.Error("broker: activation", "err", err)
			writeJSON(w, http.StatusInternalServerError, jsonError{"activation failed"})
		default:
			b.c.Log.Info("broker: user activated", "directory", res.DirectoryID, "user", res.UserName, "totp", res.TOTPSecret != "")
			writeJSON(w, http.StatusOK, res)
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

// Invite makes an activation code for a local directory user (the admin socket's
// /invite): the invitation's link is https://<broker>/activate?code=<code>.
func (b *Broker) Invite(dirID, user string, ttl time.Duration) (string, time.Time, error) {
	d := b.c.Auth.ByID(dirID)
	if d == nil {
		return "", time.Time{}, fmt.Errorf("no directory %s", dirID)
	}
	if d.Login.Kind() != catalog.TypeLocal {
		return "", time.Time{}, fmt.Errorf("directory %s is %s: its users set passwords in their own directory", dirID, d.Login.Kind())
	}
	u, ok := d.FindUser(strings.TrimSpace(user))
	if !ok {
		return "", time.Time{}, fmt.Errorf("directory %s has no user %q (users are listed in hostd.directories)", dirID, user)
	}
	now := b.c.Now()
	code, err := b.c.Creds.NewActivation(dirID, u.UserName, ttl, now)
	return code, now.Add(ttl), err
}
