package argon2id

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashVerify(t *testing.T) {
	h, err := Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %s", h)
	}
	if ok, err := Verify(h, "correct horse"); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, err := Verify(h, "correct horsE"); ok || err != nil {
		t.Errorf("wrong password: %v %v", ok, err)
	}
	h2, _ := Hash("correct horse")
	if h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
}

func TestCheckRefusesMalformed(t *testing.T) {
	good, _ := Hash("x")
	parts := strings.Split(good, "$")
	for _, tc := range []struct{ hash, want string }{
		{"", "not an argon2id hash"},
		{"$argon2i$v=19$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5], "not an argon2id hash"},
		{"$argon2id$v=16$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5], "version"},
		{"$argon2id$v=19$m=4194304,t=2,p=1$" + parts[4] + "$" + parts[5], "m=4194304"},
		{"$argon2id$v=19$m=19456,t=1000,p=1$" + parts[4] + "$" + parts[5], "t=1000"},
		{"$argon2id$v=19$m=19456,t=2,p=0$" + parts[4] + "$" + parts[5], "p=0"},
		{"$argon2id$v=19$m=19456,t=2$" + parts[4] + "$" + parts[5], "want m, t and p"},
		{"$argon2id$v=19$m=19456,t=2,t=2$" + parts[4] + "$" + parts[5], "twice"},
		{"$argon2id$v=19$m=19456,t=2,p=1$!!$" + parts[5], "salt"},
		{"$argon2id$v=19$m=19456,t=2,p=1$" + parts[4] + "$abc", "key"},
	} {
		err := Check(tc.hash)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.hash, err, tc.want)
		}
		if ok, _ := Verify(tc.hash, "x"); ok {
			t.Errorf("%q verified", tc.hash)
		}
	}
	if err := Check(good); err != nil {
		t.Error(err)
	}
}

// FuzzVerify: no hash string, however malformed, panics or verifies a password it was
// not made from, and a well-formed one is bounded (no runaway memory).
func FuzzVerify(f *testing.F) {
	// Made with a fixed salt: every fuzzing process must agree on it.
	salt := []byte("fixed-salt-16byt")
	good := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", Memory, Time, Threads, b64.EncodeToString(salt),
		b64.EncodeToString(argon2.IDKey([]byte("pw"), salt, Time, Memory, Threads, KeyLen)))
	f.Add(good, "pw")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5", "pw")
	f.Add("$argon2id$v=19$m=,t=,p=$$", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		ok, err := Verify(hash, pw)
		if ok && err != nil {
			t.Fatal("verified with an error")
		}
		if ok && (hash != good || pw != "pw") {
			// A fuzzer-made hash that verifies would mean it found an argon2 preimage.
			t.Fatalf("%q verified %q", hash, pw)
		}
	})
}
