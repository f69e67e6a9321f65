// Identifiers in the forms the WorkSpaces guide uses: a prefix and ten characters
// (ws-a1b2c3d4e5, wsb-0123456789, d-92673056e8).

package catalog

import (
	"crypto/rand"
	"fmt"
	"strings"
)

// IDKind is a resource type: its prefix and the alphabet of its suffix.
type IDKind struct {
	Name     string // what the resource is called in error messages
	Prefix   string
	alphabet string
	minLen   int // shortest suffix accepted; 0 means 8
}

const (
	lowerAlnum = "0123456789abcdefghijklmnopqrstuvwxyz"
	lowerHex   = "0123456789abcdef"
	suffixLen  = 10
)

// The kinds hostd issues. Directory ids are hexadecimal, as AWS's API model requires
// (^d-[0-9a-f]{8,63}$); the others are lower-case alphanumerics.
var (
	KindWorkspace = IDKind{Name: "WorkSpace", Prefix: "ws-", alphabet: lowerAlnum}
	KindBundle    = IDKind{Name: "bundle", Prefix: "wsb-", alphabet: lowerAlnum}
	KindDirectory = IDKind{Name: "directory", Prefix: "d-", alphabet: lowerHex}
	KindImage     = IDKind{Name: "image", Prefix: "wsi-", alphabet: lowerAlnum, minLen: 9} // AWS: wsi-[0-9a-z]{9,63}
	KindIPGroup   = IDKind{Name: "IP access control group", Prefix: "wsipg-", alphabet: lowerAlnum}
)

// KindOf returns the kind whose prefix id has (wsipg- before ws-), or false.
func KindOf(id string) (IDKind, bool) {
	for _, k := range []IDKind{KindIPGroup, KindBundle, KindImage, KindWorkspace, KindDirectory} {
		if strings.HasPrefix(id, k.Prefix) {
			return k, true
		}
	}
	return IDKind{}, false
}

// New returns a fresh random identifier of kind k.
func NewID(k IDKind) string {
	var b [suffixLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("ids: crypto/rand failed: %v", err)) // the kernel's CSPRNG does not fail
	}
	var sb strings.Builder
	sb.WriteString(k.Prefix)
	// 256 is not a multiple of 36: the tiny bias is irrelevant for identifiers (not secrets).
	for _, c := range b {
		sb.WriteByte(k.alphabet[int(c)%len(k.alphabet)])
	}
	return sb.String()
}

// Check returns an error naming what is wrong if s is not an identifier of kind k.
// Suffixes of 8 to 63 characters are accepted, as AWS's model allows, so that ids made
// elsewhere (a fleet, an import) still validate; New always makes 10.
func CheckID(k IDKind, s string) error {
	rest, ok := strings.CutPrefix(s, k.Prefix)
	if !ok {
		return fmt.Errorf("%s id %q must start with %q", k.Name, s, k.Prefix)
	}
	least := k.minLen
	if least == 0 {
		least = 8
	}
	if len(rest) < least || len(rest) > 63 {
		return fmt.Errorf("%s id %q must have %d to 63 characters after %q", k.Name, s, least, k.Prefix)
	}
	for _, c := range rest {
		if !strings.ContainsRune(k.alphabet, c) {
			return fmt.Errorf("%s id %q has character %q outside [%s]", k.Name, s, c, describe(k.alphabet))
		}
	}
	return nil
}

func describe(alphabet string) string {
	if alphabet == lowerHex {
		return "0-9a-f"
	}
	return "0-9a-z"
}

// AccountID is the account every resource on this host belongs to, where AWS's shapes
// name one (a bundle's Owner, an image's OwnerAccountId): one host, one account.
const AccountID = "000000000000"
