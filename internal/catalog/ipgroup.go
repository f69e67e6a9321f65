// IP access control groups (guide catalog §14): client source allow-lists, one record per
// group, associated with directories by id. The same records feed the broker's login
// check, the gateway's live sessions and netcfg's nftables sets.

package catalog

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// IPGroup is an IP access control group.
type IPGroup struct {
	ID          string   `yaml:"id" json:"id,omitempty"`
	Name        string   `yaml:"name" json:"name,omitempty"`
	Description string   `yaml:"description" json:"description,omitempty"`
	Rules       []IPRule `yaml:"rules" json:"rules,omitempty"`
}

// IPRule allows one source address or range.
type IPRule struct {
	// Source is an IP address ("a single IP is stored as /32") or a CIDR range.
	Source      IPSource `yaml:"source" json:"source,omitempty"`
	Description string   `yaml:"description" json:"description,omitempty"`
}

// IPSource is a parsed address range. In JSON it is its CIDR text (netip.Prefix's).
type IPSource struct{ netip.Prefix }

func (s *IPSource) UnmarshalYAML(n *yaml.Node) error {
	var v string
	if err := n.Decode(&v); err != nil {
		return err
	}
	p, err := ParseIPSource(v)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	s.Prefix = p
	return nil
}

func (s IPSource) MarshalYAML() (any, error) { return s.Prefix.String(), nil }

// ParseIPSource parses an IP rule's source: an address (as /32 or /128) or a CIDR whose
// host bits are zero.
func ParseIPSource(v string) (netip.Prefix, error) {
	if !strings.Contains(v, "/") {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("IP rule source %q: not an IP address or CIDR range", v)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("IP rule source %q: not an IP address or CIDR range", v)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("IP rule source %q has host bits set; did you mean %s?", v, p.Masked())
	}
	return p, nil
}

// ParseIPRule parses a rule as the API takes it (AWS's IpRule): an IPv4 address or CIDR
// range. AWS's IP access control groups are IPv4 only, and so is netcfg's client set.
func ParseIPRule(v string) (netip.Prefix, error) {
	p, err := ParseIPSource(strings.TrimSpace(v))
	if err != nil {
		return p, err
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("IP rule %q: IP access control groups take IPv4 addresses and ranges only", v)
	}
	return p, nil
}

// Guide limits for IP access control groups: "IP access control groups per Region: 100;
// Rules per IP access control group: 10; IP access control groups per directory: 25".
const (
	MaxIPGroups             = 100
	MaxIPRulesPerGroup      = 10
	MaxIPGroupsPerDirectory = 25
	// MaxIPGroupText bounds a group's name and description and a rule's description, in
	// characters (netcfg's limit for descriptions; AWS's model sets none).
	MaxIPGroupText = 255
)

// CheckIPGroup checks a group record: its id, name, description and rules (count, form,
// duplicates). Limits that need other records (groups per account or directory) are the
// caller's.
func CheckIPGroup(g IPGroup) error {
	if err := CheckID(KindIPGroup, g.ID); err != nil {
		return Errorf(InvalidParameterValues, "%v", err)
	}
	if strings.TrimSpace(g.Name) == "" {
		return Errorf(InvalidParameterValues, "GroupName is empty; an IP access control group needs a name")
	}
	if n := utf8.RuneCountInString(g.Name); n > MaxIPGroupText {
		return Errorf(InvalidParameterValues, "GroupName is %d characters; at most %d", n, MaxIPGroupText)
	}
	if n := utf8.RuneCountInString(g.Description); n > MaxIPGroupText {
		return Errorf(InvalidParameterValues, "GroupDesc is %d characters; at most %d", n, MaxIPGroupText)
	}
	return CheckIPRules(g.ID, g.Rules)
}

// CheckIPRules checks a group's rule list: at most MaxIPRulesPerGroup (ResourceLimitExceeded),
// IPv4, no rule twice.
func CheckIPRules(groupID string, rules []IPRule) error {
	if len(rules) > MaxIPRulesPerGroup {
		return Errorf(ResourceLimitExceeded, "IP access control group %s would have %d rules; a group can have at most %d", groupID, len(rules), MaxIPRulesPerGroup)
	}
	seen := map[netip.Prefix]bool{}
	for _, r := range rules {
		if !r.Source.IsValid() || !r.Source.Addr().Is4() {
			return Errorf(InvalidParameterValues, "IP rule %q: IP access control groups take IPv4 addresses and ranges only", r.Source.Prefix.String())
		}
		if seen[r.Source.Prefix] {
			return Errorf(InvalidParameterValues, "IP rule %s appears twice in IP access control group %s", r.Source.Prefix, groupID)
		}
		seen[r.Source.Prefix] = true
		if n := utf8.RuneCountInString(r.Description); n > MaxIPGroupText {
			return Errorf(InvalidParameterValues, "the description of IP rule %s is %d characters; at most %d", r.Source.Prefix, n, MaxIPGroupText)
		}
	}
	return nil
}

// IPAllowed reports whether a client at addr may log in: true with no group associated
// (the default group allows all), else whether any rule of any associated group matches —
// so associating only empty groups blocks everyone.
func (l *Login) IPAllowed(addr netip.Addr) bool {
	if len(l.IPGroups) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, g := range l.IPGroups {
		for _, r := range g.Rules {
			if r.Source.Contains(addr) {
				return true
			}
		}
	}
	return false
}
