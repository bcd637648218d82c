// Package perms parses and matches per-path permission rules: a list of {pattern, level}
// where the level of a path is that of the most specific pattern matching it. Patterns are
// absolute paths in the sandbox, relative ones relative to /workspace, with shell globs per
// component (*, ?, [...]) and ** for any number of components (zero included, so "docs/**" is
// docs and everything under it). The package decides levels and which directories a set of
// rules needs a permission layer on (Roots); the FUSE layers (permfs) enforce.
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

// rule is one compiled pattern: its components (of the absolute path, without the leading
// "/") and its level.
type rule struct {
	pattern string // as given
	parts   []string
	level   Level
	// spec orders rules by how specific they are (see more).
	exact, named bool
	literal      int
}

// Set is a compiled, immutable list of rules. The zero Set (no rules) gives Write everywhere.
type Set struct {
	rules []rule
}

// Compile checks and compiles rules. A pattern is absolute, or relative to /workspace; ""
// is refused, as are "." and ".." components, a pattern given twice, and one whose first
// component is a wildcard outside /workspace (its layer would have to be the whole root).
func Compile(in []api.PermissionRule) (*Set, error) {
	s := &Set{}
	seen := map[string]bool{}
	for i, r := range in {
		lvl, err := ParseLevel(r.Level)
		if err != nil {
			return nil, fmt.Errorf("permissions[%d] (%q): %w", i, r.Pattern, err)
		}
		abs, err := absPattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("permissions[%d]: %w", i, err)
		}
		if seen[abs] {
			return nil, fmt.Errorf("permissions[%d]: pattern %q is given twice", i, r.Pattern)
		}
		seen[abs] = true
		cr := rule{pattern: r.Pattern, level: lvl, exact: !strings.ContainsAny(abs, "*?["), named: true, parts: strings.Split(abs[1:], "/")}
		for _, p := range cr.parts {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("permissions[%d]: pattern %q: bad glob %q", i, r.Pattern, p)
			}
			if !strings.ContainsAny(p, "*?[") {
				cr.literal++
			}
		}
		if cr.parts[len(cr.parts)-1] == "**" {
			cr.named = false
		}
		if cr.root() == "/" {
			return nil, fmt.Errorf("permissions[%d]: pattern %q would need a permission layer over the whole root: outside %s a pattern must begin with a directory named without wildcards (e.g. /etc/*.key, /home/user/.ssh/**)", i, r.Pattern, api.WorkspacePath)
		}
		s.rules = append(s.rules, cr)
	}
	return s, nil
}

// absPattern makes a pattern absolute (relative ones are relative to /workspace).
func absPattern(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("pattern is empty (use \"**\" for the whole workspace)")
	}
	if !path.IsAbs(p) {
		p = api.WorkspacePath + "/" + p
	}
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "", fmt.Errorf("pattern \"/\" would cover the whole root: name the directories the rule is for")
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "." || c == ".." || c == "" {
			return "", fmt.Errorf("pattern %q must be a clean path (no empty, . or .. components)", p)
		}
	}
	return p, nil
}

// root is the directory a permission layer must be mounted on to enforce the rule: the
// workspace for a pattern in it; else the deepest directory every path the pattern matches
// is in, the parent of a path it names (it lists that name, or hides it).
func (r *rule) root() string {
	if ws := strings.TrimPrefix(api.WorkspacePath, "/"); r.parts[0] == ws {
		return api.WorkspacePath
	}
	n := 0 // literal leading components
	for n < len(r.parts) && !strings.ContainsAny(r.parts[n], "*?[") {
		n++
	}
	rest := r.parts[n:]
	if len(rest) == 0 || (len(rest) == 1 && rest[0] == "**") {
		n-- // the pattern may name that directory itself
	}
	return "/" + strings.Join(r.parts[:max(n, 0)], "/")
}

// Roots are the directories the rules need permission layers on: each rule's, less those
// inside another, sorted.
func (s *Set) Roots() []string {
	var roots []string
	for i := range s.rules {
		roots = append(roots, s.rules[i].root())
	}
	slices.Sort(roots)
	roots = slices.Compact(roots)
	var out []string
	for _, r := range roots {
		if len(out) == 0 || !Within(r, out[len(out)-1]) {
			out = append(out, r)
		}
	}
	return out
}

// Within reports whether the clean absolute path p is dir or under it.
func Within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// Reaching is the first pattern that may match the clean absolute path p or a path under it
// ("" when none may).
func (s *Set) Reaching(p string) string {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i := range s.rules {
		if reach(s.rules[i].parts, parts) {
			return s.rules[i].pattern
		}
	}
	return ""
}

// reach reports whether pat matches p or a path under it.
func reach(pat, p []string) bool {
	switch {
	case len(p) == 0:
		return true
	case len(pat) == 0:
		return false
	case pat[0] == "**":
		return reach(pat[1:], p) || reach(pat, p[1:])
	}
	ok, _ := path.Match(pat[0], p[0])
	return ok && reach(pat[1:], p[1:])
}

// Empty reports whether s has no rules.
func (s *Set) Empty() bool { return s == nil || len(s.rules) == 0 }

// Level is the level of the clean absolute path p: that of the most specific matching rule,
// Write when none matches. Specificity: a pattern without
// wildcards beats one with; then one naming entries (its last component is not **, as in
// "**/.env") beats one naming a subtree ("src/**"); then more literal components; then the
// lower level (a tie never opens more).
func (s *Set) Level(p string) Level {
	if s.Empty() {
		return Write
	}
	var parts []string
	if p != "/" {
		parts = strings.Split(strings.TrimPrefix(p, "/"), "/")
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

// Narrows checks that narrow gives no more than wide where narrow says anything: at a path
// standing for each of narrow's patterns (wildcards taken as plain names), narrow's level must
// not be above wide's. Its error names the first pattern that would widen. (Enforcement takes
// the lower of the two levels anyway; this refuses rules that would promise more.)
func Narrows(narrow, wide *Set) error {
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
		p := "/" + strings.Join(parts, "/")
		if r.level > wide.Level(p) {
			return fmt.Errorf("%s is %s for the sandbox: a session's rules may only narrow them, not make it %s", p, wide.Level(p), r.level)
		}
	}
	return nil
}
