package session

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// TestEnvUpdateLetsTheSessionWin runs envUpdate's script in every shell a session can have:
// what the sandbox changed reaches the shell unless the shell changed that variable itself.
func TestEnvUpdateLetsTheSessionWin(t *testing.T) {
	odd := "it's \"odd\" $HOME `x` \\ \n second line"
	from := map[string]string{"SAME": "s", "A": "old", "MINE": "sandbox", "GONE": "g", "DROPPED": "d", "KEPT": "k"}
	to := map[string]string{"SAME": "s", "A": odd, "MINE": "sandbox2", "GONE": "g2", "NEW": "n", "KEPT": "k2"}
	// The shell as the session left it: A, SAME and DROPPED as the sandbox set them, MINE
	// exported by the session, GONE unset by the session, KEPT made a plain variable with the
	// sandbox's value (still the sandbox's: it is updated).
	setup := "export SAME=s A=old MINE=mine DROPPED=d; KEPT=k; unset GONE NEW\n"
	show := `for v in SAME A MINE GONE DROPPED NEW KEPT; do eval "printf '%s=[%s]\n' $v \"\${$v-UNSET}\""; done`
	want := "SAME=[s]\nA=[" + odd + "]\nMINE=[mine]\nGONE=[UNSET]\nDROPPED=[UNSET]\nNEW=[n]\nKEPT=[k2]\n"
	script := setup + envUpdate(from, to) + show
	for _, shell := range [][]string{{"bash", "-c"}, {"dash", "-c"}, {"busybox", "sh", "-c"}} {
		if _, err := exec.LookPath(shell[0]); err != nil {
			t.Logf("%s is not installed: skipped", shell[0])
			continue
		}
		out, err := exec.Command(shell[0], append(shell[1:], script)...).CombinedOutput()
		if err != nil || string(out) != want {
			t.Errorf("%s: %v\n got %q\nwant %q", shell[0], err, out, want)
		}
	}
	if envUpdate(from, from) != "" {
		t.Errorf("no change should need no script, got %q", envUpdate(from, from))
	}
	if got := envUpdate(nil, map[string]string{"X": "1"}); !strings.Contains(got, "export X='1'") {
		t.Errorf("from nothing: %q", got)
	}
}

func TestSandboxEnvLaysItsVarsOverTheBase(t *testing.T) {
	e := NewSandboxEnv([]string{"PATH=/bin", "HOME=/root", "BROKEN"})
	e.Replace(map[string]string{"PATH": "/opt/bin", "A": "1"})
	got := e.Effective()
	if len(got) != 3 || got["PATH"] != "/opt/bin" || got["HOME"] != "/root" || got["A"] != "1" {
		t.Fatalf("effective: %v", got)
	}
	got["A"] = "changed by the caller"
	e.Replace(map[string]string{"B": "2"})
	if got := e.Effective(); got["PATH"] != "/bin" || got["A"] != "" || got["B"] != "2" {
		t.Fatalf("after a replace, a variable no longer set falls back to the base: %v", got)
	}
	if v := e.Vars(); len(v) != 1 || v["B"] != "2" {
		t.Fatalf("vars: %v", v)
	}
	e.Replace(nil)
	if len(e.Vars()) != 0 {
		t.Fatalf("replace with nothing: %v", e.Vars())
	}
}

// TestSandboxEnvSince: a session that has the environment of a generation gets nothing to
// apply until the environment changes, by a replace or a base variable.
func TestSandboxEnvSince(t *testing.T) {
	e := NewSandboxEnv([]string{"PATH=/bin"})
	env, gen := e.Since(0)
	if env["PATH"] != "/bin" || gen == 0 {
		t.Fatalf("Since(0) = %v, %d: want the whole environment and its generation", env, gen)
	}
	if env, same := e.Since(gen); env != nil || same != gen {
		t.Fatalf("Since(%d) unchanged = %v, %d: want nothing", gen, env, same)
	}
	for _, change := range []func(){
		func() { e.Replace(map[string]string{"A": "1"}) },
		func() { e.SetBase("HOSTNAME", "sb") },
	} {
		change()
		env, next := e.Since(gen)
		if env == nil || next == gen {
			t.Fatalf("after a change, Since(%d) = %v, %d: want the new environment", gen, env, next)
		}
		gen = next
	}
	if env, _ := e.Since(0); env["A"] != "1" || env["HOSTNAME"] != "sb" || env["PATH"] != "/bin" {
		t.Fatalf("the environment after both changes: %v", env)
	}
}

func TestSandboxEnvConcurrentUse(t *testing.T) {
	e := NewSandboxEnv(nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				if i%2 == 0 {
					e.Replace(map[string]string{"N": strings.Repeat("x", j%7)})
				} else if v := e.Effective(); len(v) > 1 {
					t.Errorf("torn read: %v", v)
				}
			}
		}()
	}
	wg.Wait()
}
