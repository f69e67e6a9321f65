// Package brokerxml is the XML of the PCoIP Connection Broker Protocol as zero clients speak
// it: every request is a <pcoip-client version="..."> envelope with exactly one child (hello,
// authenticate, get-resource-list, allocate-resource, bye), answered by the same envelope
// around <child-resp>. Decode is strict about the envelope and what the broker relies on,
// lenient about extra elements inside a message (clients add fields from newer protocol
// versions), and rejects DTDs outright.
package brokerxml

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Version is the protocol version this broker answers with.
const Version = "2.1"

// MaxBody is the largest request body the broker reads (the handler enforces it; Decode
// refuses more too, so the fuzzer and any other caller get the same bound).
const MaxBody = 64 << 10

// Kind names a request.
type Kind string

const (
	KindHello            Kind = "hello"
	KindAuthenticate     Kind = "authenticate"
	KindGetResourceList  Kind = "get-resource-list"
	KindAllocateResource Kind = "allocate-resource"
	KindBye              Kind = "bye"
)

// Authentication methods as the broker names them in next-authentication (hello-resp
// offers the password; an authenticate-resp that wants the MFA step offers the passcode).
// Real PCoIP clients look for AUTHENTICATE_VIA_PASSWORD: a broker that offers "password"
// is one they cannot log in to. (Public brokers and client traces show that name; the
// passcode's follows it by analogy, the specification being distributed by agreement only.)
const (
	AuthMethodPassword = "AUTHENTICATE_VIA_PASSWORD"
	AuthMethodPasscode = "AUTHENTICATE_VIA_PASSCODE"
)

// The method attribute of <authenticate> (and of its -resp), as clients send it:
// <authenticate method="password">. The next-authentication names are accepted for it too
// and read as these.
const (
	MethodPassword = "password"
	MethodPasscode = "passcode"
)

// Request is one decoded request: Kind says which pointer is set (Bye has no body).
type Request struct {
	Version  string
	Kind     Kind
	Hello    *Hello
	Auth     *Authenticate
	List     *GetResourceList
	Allocate *AllocateResource
}

// Hello is the client's introduction.
type Hello struct {
	XMLName    xml.Name   `xml:"hello"`
	ClientInfo ClientInfo `xml:"client-info"`
	Caps       []string   `xml:"caps>cap,omitempty"`
}

// ClientInfo describes the client device.
type ClientInfo struct {
	ProductName    string `xml:"product-name"`
	ProductVersion string `xml:"product-version"`
	Platform       string `xml:"platform"`
	Locale         string `xml:"locale,omitempty"`
	Hostname       string `xml:"hostname"`
	SerialNumber   string `xml:"serial-number,omitempty"`
	DeviceName     string `xml:"device-name,omitempty"`
	PCoIPUniqueID  string `xml:"pcoip-unique-id,omitempty"`
}

// Authenticate is a login step: method="password" (username, password, domain) or
// method="passcode" (username, passcode: the MFA step). Method is always one of the two
// after Decode.
type Authenticate struct {
	XMLName  xml.Name `xml:"authenticate"`
	Method   string   `xml:"method,attr"`
	Username string   `xml:"username"`
	Password string   `xml:"password,omitempty"`
	Domain   string   `xml:"domain,omitempty"`
	Passcode string   `xml:"passcode,omitempty"`
}

// GetResourceList asks for the user's desktops.
type GetResourceList struct {
	XMLName       xml.Name `xml:"get-resource-list"`
	Protocols     []string `xml:"protocols>protocol,omitempty"`
	ResourceTypes []string `xml:"resource-types>resource-type,omitempty"`
}

// AllocateResource asks for connect information for one desktop.
type AllocateResource struct {
	XMLName    xml.Name `xml:"allocate-resource"`
	ResourceID string   `xml:"resource-id"`
	Protocol   string   `xml:"protocol,omitempty"`
}

