package session

import (
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
	gen  uint64 // counts the changes, from 1
}

// NewSandboxEnv returns an empty sandbox environment over base (KEY=VALUE entries, as
// os.Environ returns them).
func NewSandboxEnv(base []string) *SandboxEnv {
	e := &SandboxEnv{base: map[string]string{}, vars: map[string]string{}, gen: 1}
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e.base[k] = v
		}
	}
	return e
}

// Replace makes vars the complete sandbox environment (variables not in it are no longer set
// by the sandbox). The caller validates them (api.CheckEnv).
func (e *SandboxEnv) Replace(vars map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.vars = maps.Clone(vars)
	if e.vars == nil {
		e.vars = map[string]string{}
	}
	e.gen++
}

// SetBase sets one variable of the agent's own environment under the sandbox's (the daemon
// gives an agent its sandbox's HOSTNAME once it is bound to one).
func (e *SandboxEnv) SetBase(k, v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.base[k] = v
	e.gen++
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
	env, _ := e.Since(0)
	return env
}

// Since returns the effective environment and its generation (which counts its changes), or
// nil and gen when it is still as it was at generation gen: a session asks before each exec,
// which costs no copy of the environment unless it changed.
func (e *SandboxEnv) Since(gen uint64) (map[string]string, uint64) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if gen == e.gen {
		return nil, gen
	}
	out := maps.Clone(e.base)
	maps.Copy(out, e.vars)
	return out, e.gen
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
