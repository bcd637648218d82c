package session

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CheckCwd says why a process could not start in a directory, naming it as the caller did,
// also one in a session's private folder (reached through the agent's descriptor of it).
func TestCheckCwd(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	private, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close()
	const link = "/home/u/.private"
	for _, c := range []struct {
		cwd, link string
		private   *os.File
		want      string // "": no error
	}{
		{cwd: ""},
		{cwd: dir},
		{cwd: "/no/such/dir", want: `cwd "/no/such/dir" does not exist`},
		{cwd: file, want: `cwd "` + file + `" is not a directory`},
		{cwd: file + "/x", want: `cwd "` + file + `/x" is not a directory`},
		{cwd: link + "/sub", link: link, private: private},
		{cwd: link + "/gone", link: link, private: private, want: `cwd "/home/u/.private/gone" does not exist`},
		{cwd: link + "/file", link: link, private: private, want: `cwd "/home/u/.private/file" is not a directory`},
	} {
		err := CheckCwd(c.cwd, c.link, c.private)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckCwd(%q): %v", c.cwd, err)
		case c.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("CheckCwd(%q): %v, want ErrInvalid with %q", c.cwd, err, c.want)
		}
	}
}
