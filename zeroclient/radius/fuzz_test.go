package radius

import (
	"crypto/hmac"
	"crypto/md5"
	"testing"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2869"
)

const fuzzSecret = "fuzz-s3cret"

// fuzzRequest is a fixed Access-Request as this client sends it (authenticator fixed, so
// the fuzzer's inputs can answer it).
func fuzzRequest(t testing.TB) []byte {
	p := radius.New(radius.CodeAccessRequest, []byte(fuzzSecret))
	p.Identifier = 42
	for i := range p.Authenticator {
		p.Authenticator[i] = byte(i * 7)
	}
	rfc2865.UserName_SetString(p, "alice")
	rfc2865.UserPassword_SetString(p, "123456")
	if err := signRequest(p); err != nil {
		t.Fatal(err)
	}
	wire, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return wire
}

// verifies reports whether resp's Message-Authenticator is the HMAC it must be
// (recomputed here independently of checkResponse).
func verifies(in, wire []byte) bool {
	p, err := radius.Parse(in, []byte(fuzzSecret))
	if err != nil {
		return false
	}
	got, err := rfc2869.MessageAuthenticator_Lookup(p)
	if err != nil || len(got) != 16 {
		return false
	}
	q := append([]byte(nil), in...)
	copy(q[4:20], wire[4:20])
	// Zero the attribute's value where it sits.
	for i := 20; i+2 <= len(q); {
		l := int(q[i+1])
		if l < 2 || i+l > len(q) {
			return false
		}
		if q[i] == 80 && l == 18 {
			for j := i + 2; j < i+18; j++ {
				q[j] = 0
			}
		}
		i += l
	}
	mac := hmac.New(md5.New, []byte(fuzzSecret))
	mac.Write(q)
	return hmac.Equal(mac.Sum(nil), got)
}

// FuzzAnswer: whatever datagram arrives, answer never panics, and it takes as the answer
// only an Access-Accept, -Reject or -Challenge (with a State) that proves it answers the
// request and carries a Message-Authenticator that verifies.
func FuzzAnswer(f *testing.F) {
	wire := fuzzRequest(f)
	req, _ := radius.Parse(wire, []byte(fuzzSecret))
	for _, code := range []radius.Code{radius.CodeAccessAccept, radius.CodeAccessReject, radius.CodeAccessChallenge} {
		r := req.Response(code)
		rfc2865.ReplyMessage_SetString(r, "Enter the code")
		if code == radius.CodeAccessChallenge {
			rfc2865.State_Set(r, []byte("state-1"))
		}
		if b, err := r.Encode(); err == nil { // unsigned: must be refused
			f.Add(b)
		}
		var zero [16]byte
		rfc2869.MessageAuthenticator_Set(r, zero[:])
		raw, _ := r.MarshalBinary()
		mac := hmac.New(md5.New, []byte(fuzzSecret))
		mac.Write(raw)
		rfc2869.MessageAuthenticator_Set(r, mac.Sum(nil))
		if b, err := r.Encode(); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{2, 42, 0, 20})
	f.Fuzz(func(t *testing.T, in []byte) {
		resp, err := answer(in, wire, []byte(fuzzSecret))
		if err != nil {
			return
		}
		if !verifies(in, wire) {
			t.Fatalf("accepted an answer whose Message-Authenticator does not verify: %x", in)
		}
		if !radius.IsAuthenticResponse(in, wire, []byte(fuzzSecret)) {
			t.Fatalf("accepted an answer that does not prove it answers the request: %x", in)
		}
		if resp.Outcome == Challenge && resp.State == nil {
			t.Fatal("a challenge without a State")
		}
		switch radius.Code(in[0]) {
		case radius.CodeAccessAccept, radius.CodeAccessReject, radius.CodeAccessChallenge:
		default:
			t.Fatalf("accepted code %d", in[0])
		}
	})
}

// TestAnswer: a signed answer is taken, the same one unsigned is refused, and a datagram
// answering another request is unrelated (read past, not an error).
func TestAnswer(t *testing.T) {
	wire := fuzzRequest(t)
	req, _ := radius.Parse(wire, []byte(fuzzSecret))
	r := req.Response(radius.CodeAccessAccept)
	unsigned, _ := r.Encode()
	signed, err := signed(req.Response(radius.CodeAccessAccept))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := answer(signed, wire, []byte(fuzzSecret)); err != nil || resp.Outcome != Accept {
		t.Errorf("signed Access-Accept: %+v %v", resp, err)
	}
	if _, err := answer(unsigned, wire, []byte(fuzzSecret)); err != ErrNoMessageAuthenticator {
		t.Errorf("unsigned Access-Accept: %v", err)
	}
	other := append([]byte(nil), signed...)
	other[1]++
	if _, err := answer(other, wire, []byte(fuzzSecret)); err != errUnrelated {
		t.Errorf("another identifier: %v", err)
	}
}
