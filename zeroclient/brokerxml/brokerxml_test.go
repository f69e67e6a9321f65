package brokerxml

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const helloXML = `<?xml version="1.0" encoding="utf-8"?>
<pcoip-client version="2.1">
  <hello>
    <client-info>
      <product-name>Teradici PCoIP Zero Client</product-name>
      <product-version>6.0.0</product-version>
      <platform>Tera2</platform>
      <locale>en_US</locale>
      <hostname>pcoip-portal-00300405a1b2</hostname>
      <serial-number>00:30:04:05:a1:b2</serial-number>
      <device-name>desk-12</device-name>
      <pcoip-unique-id>00:30:04:05:a1:b2</pcoip-unique-id>
    </client-info>
    <caps><cap>CAP_DIALOG_AUTHENTICATION</cap></caps>
    <server-address><ip-address>192.0.2.10</ip-address></server-address>
  </hello>
</pcoip-client>`

func TestDecodeMessages(t *testing.T) {
	r, err := Decode([]byte(helloXML))
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindHello || r.Version != "2.1" || r.Hello.ClientInfo.Platform != "Tera2" ||
		r.Hello.ClientInfo.ProductVersion != "6.0.0" || len(r.Hello.Caps) != 1 {
		t.Errorf("hello: %+v %+v", r, r.Hello)
	}
	r, err = Decode([]byte(`<pcoip-client version="2.1"><authenticate method="password"><username>CORP\alice</username><password>p&amp;ss &lt;1&gt;</password><domain>corp.example.com</domain></authenticate></pcoip-client>`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Auth.Username != `CORP\alice` || r.Auth.Password != "p&ss <1>" || r.Auth.Domain != "corp.example.com" {
		t.Errorf("authenticate: %+v", r.Auth)
	}
	r, err = Decode([]byte(`<pcoip-client version="2.0"><allocate-resource><resource-id> ws-abc </resource-id><protocol>PCOIP</protocol></allocate-resource></pcoip-client>`))
	if err != nil || r.Allocate.ResourceID != "ws-abc" {
		t.Errorf("allocate: %+v %v", r, err)
	}
	if r, err := Decode([]byte(`<pcoip-client version="2.1"><bye/></pcoip-client>`)); err != nil || r.Kind != KindBye {
		t.Errorf("bye: %+v %v", r, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`not xml`, "text outside"},
		{``, "no <pcoip-client>"},
		{`<pcoip-client version="2.1"><hello>`, "not well-formed"},
		{`<pcoip-server version="2.1"><bye/></pcoip-server>`, "root element is <pcoip-server>"},
		{`<pcoip-client><bye/></pcoip-client>`, "no version attribute"},
		{`<pcoip-client version="two"><bye/></pcoip-client>`, "not a protocol version"},
		{`<pcoip-client version="2.1"><bye/><bye/></pcoip-client>`, "more than one message"},
		{`<pcoip-client version="2.1"></pcoip-client>`, "holds no message"},
		{`<pcoip-client version="2.1"><launch-missiles/></pcoip-client>`, "unknown message <launch-missiles>"},
		{`<pcoip-client version="2.1">text<bye/></pcoip-client>`, "text outside"},
		{`<pcoip-client version="2.1"><bye/></pcoip-client><pcoip-client version="2.1"><bye/></pcoip-client>`, "more than one root"},
		{`<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><pcoip-client version="2.1"><bye/></pcoip-client>`, "DTDs"},
		{`<pcoip-client version="2.1"><authenticate><username>a</username></authenticate></pcoip-client>`, "no method"},
		{`<pcoip-client version="2.1"><authenticate method="kerberos"><username>a</username></authenticate></pcoip-client>`, "not one of"},
		{`<pcoip-client version="2.1"><authenticate method="password"><password>x</password></authenticate></pcoip-client>`, "needs <username>"},
		{`<pcoip-client version="2.1"><authenticate method="passcode"><username>a</username></authenticate></pcoip-client>`, "needs <passcode>"},
		{`<pcoip-client version="2.1"><allocate-resource/></pcoip-client>`, "needs <resource-id>"},
		{`<pcoip-client version="2.1"><hello><client-info/></hello></pcoip-client>`, "product-name"},
		{`<pcoip-client version="2.1"><bye>&undefined;</bye></pcoip-client>`, "not well-formed"},
		{"<pcoip-client version=\"2.1\"><bye/></pcoip-client>\xff", "not UTF-8"},
		{`<pcoip-client version="2.1"><authenticate method="password"><username>` + strings.Repeat("a", 300) + `</username></authenticate></pcoip-client>`, "longer than"},
		{`<pcoip-client version="2.1">` + strings.Repeat(" ", MaxBody) + `<bye/></pcoip-client>`, "limit"},
	} {
		_, err := Decode([]byte(tc.body))
		var e *Error
		if err == nil || !errors.As(err, &e) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%.60q) = %v, want an *Error mentioning %q", tc.body, err, tc.want)
		}
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	b, err := Encode(&AllocateResourceResp{Result: Result{ID: AllocSuccessful, Str: "ok"},
		Target:     &Target{IPAddress: "192.0.2.10", Hostname: "desk", SNI: "desk", Port: 4172, SessionID: "42", ConnectTag: "t<&>"},
		ResourceID: "ws-abc", Protocol: "PCOIP"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<pcoip-client version="2.1"><allocate-resource-resp>`) {
		t.Errorf("envelope: %s", b)
	}
	var got AllocateResourceResp
	if err := DecodeResponse(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Target == nil || got.Target.ConnectTag != "t<&>" || got.Target.Port != 4172 || got.Result.ID != AllocSuccessful {
		t.Errorf("round trip: %+v", got)
	}
	// Requests encoded by the reference client decode to the same thing.
	req := &Authenticate{Method: MethodPasscode, Username: "alice", Passcode: "123456"}
	b, _ = Encode(req)
	r, err := Decode(b)
	if err != nil || !reflect.DeepEqual(r.Auth.Passcode, "123456") || r.Auth.Method != MethodPasscode {
		t.Errorf("request round trip: %+v %v", r, err)
	}
}

// TestMethodNames: next-authentication names the methods as PCoIP clients expect them;
// <authenticate> takes method="password"/"passcode" or those names, read as the former.
func TestMethodNames(t *testing.T) {
	b, _ := Encode(&HelloResp{NextAuth: &NextAuth{Methods: []string{AuthMethodPassword}}})
	if !strings.Contains(string(b), "<next-authentication><authentication-methods><method>AUTHENTICATE_VIA_PASSWORD</method></authentication-methods>") {
		t.Errorf("hello-resp: %s", b)
	}
	for attr, want := range map[string]string{"password": MethodPassword, "AUTHENTICATE_VIA_PASSWORD": MethodPassword} {
		r, err := Decode([]byte(`<pcoip-client version="2.1"><authenticate method="` + attr + `"><username>a</username><password>p</password></authenticate></pcoip-client>`))
		if err != nil || r.Auth.Method != want {
			t.Errorf("method=%q: %+v %v", attr, r, err)
		}
	}
	r, err := Decode([]byte(`<pcoip-client version="2.1"><authenticate method="AUTHENTICATE_VIA_PASSCODE"><username>a</username><passcode>1</passcode></authenticate></pcoip-client>`))
	if err != nil || r.Auth.Method != MethodPasscode {
		t.Errorf("method=AUTHENTICATE_VIA_PASSCODE: %+v %v", r, err)
	}
	if _, err := Decode([]byte(`<pcoip-client version="2.1"><authenticate method="AUTHENTICATE_VIA_SMARTCARD"><username>a</username></authenticate></pcoip-client>`)); err == nil {
		t.Error("an unknown method was accepted")
	}
}

// FuzzDecode: Decode never panics, accepts only envelopes it can account for, and what it
// accepts survives a re-encode unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		helloXML,
		`<pcoip-client version="2.1"><authenticate method="password"><username>alice</username><password>x</password><domain>d</domain></authenticate></pcoip-client>`,
		`<pcoip-client version="2.1"><authenticate method="passcode"><username>alice</username><passcode>123456</passcode></authenticate></pcoip-client>`,
		`<pcoip-client version="2.1"><get-resource-list><protocols><protocol>PCOIP</protocol></protocols></get-resource-list></pcoip-client>`,
		`<pcoip-client version="2.1"><allocate-resource><resource-id>ws-1</resource-id></allocate-resource></pcoip-client>`,
		`<pcoip-client version="2.1"><bye/></pcoip-client>`,
		`<!DOCTYPE a><pcoip-client version="2.1"><bye/></pcoip-client>`,
		`<pcoip-client version="2.1"><authenticate method="AUTHENTICATE_VIA_PASSWORD"><username>alice</username><password>x</password></authenticate></pcoip-client>`,
		`<pcoip-client version="2.1"><authenticate method="AUTHENTICATE_VIA_PASSCODE"><username>alice</username><passcode>1</passcode></authenticate></pcoip-client>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Decode(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		var msg any
		switch r.Kind {
		case KindHello:
			msg = r.Hello
		case KindAuthenticate:
			msg = r.Auth
			if r.Auth.Method != MethodPassword && r.Auth.Method != MethodPasscode {
				t.Fatalf("accepted method %q", r.Auth.Method)
			}
		case KindGetResourceList:
			msg = r.List
		case KindAllocateResource:
			msg = r.Allocate
		case KindBye:
			msg = &Bye{}
		default:
			t.Fatalf("accepted kind %q", r.Kind)
		}
		if reflect.ValueOf(msg).IsNil() {
			t.Fatalf("kind %s without its body", r.Kind)
		}
		b, err := Encode(msg)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := Decode(b)
		if err != nil {
			t.Fatalf("re-encoded request rejected: %v\n%s", err, b)
		}
		r2.Version = r.Version
		if !reflect.DeepEqual(normal(r), normal(r2)) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", normal(r), normal(r2))
		}
	})
}

// normal clears what XML does not round-trip by design (element names, whitespace-only
// differences in repeated list fields are kept).
func normal(r *Request) Request {
	c := *r
	if c.Hello != nil {
		h := *c.Hello
		h.XMLName.Space, h.XMLName.Local = "", ""
		c.Hello = &h
	}
	if c.Auth != nil {
		a := *c.Auth
		a.XMLName.Space, a.XMLName.Local = "", ""
		c.Auth = &a
	}
	if c.List != nil {
		l := *c.List
		l.XMLName.Space, l.XMLName.Local = "", ""
		c.List = &l
	}
	if c.Allocate != nil {
		a := *c.Allocate
		a.XMLName.Space, a.XMLName.Local = "", ""
		c.Allocate = &a
	}
	return c
}
