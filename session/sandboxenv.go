package session

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// SandboxEnv is the sandbox-wide environment as the agent holds it: the variables set for the
// whole sandbox (at create and by PATCH …/env, pushed by the daemon with PUT /v1/env) over the
// agent's own process environment (PATH, HOME, HOSTNAME, TERM). New sessions start with it;
// an existing session applies what changed before its next exec, except for the variables it
// has changed itself (see envUpdate). It is safe for concurrent use.
type SandboxEnv struct {
	base map[string]string // the agent's process environment, and HOSTNAME once bound (SetBase)
	mu   sync.RWMutex
	vars map[string]string
}

// NewSandboxEnv returns an empty sandbox environment over base (KEY=VALUE entries, as
// os.Environ returns them).
func NewSandboxEnv(base []string) *SandboxEnv {
	e := &SandboxEnv{base: map[string]string{}, vars: map[string]string{}}
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e.base[k] = v
		}
	}
	return e
}

// Replace makes vars the complete sandbox environment (variables not in it are no longer set
// by the sandbox). The caller validates them (CheckEnvVar).
func (e *SandboxEnv) Replace(vars map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars = maps.Clone(vars)
	if e.vars == nil {
		e.vars = map[string]string{}
	}
}

// SetBase sets one variable of the agent's own environment under the sandbox's (the daemon
// gives an agent its sandbox's HOSTNAME once it is bound to one).
func (e *SandboxEnv) SetBase(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.base[k] = v
}

// Vars returns a copy of the sandbox environment as it was last set.
func (e *SandboxEnv) Vars() map[string]string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return maps.Clone(e.vars)
}

// Effective returns the environment a new process in the sandbox gets now: the agent's own
// environment overlaid with the sandbox environment. The caller owns the map.
func (e *SandboxEnv) Effective() map[string]string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := maps.Clone(e.base)
	maps.Copy(out, e.vars)
	return out
}

// readOnlyInShells are variables bash will not let anyone set; NSBOX_SESSION marks a
// session's processes.
var readOnlyInShells = map[string]bool{
	"BASHOPTS": true, "BASH_VERSINFO": true, "EUID": true, "PPID": true, "SHELLOPTS": true, "UID": true,
	"NSBOX_SESSION": true,
}

// Limits of an environment (the sandbox's, a session's or one command's), so that a program
// started with it never fails with E2BIG. The kernel takes one "NAME=value" string of at most
// MAX_ARG_STRLEN bytes (128 KiB with its NUL) and all of argv and envp, strings and pointers,
// within a quarter of the stack limit: 2 MiB with the usual 8 MiB. An environment may take
// half of that, which leaves room for the defaults nsbox adds and for the command line.
const (
	MaxEnvVars     = 4096
	MaxEnvVarBytes = 128<<10 - 1 // one NAME=value, without its NUL
	MaxEnvBytes    = 1 << 20     // every NAME=value with its NUL and its 8-byte pointer
)

// CheckEnvVar says what is wrong with an environment variable a shell is to set, or nil.
func CheckEnvVar(name, value string) error {
	switch {
	case len(name)+1+len(value) > MaxEnvVarBytes:
		return fmt.Errorf("environment variable %.64s is %d bytes as NAME=value; at most %d fit in a program's environment", name, len(name)+1+len(value), MaxEnvVarBytes)
	case name == "":
		return errors.New("an environment variable name is empty")
	case !ValidEnvName(name):
		return fmt.Errorf("invalid environment variable name %q: a shell can only set names of letters, digits and '_' that do not start with a digit", name)
	case readOnlyInShells[name]:
		return fmt.Errorf("environment variable %s cannot be set: it is read-only in bash or reserved by nsbox", name)
	case strings.ContainsRune(value, 0):
		return fmt.Errorf("environment variable %s contains a NUL byte, which no environment can hold", name)
	}
	return nil
}

// CheckEnv checks every variable of env (in name order, so the error is stable) and the
// limits of the whole (MaxEnvVars, MaxEnvBytes). Check an environment after every change
// that can grow it (a patch applied to the sandbox's), not only the change.
func CheckEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return fmt.Errorf("%d environment variables: at most %d are allowed", len(env), MaxEnvVars)
	}
	total := 0
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if err := CheckEnvVar(k, env[k]); err != nil {
			return err
		}
		total += len(k) + len(env[k]) + 2 + 8
	}
	if total > MaxEnvBytes {
		return fmt.Errorf("the environment takes %d bytes in a program's memory; at most %d are allowed", total, MaxEnvBytes)
	}
	return nil
}

// envUpdate is shell source that brings a shell from the environment last applied to it
// (from) to the current one (to). A variable changes only where the shell still has the
// value from gave it (or still lacks it, when from did not set it): anything else is the
// session's own doing, which wins over the sandbox. It uses only case, export and unset, so
// it costs no process and behaves the same in bash and any POSIX sh.
func envUpdate(from, to map[string]string) string {
	var b strings.Builder
	names := map[string]string{}
	maps.Copy(names, from)
	maps.Copy(names, to)
	for _, k := range slices.Sorted(maps.Keys(names)) {
		old, had := from[k]
		v, has := to[k]
		if had == has && old == v {
			continue
		}
		was := "''"
		if had {
			was = quote("x" + old)
		}
		action := "unset " + k
		if has {
			action = "export " + k + "=" + quote(v)
		}
		// ${K+x}${K-} is "" when K is unset and "x" followed by its value when it is set.
		fmt.Fprintf(&b, "case \"${%s+x}${%s-}\" in %s) %s ;; esac\n", k, k, was, action)
	}
	return b.String()
}
