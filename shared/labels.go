package shared

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Container labels and grant selectors.
//
// A container's labels are the OCI annotations of its bundle that are valid
// labels, reported by its agent, plus two the coordinator adds itself:
// LabelNode (the reporting node's name) and LabelContainer (the container's
// ID). A grant's selector is Kubernetes' equality-based form,
// "key=value,key2=value2": a container matches when it has every label
// with exactly that value.
//
// Keys and values follow Kubernetes' label syntax, so selectors written for
// one read the same here: a key is an optional DNS subdomain prefix and a
// slash, then a name of at most 63 characters (letters, digits, '-', '_',
// '.', starting and ending with a letter or digit); a value is empty or such
// a name.

// Reserved label keys, set by the coordinator and never taken from a report.
const (
	// LabelNode is the name of the node that reported the container. It is
	// the one label an agent cannot choose: it comes from the node's
	// identity.
	LabelNode = "node"
	// LabelContainer is the container's ID (its UUID): names may repeat
	// across nodes, IDs do not.
	LabelContainer = "container"
)

// Bounds on labels and selectors.
const (
	// MaxReportedLabels bounds the labels one container's report may carry
	// (the reserved two are added on top).
	MaxReportedLabels = 64
	// MaxSelectorRequirements bounds the key=value pairs of one selector.
	MaxSelectorRequirements = 16
	// MaxSelectorBytes bounds a selector as written.
	MaxSelectorBytes = 4096

	maxLabelName   = 63
	maxLabelPrefix = 253
)

// IsReservedLabel says whether key is set by the coordinator only.
func IsReservedLabel(key string) bool { return key == LabelNode || key == LabelContainer }

// LabelKeyError says why key is not a label key, or returns "".
func LabelKeyError(key string) string {
	if key == "" {
		return "a key must not be empty"
	}
	name := key
	if prefix, rest, ok := strings.Cut(key, "/"); ok {
		if len(prefix) > maxLabelPrefix || !isDNSSubdomain(prefix) {
			return fmt.Sprintf("key %q: the prefix before '/' must be a DNS subdomain of at most %d characters (lower-case letters, digits, '-', '.')", key, maxLabelPrefix)
		}
		name = rest
	}
	if len(name) > maxLabelName || !isLabelName(name) {
		return fmt.Sprintf("key %q: the name must be 1 to %d characters of letters, digits, '-', '_', '.', starting and ending with a letter or digit", key, maxLabelName)
	}
	return ""
}

// LabelValueError says why value is not a label value, or returns "".
func LabelValueError(value string) string {
	if value == "" {
		return ""
	}
	if len(value) > maxLabelName || !isLabelName(value) {
		return fmt.Sprintf("value %q must be at most %d characters of letters, digits, '-', '_', '.', starting and ending with a letter or digit", truncate(value, 80), maxLabelName)
	}
	return ""
}

// ValidateReportedLabels checks the labels an agent reports for one
// container: a bounded number of valid labels, none of them reserved.
func ValidateReportedLabels(field string, labels map[string]string) error {
	if len(labels) > MaxReportedLabels {
		return &ValidationError{field, fmt.Sprintf("at most %d labels per container, got %d", MaxReportedLabels, len(labels))}
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if IsReservedLabel(k) {
			return &ValidationError{field, fmt.Sprintf("key %q is reserved: the coordinator sets it", k)}
		}
		if msg := LabelKeyError(k); msg != "" {
			return &ValidationError{field, msg}
		}
		if msg := LabelValueError(labels[k]); msg != "" {
			return &ValidationError{field, fmt.Sprintf("key %q: %s", k, msg)}
		}
	}
	return nil
}

// Selector is a parsed equality-based selector: every key must be present
// with exactly its value.
type Selector map[string]string

// String writes the selector canonically: requirements sorted by key.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return strings.Join(parts, ",")
}

// Matches says whether labels satisfy every requirement. The coordinator
// matches in SQL; this is the same rule for callers that hold the labels.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseSelector parses "key=value,key2=value2" (Kubernetes' equality-based
// form; "==" is accepted for "=", spaces around keys and values are
// ignored). A grant must select something, so the selector must have at
// least one requirement. Set-based forms ("in", "notin"), inequality ("!=")
// and bare existence ("key", "!key") are refused, as is a key given twice:
// each is a *ValidationError on field "selector" saying what is wrong.
func ParseSelector(s string) (Selector, error) {
	fail := func(format string, args ...any) (Selector, error) {
		return nil, &ValidationError{"selector", fmt.Sprintf(format, args...)}
	}
	if len(s) > MaxSelectorBytes {
		return fail("must be at most %d bytes, got %d", MaxSelectorBytes, len(s))
	}
	if strings.TrimSpace(s) == "" {
		return fail(`must not be empty: give at least one key=value, e.g. "node=host-1"`)
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxSelectorRequirements {
		return fail("at most %d requirements, got %d", MaxSelectorRequirements, len(parts))
	}
	sel := Selector{}
	for i, part := range parts {
		req := strings.TrimSpace(part)
		if req == "" {
			return fail("requirement %d is empty (a stray comma?)", i+1)
		}
		if strings.Contains(req, "!=") {
			return fail("requirement %q: only equality (key=value) is supported, not !=", req)
		}
		key, value, ok := strings.Cut(req, "=")
		if !ok {
			return fail("requirement %q: want key=value (set-based and existence forms are not supported)", req)
		}
		value = strings.TrimPrefix(value, "=") // "==" means "="
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if strings.Contains(value, "=") {
			return fail("requirement %q: the value must not contain '='", req)
		}
		if msg := LabelKeyError(key); msg != "" {
			return fail("requirement %q: %s", req, msg)
		}
		if msg := LabelValueError(value); msg != "" {
			return fail("requirement %q: %s", req, msg)
		}
		if _, dup := sel[key]; dup {
			return fail("key %q is given twice", key)
		}
		sel[key] = value
	}
	return sel, nil
}

// isLabelName reports whether s is 1+ characters of [A-Za-z0-9_.-] starting
// and ending with a letter or digit.
func isLabelName(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isDNSSubdomain reports whether s is dot-separated RFC 1123 labels:
// lower-case letters, digits and '-', each starting and ending with a
// letter or digit.
func isDNSSubdomain(s string) bool {
	if s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
