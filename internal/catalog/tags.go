// Tags on WorkSpaces resources (guide catalog §9): the guide's restrictions, counted in
// Unicode code points, not bytes.

package catalog

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tag is one key/value tag on a resource.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// The guide's tag restrictions: "Maximum number of tags per resource—50", "Maximum key
// length—127 Unicode characters", "Maximum value length—255 Unicode characters".
const (
	MaxTagsPerResource = 50
	MaxTagKey          = 127
	MaxTagValue        = 255
)

// ReservedTagPrefix is reserved for AWS: "Do not use the "aws:" or "aws:workspaces:"
// prefixes in your tag names or values … You can't edit or delete tag names or values
// with these prefixes." It is matched without regard to case, as AWS matches it.
const ReservedTagPrefix = "aws:"

// tagChars is the guide's character set: "letters, spaces, and numbers representable in
// UTF-8, plus the following special characters: + - = . _ : / @".
var tagChars = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}+\-=._:/@]*$`)

// TagKinds are the resources that take tags: "WorkSpaces, registered directories, custom
// bundles, images, and IP access control groups".
var TagKinds = []IDKind{KindWorkspace, KindDirectory, KindBundle, KindImage, KindIPGroup}

func reserved(s string) bool {
	return len(s) >= len(ReservedTagPrefix) && strings.EqualFold(s[:len(ReservedTagPrefix)], ReservedTagPrefix)
}

// Reserved reports whether a tag is a system tag: its key or its value has the reserved
// prefix. Such a tag cannot be created, changed or deleted through the API.
func (t Tag) Reserved() bool { return reserved(t.Key) || reserved(t.Value) }

func checkTagText(what, s string, min, max int) error {
	n := utf8.RuneCountInString(s)
	switch {
	case !utf8.ValidString(s):
		return Errorf(InvalidParameterValues, "tag %s %q is not valid UTF-8", what, s)
	case n < min || n > max:
		return Errorf(InvalidParameterValues, "tag %s %q is %d characters; it must be %d to %d Unicode characters", what, s, n, min, max)
	case !tagChars.MatchString(s):
		for _, r := range s {
			if !tagChars.MatchString(string(r)) {
				return Errorf(InvalidParameterValues, "tag %s %q has %q; tags take letters, numbers, spaces and + - = . _ : / @", what, s, string(r))
			}
		}
	}
	if s != "" {
		first, _ := utf8.DecodeRuneInString(s)
		last, _ := utf8.DecodeLastRuneInString(s)
		if unicode.IsSpace(first) || unicode.Is(unicode.Z, first) || unicode.IsSpace(last) || unicode.Is(unicode.Z, last) {
			return Errorf(InvalidParameterValues, "tag %s %q begins or ends with a space; leading and trailing spaces are not allowed", what, s)
		}
	}
	return nil
}

// CheckTag checks one tag a caller asks to create or change.
func CheckTag(t Tag) error {
	if err := checkTagText("key", t.Key, 1, MaxTagKey); err != nil {
		return err
	}
	if err := checkTagText("value", t.Value, 0, MaxTagValue); err != nil {
		return err
	}
	if t.Reserved() {
		return Errorf(InvalidParameterValues, "tag %q: the %s prefix is reserved for system tags, in keys and values", t.Key, ReservedTagPrefix)
	}
	return nil
}

// CheckTags checks a request's tags: each one, and no key twice (keys are case-sensitive:
// Env and env are two keys).
func CheckTags(tags []Tag) error {
	seen := map[string]bool{}
	for _, t := range tags {
		if err := CheckTag(t); err != nil {
			return err
		}
		if seen[t.Key] {
			return Errorf(InvalidParameterValues, "tag key %q appears twice in the request", t.Key)
		}
		seen[t.Key] = true
	}
	return nil
}

// MergeTags applies a CreateTags request to a resource's tags: new keys are added, existing
// keys take the new value. A system tag cannot be changed, and the result may hold at most
// MaxTagsPerResource tags (ResourceLimitExceeded).
func MergeTags(resource string, have, add []Tag) ([]Tag, error) {
	if err := CheckTags(add); err != nil {
		return nil, err
	}
	out := append([]Tag(nil), have...)
	for _, t := range add {
		i := indexTag(out, t.Key)
		if i < 0 {
			out = append(out, t)
			continue
		}
		if out[i].Reserved() {
			return nil, Errorf(InvalidParameterValues, "tag %q on %s is a system tag (%s prefix); it cannot be changed", t.Key, resource, ReservedTagPrefix)
		}
		out[i].Value = t.Value
	}
	if len(out) > MaxTagsPerResource {
		return nil, Errorf(ResourceLimitExceeded, "%s would have %d tags; a resource can have at most %d", resource, len(out), MaxTagsPerResource)
	}
	return out, nil
}

// RemoveTags applies a DeleteTags request: the named keys go; a key the resource does not
// have is ignored, as AWS ignores it; a system tag cannot be deleted.
func RemoveTags(resource string, have []Tag, keys []string) ([]Tag, error) {
	for _, k := range keys {
		if reserved(k) {
			return nil, Errorf(InvalidParameterValues, "tag key %q: tags with the %s prefix are system tags and cannot be deleted", k, ReservedTagPrefix)
		}
		if i := indexTag(have, k); i >= 0 && have[i].Reserved() {
			return nil, Errorf(InvalidParameterValues, "tag %q on %s is a system tag (%s prefix in its value); it cannot be deleted", k, resource, ReservedTagPrefix)
		}
	}
	var out []Tag
	for _, t := range have {
		drop := false
		for _, k := range keys {
			if t.Key == k {
				drop = true
			}
		}
		if !drop {
			out = append(out, t)
		}
	}
	return out, nil
}

func indexTag(tags []Tag, key string) int {
	for i, t := range tags {
		if t.Key == key {
			return i
		}
	}
	return -1
}
