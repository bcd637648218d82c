package session

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Sessions of one user that start at once all get ~/.private, made once: the one whose
// symlink finds it made meanwhile takes it (it failed with "file exists" and the session was
// not created: seen in CI as a restored session beside the default one).
func TestLinkPrivateAtOnce(t *testing.T) {
	home := t.TempDir()
	c := credential{uid: os.Getuid(), gid: os.Getgid(), name: "u", home: home}
	for round := range 50 {
		os.Remove(filepath.Join(home, PrivateName))
		start := make(chan struct{})
		var wg sync.WaitGroup
		links := make([]string, 8)
		errs := make([]error, 8)
		for i := range links {
			wg.Go(func() {
				<-start
				links[i], errs[i] = linkPrivate(c)
			})
		}
		close(start)
		wg.Wait()
		for i := range links {
			if errs[i] != nil || links[i] != filepath.Join(home, PrivateName) {
				t.Fatalf("round %d, session %d: %q, %v", round, i, links[i], errs[i])
			}
		}
	}
	// A link of the user's own is left alone.
	os.Remove(filepath.Join(home, PrivateName))
	if err := os.Symlink("/elsewhere", filepath.Join(home, PrivateName)); err != nil {
		t.Fatal(err)
	}
	if link, err := linkPrivate(c); link != "" || err != nil {
		t.Errorf("with a link of the user's own: %q, %v", link, err)
	}
}