// Bye ends the session.
type Bye struct {
	XMLName xml.Name `xml:"bye"`
}

// Field limits: generous for real names and passwords, small enough that nothing a
// client sends can make the broker do much work with it.
const (
	maxName     = 256
	maxSecret   = 1024
	maxInfo     = 512
	maxListElem = 32
)

var versionRE = regexp.MustCompile(`^[0-9]{1,3}\.[0-9]{1,3}$`)

// Error is a malformed request; its message says what is wrong, for the 400 response.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func bad(format string, args ...any) error { return &Error{fmt.Sprintf(format, args...)} }

// Decode parses one request body.
//
// It reads the body once: a guard under the decoder refuses what may not appear anywhere
// (DTDs and other directives, processing instructions but the XML declaration), the
// envelope is checked token by token, and the message is decoded where it stands.
func Decode(body []byte) (*Request, error) {
	if len(body) > MaxBody {
		return nil, bad("request body is %d bytes; the limit is %d", len(body), MaxBody)
	}
	if !utf8.Valid(body) {
		return nil, bad("request body is not UTF-8")
	}
	raw := xml.NewDecoder(bytes.NewReader(body))
	raw.Strict = true
	d := xml.NewTokenDecoder(&guard{d: raw})
	r := &Request{}
	depth, children, rootDone := 0, 0, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, malformed(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 && depth <= 1 {
				return nil, bad("text outside a message element")
			}
		case xml.StartElement:
			switch {
			case depth == 0 && rootDone:
				return nil, bad("more than one root element")
			case depth == 0:
				if t.Name.Local != "pcoip-client" || t.Name.Space != "" {
					return nil, bad("root element is <%s>; want <pcoip-client>", t.Name.Local)
				}
				for _, a := range t.Attr {
					if a.Name.Local == "version" && a.Name.Space == "" {
						r.Version = a.Value
					}
				}
				if r.Version == "" {
					return nil, bad("<pcoip-client> has no version attribute")
				}
				if !versionRE.MatchString(r.Version) {
					return nil, bad("<pcoip-client> version %q is not a protocol version", r.Version)
				}
				depth++
			case depth == 1:
				children++
				if children > 1 {
					return nil, bad("<pcoip-client> holds more than one message")
				}
				if t.Name.Space != "" {
					return nil, bad("message <%s> is in a namespace", t.Name.Local)
				}
				// The message, through its end tag.
				r.Kind = Kind(t.Name.Local)
				switch r.Kind {
				case KindHello:
					r.Hello = &Hello{}
					err = d.DecodeElement(r.Hello, &t)
				case KindAuthenticate:
					r.Auth = &Authenticate{}
					err = d.DecodeElement(r.Auth, &t)
				case KindGetResourceList:
					r.List = &GetResourceList{}
					err = d.DecodeElement(r.List, &t)
				case KindAllocateResource:
					r.Allocate = &AllocateResource{}
					err = d.DecodeElement(r.Allocate, &t)
				case KindBye:
					err = d.Skip()
				default:
					return nil, bad("unknown message <%s>", t.Name.Local)
				}
				if err != nil {
					var e *Error
					var se *xml.SyntaxError
					if errors.As(err, &e) || errors.As(err, &se) {
						return nil, malformed(err)
					}
					return nil, bad("<%s>: %v", r.Kind, err)
				}
			default:
				depth++ // not reached: messages are decoded whole
			}
		case xml.EndElement:
			depth--
			if depth == 0 {
				rootDone = true
			}
		}
	}
	if !rootDone {
		return nil, bad("no <pcoip-client> element")
	}
	if children == 0 {
		return nil, bad("<pcoip-client> holds no message")
	}
	return r, r.check()
}

// malformed is err as Decode reports it: the guard's own refusals as they are, anything
// else from the token stream as not well-formed.
func malformed(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return bad("not well-formed XML: %v", err)
}

