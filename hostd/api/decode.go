package api

import (
	"bytes"
	"deskhost/internal/catalog"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TargetPrefix is the X-Amz-Target prefix of AWS's WorkSpaces JSON protocol.
const TargetPrefix = "WorkspacesService."

// OwnTargetPrefix is the X-Amz-Target prefix of hostd's own operations: what AWS keeps
// outside WorkSpaces (directory definitions and users, in Directory Service), and the
// host's own services' calls. Same protocol, same authentication.
const OwnTargetPrefix = "Deskhost."

// ContentType is the request and response media type of AWS's JSON 1.1 protocol.
const ContentType = "application/x-amz-json-1.1"

// decodeRequest turns an X-Amz-Target value and a request body into the operation's name
// and its decoded input, or an AWS error: UnknownOperationException for the target,
// SerializationException for malformed JSON, wrong types and unknown members, and
// InvalidParameterValuesException for missing required members and values out of range.
// It never panics, whatever it is given (FuzzDecode).
func decodeRequest(target string, body []byte) (string, operation, any, *catalog.Error) {
	name, op, aerr := lookupOperation(target)
	if aerr != nil {
		return "", operation{}, nil, aerr
	}
	req := op.newReq()
	if aerr := decodeInto(body, op.input, req); aerr != nil {
		return name, op, nil, aerr
	}
	return name, op, req, nil
}

func lookupOperation(target string) (string, operation, *catalog.Error) {
	if target == "" {
		return "", operation{}, catalog.Errorf(catalog.UnknownOperation,
			"missing X-Amz-Target header: it names the operation, e.g. %sDescribeWorkspaces", TargetPrefix)
	}
	if target == TargetPrefix+ReportConnectionsOperation {
		// The name zeroclient used before hostd's own operations had their own prefix.
		return ReportConnectionsOperation, ownOperations[ReportConnectionsOperation], nil
	}
	if name, ok := strings.CutPrefix(target, OwnTargetPrefix); ok {
		op, ok := ownOperations[name]
		if !ok {
			return "", operation{}, catalog.Errorf(catalog.UnknownOperation,
				"operation %s is not one of hostd's own (%s)", quote(name), strings.Join(ownOperationNames(), ", "))
		}
		return name, op, nil
	}
	name, ok := strings.CutPrefix(target, TargetPrefix)
	if !ok {
		return "", operation{}, catalog.Errorf(catalog.UnknownOperation,
			"X-Amz-Target %s is not %s<Operation> (or %s<Operation> for hostd's own)", quote(target), TargetPrefix, OwnTargetPrefix)
	}
	op, ok := operations[name]
	if !ok {
		return "", operation{}, catalog.Errorf(catalog.UnknownOperation,
			"operation %s is not one this host implements (%s)", quote(name), strings.Join(operationNames(), ", "))
	}
	return name, op, nil
}

// decodeInto validates body against the model shape s and then decodes it into v, which
// is a pointer to the Go type mirroring s. Validation first, so that nothing reaches the
// Go decoder that it would read differently (encoding/json matches names without regard
// to case, keeps the last of duplicate members, and so on).
func decodeInto(body []byte, s *shape, v any) *catalog.Error {
	if len(bytes.TrimSpace(body)) == 0 {
		// AWS's JSON protocol allows an empty body for an input with no members set.
		body = []byte("{}")
	}
	if aerr := validateJSON(body, s); aerr != nil {
		return aerr
	}
	if err := json.Unmarshal(body, v); err != nil {
		// Unreachable when the shape and the Go type agree; FuzzDecode checks they do.
		return catalog.Errorf(catalog.SerializationError, "cannot decode the request body: %v", err)
	}
	return nil
}

// validateJSON walks body as a token stream against s.
func validateJSON(body []byte, s *shape) *catalog.Error {
	if !utf8.Valid(body) {
		return catalog.Errorf(catalog.SerializationError, "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	w := walker{dec: dec}
	tok, err := dec.Token()
	if err != nil {
		return w.syntax(err)
	}
	if tok != json.Delim('{') {
		return catalog.Errorf(catalog.SerializationError, "the request body must be a JSON object (%s), not %s", s.name, describeToken(tok))
	}
	if aerr := w.object(s, ""); aerr != nil {
		return aerr
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return w.syntax(err)
		}
		return catalog.Errorf(catalog.SerializationError, "unexpected %s after the request's JSON object", describeToken(tok))
	}
	if w.invalid != nil {
		return w.invalid
	}
	return nil
}

type walker struct {
	dec *json.Decoder
	// invalid is the first constraint violation (InvalidParameterValuesException); the walk
	// goes on so that a SerializationException later in the body takes precedence, as the
	// body is first deserialized and only then validated.
	invalid *catalog.Error
}

func (w *walker) syntax(err error) *catalog.Error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return catalog.Errorf(catalog.SerializationError, "malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return catalog.Errorf(catalog.SerializationError, "malformed JSON: the body ends before the JSON value does")
	}
	return catalog.Errorf(catalog.SerializationError, "malformed JSON: %v", err)
}

func (w *walker) violate(format string, args ...any) {
	if w.invalid == nil {
		w.invalid = catalog.Errorf(catalog.InvalidParameterValues, format, args...)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// object reads the members of an object whose '{' has been read, through its '}'.
func (w *walker) object(s *shape, path string) *catalog.Error {
	present := map[string]bool{}
	seen := map[string]bool{}
	for w.dec.More() {
		kt, err := w.dec.Token()
		if err != nil {
			return w.syntax(err)
		}
		key, ok := kt.(string)
		if !ok {
			return catalog.Errorf(catalog.SerializationError, "malformed JSON: expected a member name, got %s", describeToken(kt))
		}
		mp := join(path, key)
		ms := s.member(key)
		if ms == nil {
			where := "the request"
			if path != "" {
				where = path
			}
			hint := ""
			for _, n := range s.memberNames() {
				if strings.EqualFold(n, key) {
					hint = fmt.Sprintf("; member names are case-sensitive: did you mean %s?", n)
				}
			}
			if hint == "" {
				hint = fmt.Sprintf("; a %s has %s", s.name, strings.Join(s.memberNames(), ", "))
			}
			return catalog.Errorf(catalog.SerializationError, "unknown member %s in %s%s", quote(mp), where, hint)
		}
		if seen[key] {
			return catalog.Errorf(catalog.SerializationError, "member %s appears more than once", mp)
		}
		seen[key] = true
		vt, err := w.dec.Token()
		if err != nil {
			return w.syntax(err)
		}
		if vt == nil {
			continue // null: the member is absent
		}
		if aerr := w.value(ms, mp, vt); aerr != nil {
			return aerr
		}
		present[key] = true
	}
	if _, err := w.dec.Token(); err != nil { // '}'
		return w.syntax(err)
	}
	for _, r := range s.required {
		if !present[r] {
			w.violate("missing required member %s", join(path, r))
		}
	}
	return nil
}

func (w *walker) value(s *shape, path string, tok json.Token) *catalog.Error {
	switch s.kind {
	case kStruct:
		if tok != json.Delim('{') {
			return typeError(path, s, tok)
		}
		return w.object(s, path)
	case kList:
		if tok != json.Delim('[') {
			return typeError(path, s, tok)
		}
		n := 0
		for w.dec.More() {
			et, err := w.dec.Token()
			if err != nil {
				return w.syntax(err)
			}
			ep := fmt.Sprintf("%s[%d]", path, n)
			if et == nil {
				return catalog.Errorf(catalog.SerializationError, "%s: null is not allowed in a list", ep)
			}
			if aerr := w.value(s.elem, ep, et); aerr != nil {
				return aerr
			}
			n++
		}
		if _, err := w.dec.Token(); err != nil { // ']'
			return w.syntax(err)
		}
		if s.min != nil && n < *s.min {
			w.violate("%s lists %d items; it needs at least %d", path, n, *s.min)
		}
		if s.max != nil && n > *s.max {
			w.violate("%s lists %d items; at most %d are allowed", path, n, *s.max)
		}
		return nil
	case kString:
		v, ok := tok.(string)
		if !ok {
			return typeError(path, s, tok)
		}
		n := utf8.RuneCountInString(v)
		switch {
		case s.min != nil && n < *s.min:
			w.violate("%s %s is %d characters; it must be at least %d", path, quote(v), n, *s.min)
		case s.max != nil && n > *s.max:
			w.violate("%s %s is %d characters; it must be at most %d", path, quote(v), n, *s.max)
		case s.pattern != nil && !s.pattern.MatchString(v):
			w.violate("%s %s does not match %s", path, quote(v), s.pattern)
		case len(s.enum) > 0 && !slices.Contains(s.enum, v):
			w.violate("%s %s must be one of %s", path, quote(v), strings.Join(s.enum, ", "))
		}
		return nil
	case kInteger:
		num, ok := tok.(json.Number)
		if !ok {
			return typeError(path, s, tok)
		}
		v, err := strconv.ParseInt(string(num), 10, 32)
		if err != nil {
			return catalog.Errorf(catalog.SerializationError, "%s: expected an integer (32-bit, no fraction or exponent), got %s", path, clip(string(num)))
		}
		switch {
		case s.min != nil && v < int64(*s.min):
			w.violate("%s is %d; it must be at least %d", path, v, *s.min)
		case s.max != nil && v > int64(*s.max):
			w.violate("%s is %d; it must be at most %d", path, v, *s.max)
		}
		return nil
	case kBoolean:
		if _, ok := tok.(bool); !ok {
			return typeError(path, s, tok)
		}
		return nil
	}
	return catalog.Errorf(catalog.InternalFailure, "model shape %s has no kind", s.name)
}

func typeError(path string, s *shape, tok json.Token) *catalog.Error {
	want := "a " + s.kind.String()
	switch s.kind {
	case kStruct:
		want = "an object (" + s.name + ")"
	case kList:
		want = "an array of " + s.elem.kind.String() + "s"
		if s.elem.kind == kStruct {
			want = "an array of " + s.elem.name + " objects"
		}
	case kInteger:
		want = "an integer"
	}
	return catalog.Errorf(catalog.SerializationError, "%s: expected %s, got %s", path, want, describeToken(tok))
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return "a string " + quote(v)
	case json.Number:
		return "a number " + clip(string(v))
	case bool:
		return fmt.Sprintf("a boolean %v", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// clip shortens s for an error message.
func clip(s string) string { return clipN(s, 64) }

// clipN shortens s to max characters.
func clipN(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max]) + "…"
}

// quote quotes s for an error message, shortened.
func quote(s string) string { return strconv.Quote(clip(s)) }
