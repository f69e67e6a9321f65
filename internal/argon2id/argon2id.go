// Package argon2id hashes and checks passwords with argon2id (golang.org/x/crypto/argon2),
// in the PHC string form $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>. init keeps the
// operator console's password this way, and `imagebuild console-password` makes the hash an
// operator puts into a host config.
package argon2id

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters of new hashes: OWASP's minimum configuration (19 MiB, 2 passes, 1 lane).
// They are written into each hash, so a hash made with others still verifies.
const (
	Time    = 2
	Memory  = 19 * 1024 // KiB
	Threads = 1
	KeyLen  = 32
	SaltLen = 16
)

// Bounds on a hash's parameters: a hash comes from a config file, and one asking for
// gigabytes or thousands of passes must not take the host down when it is checked.
const (
	maxMemory  = 256 * 1024 // KiB
	maxTime    = 16
	maxThreads = 8
)

var b64 = base64.RawStdEncoding

// Hash returns the argon2id hash of password.
func Hash(password string) (string, error) {
	salt := make([]byte, SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, Time, Memory, Threads, KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, Memory, Time, Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type params struct {
	m, t      uint32
	p         uint8
	salt, key []byte
}

// Check reports whether hash is a well-formed argon2id hash this package verifies, and
// why not.
func Check(hash string) error {
	_, err := parse(hash)
	return err
}

// Verify reports whether password matches hash; a malformed hash is an error.
func Verify(hash, password string) (bool, error) {
	p, err := parse(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), p.salt, p.t, p.m, p.p, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(got, p.key) == 1, nil
}

func parse(hash string) (params, error) {
	var p params
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, errors.New("not an argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$key)")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("argon2 version %q: want v=%d", parts[2], argon2.Version)
	}
	kv := map[string]uint64{}
	for _, f := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || (k != "m" && k != "t" && k != "p") {
			return p, fmt.Errorf("argon2 parameter %q: want m=KiB,t=passes,p=lanes", f)
		}
		if _, dup := kv[k]; dup {
			return p, fmt.Errorf("argon2 parameter %s given twice", k)
		}
		kv[k] = n
	}
	m, t, l := kv["m"], kv["t"], kv["p"]
	switch {
	case len(kv) != 3:
		return p, errors.New("argon2 parameters: want m, t and p")
	case t < 1 || t > maxTime:
		return p, fmt.Errorf("argon2 t=%d: 1 to %d", t, maxTime)
	case l < 1 || l > maxThreads:
		return p, fmt.Errorf("argon2 p=%d: 1 to %d", l, maxThreads)
	case m < 8*l || m > maxMemory:
		return p, fmt.Errorf("argon2 m=%d: %d to %d KiB", m, 8*l, maxMemory)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, errors.New("argon2 salt: 8 to 64 bytes, base64 without padding")
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, errors.New("argon2 key: 16 to 64 bytes, base64 without padding")
	}
	return params{m: uint32(m), t: uint32(t), p: uint8(l), salt: salt, key: key}, nil
}
