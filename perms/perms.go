// Package perms parses and matches per-path permission rules: a list of {pattern, level}
// where the level of a path is that of the most specific pattern matching it. Patterns are
// paths in the sandbox, relative ones relative to /workspace, with shell globs per component
// (*, ?, [...]) and ** for any number of components (zero included, so "docs/**" is docs and
// everything under it). The package only decides; the workspace's FUSE layer (permfs) and
// the daemon's file API enforce.
package perms

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/nsbox/nsbox/api"
)

// Level is how much of a path a sandbox sees, from None (it does not exist) to Write.
type Level int

const (
	None  Level = iota // not listed, not openable, not creatable
	View               // listed and stat-able, content unreadable (EACCES)
	Read               // read-only
	Write              // normal
)

var levelNames = []string{api.PermissionNone, api.PermissionView, api.PermissionRead, api.PermissionWrite}

func (l Level) String() string { return levelNames[l] }

// ParseLevel parses a level's name.
func ParseLevel(s string) (Level, error) {
	if i := slices.Index(levelNames, s); i >= 0 {
		return Level(i), nil
	}
	return 0, fmt.Errorf("level must be one of %s, got %q", strings.Join(levelNames, ", "), s)
}

// rule is one compiled pattern: its components (relative to the workspace) and its level.
type rule struct {
	parts []string
	level Level
	// spec orders rules by how specific they are (see more).
	exact, named bool
	literal      int
}

// Set is a compiled, immutable list of rules. The zero Set (no rules) gives Write everywhere.
type Set struct {
	rules []rule
}

// Compile checks and compiles rules. A pattern may be absolute (it must then be /workspace
// or under it) or relative to /workspace; "" is refused, as are "." and ".." components and
// a pattern given twice.
func Compile(in []api.PermissionRule) (*Set, error) {
	s := &Set{}
	seen := map[string]bool{}
	for i, r := range in {
		lvl, err := ParseLevel(r.Level)
		if err != nil {
			return nil, fmt.Errorf("permissions[%d] (%q): %w", i, r.Pattern, err)
		}
		rel, err := relPattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		if seen[rel] {
			return nil, fmt.Errorf("permissions[%d]: pattern %q is given twice", i, r.Pattern)
		}
		seen[rel] = true
		cr := rule{level: lvl, exact: !strings.ContainsAny(rel, "*?["), named: true}
		if rel != "" {
			cr.parts = strings.Split(rel, "/")
		}
		for _, p := range cr.parts {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("permissions[%d]: pattern %q: bad glob %q", i, r.Pattern, p)
			}
			if !strings.ContainsAny(p, "*?[") {
				cr.literal++
			}
		}
		if n := len(cr.parts); n > 0 && cr.parts[n-1] == "**" {
			cr.named = false
		}
		s.rules = append(s.rules, cr)
	}
	return s, nil
}

// relPattern makes a pattern relative to /workspace ("" is /workspace itself).
func relPattern(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("pattern is empty (use \"**\" for the whole workspace)")
	}
	if path.IsAbs(p) {
		if !strings.HasPrefix(p+"/", api.WorkspacePath+"/") {
			return "", fmt.Errorf("pattern %q is outside %s: rules apply to the workspace only (relative patterns are relative to it)", p, api.WorkspacePath)
		}
		p = strings.TrimPrefix(strings.TrimPrefix(p, api.WorkspacePath), "/")
	}
	p = strings.TrimSuffix(p, "/")
	for _, c := range strings.Split(p, "/") {
		if c == "." || c == ".." || (c == "" && p != "") {
			return "", fmt.Errorf("pattern %q must be a clean path (no empty, . or .. components)", p)
		}
	}
	return p, nil
}

// Empty reports whether s has no rules.
func (s *Set) Empty() bool { return s == nil || len(s.rules) == 0 }

// Level is the level of the clean path rel, relative to the workspace ("" is its root): that
// of the most specific matching rule, Write when none matches. Specificity: a pattern without
// wildcards beats one with; then one naming entries (its last component is not **, as in
// "**/.env") beats one naming a subtree ("src/**"); then more literal components; then the
// lower level (a tie never opens more).
func (s *Set) Level(rel string) Level {
	if s.Empty() {
		return Write
	}
	var parts []string
	if rel != "" {
		parts = strings.Split(rel, "/")
	}
	best := -1
	for i := range s.rules {
		r := &s.rules[i]
		if !match(r.parts, parts) {
			continue
		}
		if best < 0 || more(r, &s.rules[best]) {
			best = i
		}
	}
	if best < 0 {
		return Write
	}
	return s.rules[best].level
}

// more reports whether a is more specific than b.
func more(a, b *rule) bool {
	switch {
	case a.exact != b.exact:
		return a.exact
	case a.named != b.named:
		return a.named
	case a.literal != b.literal:
		return a.literal > b.literal
	}
	return a.level < b.level
}

// match reports whether the pattern components pat match the path components p.
func match(pat, p []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(p); i++ {
				if match(pat[1:], p[i:]) {
					return true
				}
			}
			return false
		}
		if len(p) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], p[0]); !ok {
			return false
		}
		pat, p = pat[1:], p[1:]
	}
	return len(p) == 0
}

// Within checks that narrow gives no more than wide where narrow says anything: at a path
// standing for each of narrow's patterns (wildcards taken as plain names), narrow's level must
// not be above wide's. Its error names the first pattern that would widen. (Enforcement takes
// the lower of the two levels anyway; this refuses rules that would promise more.)
func Within(narrow, wide *Set) error {
	for _, r := range narrow.rules {
		var parts []string
		for _, p := range r.parts {
			if p != "**" {
				parts = append(parts, strings.Map(func(c rune) rune {
					if strings.ContainsRune("*?[]", c) {
						return 'x'
					}
					return c
				}, p))
			}
		}
		p := strings.Join(parts, "/")
		if r.level > wide.Level(p) {
			return fmt.Errorf("%s is %s for the sandbox: a session's rules may only narrow them, not make it %s", path.Join(api.WorkspacePath, p), wide.Level(p), r.level)
		}
	}
	return nil
}
