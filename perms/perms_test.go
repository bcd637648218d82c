package perms

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/nsbox/nsbox/api"
)

func TestLevel(t *testing.T) {
	s, err := Compile([]api.PermissionRule{
		{Pattern: "**/.env", Level: "none"}, {Pattern: "docs/**", Level: "read"}, {Pattern: "/workspace/secrets/**", Level: "view"},
		{Pattern: "src/**", Level: "write"}, {Pattern: "**", Level: "read"}, {Pattern: "src/locked/*.go", Level: "read"},
		{Pattern: "src/exact.txt", Level: "none"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]Level{
		"": Read, "README.md": Read, ".env": None, "src/.env": None, "src/a/b/.env": None, "docs": Read, "docs/x/y.md": Read,
		"docs/.env": None, "secrets": View, "secrets/k.pem": View, "secrets/.env": None, "src": Write, "src/main.go": Write,
		"src/locked/a.go": Read, "src/locked/a.c": Write, "src/exact.txt": None, "srcx": Read,
	} {
		if got := s.Level(path.Join("/workspace", p)); got != want {
			t.Errorf("Level(%q) = %s, want %s", p, got, want)
		}
	}
	var empty *Set
	if empty.Level("x") != Write {
		t.Error("no rules must be write")
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, rules := range [][]api.PermissionRule{
		{{Pattern: "", Level: "none"}}, {{Pattern: "a", Level: "hidden"}}, {{Pattern: "/*/secret", Level: "none"}}, {{Pattern: "/**", Level: "none"}}, {{Pattern: "/", Level: "none"}},
		{{Pattern: "a/../b", Level: "none"}}, {{Pattern: "a//b", Level: "none"}}, {{Pattern: "[", Level: "none"}},
		{{Pattern: "a", Level: "none"}, {Pattern: "/workspace/a", Level: "read"}},
	} {
		if _, err := Compile(rules); err == nil {
			t.Errorf("Compile(%+v) accepted", rules)
		}
	}
}

func TestWithin(t *testing.T) {
	wide, _ := Compile([]api.PermissionRule{{Pattern: "**", Level: "read"}, {Pattern: "src/**", Level: "write"}, {Pattern: "**/.env", Level: "none"}})
	for rules, ok := range map[string]bool{"src/**=read": true, "docs/**=none": true, "src/a/*.go=write": true, "docs/**=write": false, "**=write": false, "src/.env=read": false} {
		pattern, level, _ := strings.Cut(rules, "=")
		narrow, err := Compile([]api.PermissionRule{{Pattern: pattern, Level: level}})
		if err != nil {
			t.Fatal(err)
		}
		if err := Narrows(narrow, wide); (err == nil) != ok {
			t.Errorf("Narrows(%s): %v, want ok %v", rules, err, ok)
		}
	}
}

func TestRoots(t *testing.T) {
	s, err := Compile([]api.PermissionRule{
		{Pattern: "**/.env", Level: "none"}, {Pattern: "/etc/secret", Level: "none"}, {Pattern: "/home/user/.ssh/**", Level: "none"},
		{Pattern: "/opt/data/*.key", Level: "view"}, {Pattern: "/opt/**/x", Level: "read"}, {Pattern: "/srv/a/b", Level: "read"}, {Pattern: "/srv/a/**", Level: "read"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Roots(), []string{"/etc", "/home/user", "/opt", "/srv", "/workspace"}; !slices.Equal(got, want) {
		t.Errorf("Roots() = %q, want %q", got, want)
	}
	for p, want := range map[string]Level{"/etc/secret": None, "/etc/hosts": Write, "/home/user/.ssh": None, "/home/user/.ssh/id": None,
		"/home/user/.sshx": Write, "/opt/data/a.key": View, "/opt/x": Read, "/opt/a/b/x": Read, "/workspace/a/.env": None} {
		if got := s.Level(p); got != want {
			t.Errorf("Level(%q) = %s, want %s", p, got, want)
		}
	}
	for p, want := range map[string]string{"/etc/hosts": "", "/etc": "/etc/secret", "/opt/data/k": "/opt/**/x", "/proc": "", "/home": "/home/user/.ssh/**"} {
		if got := s.Reaching(p); got != want {
			t.Errorf("Reaching(%q) = %q, want %q", p, got, want)
		}
	}
}