// guard is the raw token stream of a request with what may appear nowhere in one refused:
// directives (<!DOCTYPE ...> and the rest) anywhere, and processing instructions other
// than the XML declaration before the root element.
type guard struct {
	d        *xml.Decoder
	depth    int
	rootDone bool
}

func (g *guard) Token() (xml.Token, error) {
	tok, err := g.d.RawToken()
	if err != nil {
		return tok, err
	}
	switch t := tok.(type) {
	case xml.Directive:
		return nil, bad("DTDs and other <!...> directives are not accepted")
	case xml.ProcInst:
		if g.depth > 0 || g.rootDone || t.Target != "xml" {
			return nil, bad("unexpected processing instruction <?%s?>", t.Target)
		}
	case xml.StartElement:
		g.depth++
	case xml.EndElement:
		g.depth--
		if g.depth == 0 {
			g.rootDone = true
		}
	}
	return tok, nil
}

func (r *Request) check() error {
	switch r.Kind {
	case KindHello:
		r.Hello.Caps = nonBlank(r.Hello.Caps)
		ci := r.Hello.ClientInfo
		if strings.TrimSpace(ci.ProductName) == "" {
			return bad("<hello> needs <client-info><product-name>")
		}
		for name, v := range map[string]string{"product-name": ci.ProductName, "product-version": ci.ProductVersion,
			"platform": ci.Platform, "locale": ci.Locale, "hostname": ci.Hostname, "serial-number": ci.SerialNumber,
			"device-name": ci.DeviceName, "pcoip-unique-id": ci.PCoIPUniqueID} {
			if len(v) > maxInfo {
				return bad("<client-info><%s> is longer than %d bytes", name, maxInfo)
			}
		}
		if len(r.Hello.Caps) > maxListElem {
			return bad("<caps> has more than %d entries", maxListElem)
		}
	case KindAuthenticate:
		a := r.Auth
		switch a.Method {
		case AuthMethodPassword:
			a.Method = MethodPassword
		case AuthMethodPasscode:
			a.Method = MethodPasscode
		}
		switch a.Method {
		case MethodPassword:
			if a.Passcode != "" {
				return bad(`<authenticate method="password"> carries no <passcode>`)
			}
		case MethodPasscode:
			if a.Passcode == "" {
				return bad(`<authenticate method="passcode"> needs <passcode>`)
			}
			if a.Password != "" {
				return bad(`<authenticate method="passcode"> carries no <password>`)
			}
		case "":
			return bad("<authenticate> has no method attribute")
		default:
			return bad("<authenticate> method %q is not one of password, passcode (%s, %s)", a.Method, AuthMethodPassword, AuthMethodPasscode)
		}
		if a.Username == "" {
			return bad("<authenticate> needs <username>")
		}
		if len(a.Username) > maxName || len(a.Domain) > maxName {
			return bad("<authenticate> user name or domain is longer than %d bytes", maxName)
		}
		if len(a.Password) > maxSecret || len(a.Passcode) > maxSecret {
			return bad("<authenticate> password or passcode is longer than %d bytes", maxSecret)
		}
		if strings.ContainsRune(a.Username+a.Domain+a.Password+a.Passcode, 0) {
			return bad("<authenticate> holds a NUL character")
		}
	case KindGetResourceList:
		r.List.Protocols, r.List.ResourceTypes = nonBlank(r.List.Protocols), nonBlank(r.List.ResourceTypes)
		if len(r.List.Protocols) > maxListElem || len(r.List.ResourceTypes) > maxListElem {
			return bad("<get-resource-list> lists more than %d entries", maxListElem)
		}
	case KindAllocateResource:
		id := strings.TrimSpace(r.Allocate.ResourceID)
		if id == "" {
			return bad("<allocate-resource> needs <resource-id>")
		}
		if len(id) > maxName {
			return bad("<allocate-resource><resource-id> is longer than %d bytes", maxName)
		}
		r.Allocate.ResourceID = id
	}
	return nil
}

