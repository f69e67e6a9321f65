// Directories: a directory record and its users, with the guide's user-name rules.

package catalog

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Directory is a registered directory (AWS's WorkspaceDirectory, reduced).
type Directory struct {
	ID    string `yaml:"id" json:"id"`
	Name  string `yaml:"name" json:"name"` // DNS name, e.g. corp.example.com
	Alias string `yaml:"alias" json:"alias"`
	// RegistrationCode is what clients enter to find this directory; made at registration.
	RegistrationCode string `yaml:"registrationCode" json:"registrationCode"`
	Users            []User `yaml:"users" json:"users"`
	// Login is how the directory's users sign in through the connection manager
	// (login.go). It holds secrets: hostd's store keeps them, and only hostd's root-only
	// DescribeCatalog hands them out (Redacted strips them everywhere else).
	Login Login `yaml:"login" json:"login"`
}

// User is a directory user a WorkSpace can be launched for.
type User struct {
	UserName  string `yaml:"userName" json:"userName"`
	FirstName string `yaml:"firstName" json:"firstName"`
	LastName  string `yaml:"lastName" json:"lastName"`
	Email     string `yaml:"email" json:"email"`
}

// FindUser returns the user with this name; user names compare case-insensitively, as in AD.
func (d *Directory) FindUser(name string) (User, bool) {
	for _, u := range d.Users {
		if strings.EqualFold(u.UserName, name) {
			return u, true
		}
	}
	return User{}, false
}

// MaxUserName is AWS's UserName length limit; Linux images have a stricter one.
const (
	MaxUserName      = 63
	MaxLinuxUserName = 20
)

// ValidateUserName applies the guide's rules for an image OS. Linux: "a maximum of 20
// characters; letters, spaces, and numbers that are representable in UTF-8; the special
// characters _.-#; cannot begin with a dash". Windows: AWS's 1–63 characters.
func ValidateUserName(name string, os OS) error {
	n := utf8.RuneCountInString(name)
	if n == 0 {
		return Errorf(InvalidParameterValues, "user name is empty")
	}
	if !utf8.ValidString(name) {
		return Errorf(InvalidParameterValues, "user name %q is not valid UTF-8", name)
	}
	if os != Linux {
		if n > MaxUserName {
			return Errorf(InvalidParameterValues, "user name %q is %d characters; the limit is %d", name, n, MaxUserName)
		}
		return nil
	}
	if n > MaxLinuxUserName {
		return Errorf(InvalidParameterValues, "user name %q is %d characters; Linux WorkSpaces allow at most %d", name, n, MaxLinuxUserName)
	}
	if strings.HasPrefix(name, "-") {
		return Errorf(InvalidParameterValues, "user name %q begins with a dash, which Linux WorkSpaces do not allow", name)
	}
	for _, r := range name {
		if unicode.IsLetter(r) || unicode.IsNumber(r) || r == ' ' || strings.ContainsRune("_.-#", r) {
			continue
		}
		return Errorf(InvalidParameterValues,
			"user name %q has %q; Linux WorkSpaces allow letters, numbers, spaces and _.-# only", name, r)
	}
	return nil
}
