// Package policy is the pure logic of who may log in from where: the guide's password
// policy, client device classification (device-type access), zero-client firmware gating,
// and the brute-force lockout with an injected clock. No I/O except through the lockout's
// small store interface, so every rule is unit-tested.
package policy

import (
	"deskhost/internal/catalog"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SpecialCharacters is the guide's special set, exactly: ~!@#$%^&*_-+=`|\(){}[]:;"'<>,.?/
const SpecialCharacters = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/"

// Password length limits: "between 8 and 64 characters in length, inclusive".
const (
	MinPassword = 8
	MaxPassword = 64
)

// CheckPassword applies the guide's password policy: 8–64 characters and characters from
// at least p.Classes() of lowercase, uppercase, digits and the special set. Characters in
// none of the four (spaces, accented letters) are allowed but count toward no class.
func CheckPassword(pw string, p catalog.PasswordPolicy) error {
	if !utf8.ValidString(pw) {
		return fmt.Errorf("the password is not valid UTF-8")
	}
	n := utf8.RuneCountInString(pw)
	if n < MinPassword || n > MaxPassword {
		return fmt.Errorf("the password has %d characters; it must have between %d and %d", n, MinPassword, MaxPassword)
	}
	var lower, upper, digit, special bool
	for _, r := range pw {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		case strings.ContainsRune(SpecialCharacters, r):
			special = true
		}
	}
	have := 0
	for _, b := range []bool{lower, upper, digit, special} {
		if b {
			have++
		}
	}
	if need := p.Classes(); have < need {
		return fmt.Errorf("the password uses %d of the 4 kinds of character; it needs at least %d of: lowercase letters (a-z), uppercase letters (A-Z), numbers (0-9), and the special characters %s",
			have, need, SpecialCharacters)
	}
	return nil
}

// ClientInfo is what a client says about itself in hello.
type ClientInfo struct {
	ProductName    string
	ProductVersion string
	Platform       string
}

// ClassifyDevice tells the device type from a hello's client-info. Zero clients report a
// Tera1/Tera2 platform or a "Zero Client" product; software clients report their OS in
// platform. Anything unrecognised is DeviceUnknown, which no setting allows: a client must
// say what it is to be let in.
func ClassifyDevice(ci ClientInfo) catalog.DeviceType {
	p := strings.ToLower(ci.Platform)
	n := strings.ToLower(ci.ProductName)
	has := func(s string, subs ...string) bool {
		for _, sub := range subs {
			if strings.Contains(s, sub) {
				return true
			}
		}
		return false
	}
	switch {
	case has(p, "tera1", "tera2", "zero client") || has(n, "zero client"):
		return catalog.DeviceZeroClient
	case has(n, "web client", "web access") || p == "web":
		return catalog.DeviceWeb
	case has(p, "android"):
		return catalog.DeviceAndroid
	case has(p, "ipad", "iphone", "ios"):
		return catalog.DeviceIOS
	case has(p, "chrome"):
		return catalog.DeviceChromeOS
	case has(p, "windows"):
		return catalog.DeviceWindows
	case has(p, "mac", "os x", "osx", "darwin"):
		return catalog.DeviceMacOS
	case has(p, "linux", "ubuntu", "centos", "debian", "red hat", "rhel", "fedora"):
		return catalog.DeviceLinux
	}
	return catalog.DeviceUnknown
}

// MinZeroClientFirmware is the oldest zero-client firmware that can reach WorkSpaces at all
// (the guide: 4.6.0 through a connection manager — this broker is one — and 6.0.0 directly).
var MinZeroClientFirmware = [3]int{4, 6, 0}

// CheckFirmware refuses zero clients whose firmware is older than 4.6.0 or unreadable.
func CheckFirmware(t catalog.DeviceType, version string) error {
	if t != catalog.DeviceZeroClient {
		return nil
	}
	v, ok := parseVersion(version)
	if !ok {
		return fmt.Errorf("zero client firmware version %q is not a version number", version)
	}
	for i := range v {
		if v[i] != MinZeroClientFirmware[i] {
			if v[i] < MinZeroClientFirmware[i] {
				return fmt.Errorf("zero client firmware %s is older than %d.%d.%d", version, MinZeroClientFirmware[0], MinZeroClientFirmware[1], MinZeroClientFirmware[2])
			}
			return nil
		}
	}
	return nil
}

func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	fields := strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == '.' || r == '-' || r == ' ' })
	if len(fields) == 0 {
		return v, false
	}
	for i := 0; i < len(fields) && i < 3; i++ {
		n, err := strconv.Atoi(fields[i])
		if err != nil || n < 0 {
			if i == 0 {
				return v, false
			}
			break
		}
		v[i] = n
	}
	return v, true
}

// Guide values for the WorkSpaces Access event (catalog §21).
const (
	ZeroClientPlatform = "Teradici PCoIP Zero Client and Tera2"
)

// EventProduct is the event's workspacesClientProductName: the client's own name when it
// is one the guide lists for its kind, else the guide's name for that kind.
func EventProduct(t catalog.DeviceType, productName string) string {
	switch t {
	case catalog.DeviceZeroClient:
		for _, known := range []string{"Teradici PCoIP Zero Client", "Teradici PCoIP Desktop Client", "Dell Wyse PCoIP Client"} {
			if strings.EqualFold(productName, known) {
				return known
			}
		}
		return "Teradici PCoIP Zero Client"
	case catalog.DeviceIOS:
		return "Amazon WorkSpaces Mobile client"
	case catalog.DeviceAndroid:
		return "WorkSpaces Mobile client"
	case catalog.DeviceChromeOS:
		return "WorkSpaces Chrome client"
	case catalog.DeviceWeb:
		return "WorkSpaces Web client"
	}
	if strings.EqualFold(productName, "Teradici PCoIP Desktop Client") {
		return "Teradici PCoIP Desktop Client"
	}
	return "WorkSpaces Desktop client"
}

// EventPlatform is the event's clientPlatform: one of Android, Chrome, iOS, Linux, OSX,
// Windows, "Teradici PCoIP Zero Client and Tera2", Web.
func EventPlatform(t catalog.DeviceType) string {
	switch t {
	case catalog.DeviceZeroClient:
		return ZeroClientPlatform
	case catalog.DeviceAndroid:
		return "Android"
	case catalog.DeviceChromeOS:
		return "Chrome"
	case catalog.DeviceIOS:
		return "iOS"
	case catalog.DeviceLinux:
		return "Linux"
	case catalog.DeviceMacOS:
		return "OSX"
	case catalog.DeviceWindows:
		return "Windows"
	case catalog.DeviceWeb:
		return "Web"
	}
	return "Unknown"
}
