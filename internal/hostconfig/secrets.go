package hostconfig

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/secretfile"
)

// minSecretLen is the shortest access key secret accepted (AWS's are 40 characters).
const minSecretLen = 20

// SecretKeys are the config keys whose value is a secret when given inline. Each has a
// file form beside it (secretFile, bindPasswordFile, sharedSecretFile) or, for the console
// password, the file init keeps on /perm. InlineSecrets looks for them anywhere in the
// config, so a section that moves keeps being checked.
var SecretKeys = []string{"secret", "bindPassword", "sharedSecret", "passwordHash"}

// InlineSecrets lists the fields of c that hold a secret inline, by path
// ("hostd.api.accessKeys[0].secret"), sorted. An image or PXE bundle must carry none: its
// host config is readable by anyone who can fetch the bundle (imagebuild refuses it).
// The console's password hash counts: anyone with the hash can guess at it offline.
func (c *Config) InlineSecrets() []string {
	secret := map[string]bool{}
	for _, k := range SecretKeys {
		secret[k] = true
	}
	var found []string
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), path)
			}
		case reflect.Struct:
			if v.Type() == reflect.TypeOf(yaml.Node{}) {
				return // init.network: netcfg's state, no secrets in it
			}
			for i := 0; i < v.NumField(); i++ {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "-" {
					continue
				}
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				p := name
				if path != "" {
					p = path + "." + name
				}
				fv := v.Field(i)
				if fv.Kind() == reflect.String && secret[name] && fv.String() != "" {
					found = append(found, p)
					continue
				}
				walk(fv, p)
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k), fmt.Sprintf("%s.%v", path, k.Interface()))
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	sort.Strings(found)
	return found
}

// LoadSecrets reads the secrets the config names by file (hostd.api.accessKeys[].secretFile)
// into their fields. Each file must be readable by its owner only (secretfile.Read). A key
// whose secret cannot be read is left out, and the problem returned, naming the field and
// the file: on a fresh host booted from a generic image the files may not be provisioned
// yet, and hostd must still come up (its API then refuses that key). Parse does not read
// them: a config is checked on machines (imagebuild's) where the appliance's /perm does
// not exist.
func (c *Config) LoadSecrets() []error {
	var problems []error
	keys := c.Hostd.API.AccessKeys[:0:0]
	for i, k := range c.Hostd.API.AccessKeys {
		if k.SecretFile != "" {
			s, err := secretfile.Read(k.SecretFile)
			switch {
			case err != nil:
				problems = append(problems, fmt.Errorf("hostd.api.accessKeys[%d] (%s) left out: secretFile: %w", i, k.ID, err))
				continue
			case len(s) < minSecretLen:
				problems = append(problems, fmt.Errorf("hostd.api.accessKeys[%d] (%s) left out: secretFile %s: the secret has %d characters, at least %d required", i, k.ID, k.SecretFile, len(s), minSecretLen))
				continue
			}
			k.Secret = s
		}
		keys = append(keys, k)
	}
	c.Hostd.API.AccessKeys = keys
	return problems
}