// nonBlank trims list entries and drops empty ones: <cap/> means nothing.
func nonBlank(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Result ids. The protocol's own: AUTH_SUCCESSFUL_AND_COMPLETE,
// AUTH_FAILED_UNKNOWN_USERNAME_OR_PASSWORD, LIST_SUCCESSFUL, ALLOC_SUCCESSFUL. The others name
// this broker's further outcomes in the same style.
const (
	AuthComplete        = "AUTH_SUCCESSFUL_AND_COMPLETE"
	AuthIncomplete      = "AUTH_SUCCESSFUL_BUT_INCOMPLETE" // MFA: a passcode is next
	AuthFailed          = "AUTH_FAILED_UNKNOWN_USERNAME_OR_PASSWORD"
	AuthFailedPasscode  = "AUTH_FAILED_INVALID_PASSCODE"
	AuthFailedLocked    = "AUTH_FAILED_ACCOUNT_LOCKED"
	AuthFailedDenied    = "AUTH_FAILED_ACCESS_DENIED" // IP access control group, device type
	AuthFailedMFASetup  = "AUTH_FAILED_MFA_NOT_AVAILABLE"
	AuthFailedUnavail   = "AUTH_FAILED_DIRECTORY_UNAVAILABLE"
	AuthFailedNotAuthed = "AUTH_FAILED_NOT_AUTHENTICATED" // passcode without a password step; no hello
	AuthFailedBusy      = "AUTH_FAILED_BROKER_BUSY"       // too many password checks at once: try again
	ListSuccessful      = "LIST_SUCCESSFUL"
	ListNoResources     = "LIST_FAILED_NO_RESOURCES"
	ListNotAuthed       = "LIST_FAILED_NOT_AUTHENTICATED"
	AllocSuccessful     = "ALLOC_SUCCESSFUL"
	AllocNotAuthed      = "ALLOC_FAILED_NOT_AUTHENTICATED"
	AllocNoResource     = "ALLOC_FAILED_UNKNOWN_RESOURCE"
	AllocUnhealthy      = "ALLOC_FAILED_UNHEALTHY"
	AllocMaintenance    = "ALLOC_FAILED_MAINTENANCE"
	AllocStarting       = "ALLOC_FAILED_RESOURCE_STARTING"
	AllocNotOnDevice    = "ALLOC_FAILED_PROTOCOL_NOT_SUPPORTED"
	AllocDenied         = "ALLOC_FAILED_ACCESS_DENIED"
	AllocFailed         = "ALLOC_FAILED_LAUNCH_ERROR"
)

// Result is a response's outcome.
type Result struct {
	ID  string `xml:"result-id"`
	Str string `xml:"result-str"`
}

// HelloResp answers hello.
type HelloResp struct {
	XMLName    xml.Name   `xml:"hello-resp"`
	BrokerInfo BrokerInfo `xml:"brokers-info>broker-info"`
	NextAuth   *NextAuth  `xml:"next-authentication,omitempty"`
}

// BrokerInfo describes the broker.
type BrokerInfo struct {
	ProductName    string `xml:"product-name"`
	ProductVersion string `xml:"product-version"`
	Platform       string `xml:"platform"`
	Locale         string `xml:"locale"`
	IPAddress      string `xml:"ip-address"`
	Hostname       string `xml:"hostname"`
}

// NextAuth tells the client what to authenticate with next.
type NextAuth struct {
	Methods []string `xml:"authentication-methods>method"`
	Domains []string `xml:"domains>domain,omitempty"`
	// Prompt is the text to show for a passcode (a RADIUS server's Reply-Message).
	Prompt string `xml:"prompt,omitempty"`
}

// AuthenticateResp answers authenticate.
type AuthenticateResp struct {
	XMLName  xml.Name  `xml:"authenticate-resp"`
	Method   string    `xml:"method,attr"`
	Result   Result    `xml:"result"`
	NextAuth *NextAuth `xml:"next-authentication,omitempty"`
}

// GetResourceListResp answers get-resource-list.
type GetResourceListResp struct {
	XMLName   xml.Name   `xml:"get-resource-list-resp"`
	Result    Result     `xml:"result"`
	Resources []Resource `xml:"resource"`
}

// Resource is one desktop.
type Resource struct {
	Name      string       `xml:"resource-name"`
	ID        string       `xml:"resource-id"`
	Type      ResourceType `xml:"resource-type"`
	State     string       `xml:"resource-state"`
	Protocols []Protocol   `xml:"protocols>protocol"`
}

// ResourceType is DESKTOP with its session type (VDI).
type ResourceType struct {
	SessionType string `xml:"session-type,attr"`
	Value       string `xml:",chardata"`
}

// Protocol is a streaming protocol the resource offers.
type Protocol struct {
	IsDefault bool   `xml:"is-default,attr"`
	Value     string `xml:",chardata"`
}

// AllocateResourceResp answers allocate-resource.
type AllocateResourceResp struct {
	XMLName    xml.Name `xml:"allocate-resource-resp"`
	Result     Result   `xml:"result"`
	Target     *Target  `xml:"target,omitempty"`
	ResourceID string   `xml:"resource-id,omitempty"`
	Protocol   string   `xml:"protocol,omitempty"`
}

// Target is where to stream from.
type Target struct {
	IPAddress  string `xml:"ip-address"`
	Hostname   string `xml:"hostname"`
	SNI        string `xml:"sni"`
	Port       int    `xml:"port"`
	SessionID  string `xml:"session-id"`
	ConnectTag string `xml:"connect-tag"`
}

// ByeResp answers bye.
type ByeResp struct {
	XMLName xml.Name `xml:"bye-resp"`
}

// Encode wraps one message (a request or response struct above) in the envelope.
func Encode(msg any) ([]byte, error) {
	env := struct {
		XMLName xml.Name `xml:"pcoip-client"`
		Version string   `xml:"version,attr"`
		Msg     any
	}{Version: Version, Msg: msg}
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	e.buf.WriteString(xml.Header)
	e.w.Reset(&e.buf)
	if err := xml.NewEncoder(e.w).Encode(env); err != nil {
		return nil, fmt.Errorf("encode %T: %w", msg, err)
	}
	return bytes.Clone(e.buf.Bytes()), nil
}

// encoder is Encode's scratch space, reused: a request or response is encoded on every
// broker exchange, and encoding/xml would otherwise make a 4 KiB buffered writer each time
// (NewEncoder uses a *bufio.Writer it is given as it is).
type encoder struct {
	buf bytes.Buffer
	w   *bufio.Writer
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.w = bufio.NewWriterSize(&e.buf, 4096)
	return e
}}

// DecodeResponse parses a broker's response envelope into dst (one of the *Resp types),
// for clients, in one pass: the first element inside <pcoip-client> is decoded into dst
// (whose XMLName must match it).
func DecodeResponse(body []byte, dst any) error {
	d := xml.NewDecoder(bytes.NewReader(body))
	inRoot := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return errors.New("broker response: no message in it")
		}
		if err != nil {
			return fmt.Errorf("broker response: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if !inRoot {
				if t.Name.Local != "pcoip-client" {
					return fmt.Errorf("broker response: root element is <%s>; want <pcoip-client>", t.Name.Local)
				}
				version := ""
				for _, a := range t.Attr {
					if a.Name.Local == "version" {
						version = a.Value
					}
				}
				if version == "" {
					return errors.New("broker response: <pcoip-client> has no version")
				}
				inRoot = true
				continue
			}
			if err := d.DecodeElement(dst, &t); err != nil {
				return fmt.Errorf("broker response: %w", err)
			}
			return nil
		case xml.EndElement:
			return errors.New("broker response: <pcoip-client> holds no message")
		}
	}
}
