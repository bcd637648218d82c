package nsbox

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
)

// The sandbox-wide environment: the record's Env is the truth, and the agent holds a copy
// (package session's SandboxEnv) that sessions and processes read. A change is pushed to the agent
// first and recorded second, so a failed push changes nothing. If the daemon dies between
// the two, the agent holds a change the record does not: reconcile pushes every running
// sandbox's recorded env again when the daemon starts (pushEnv), which undoes it — the
// PATCH never answered success.

// patchedEnv checks a patch and returns env with it applied (nil when nothing is left).
func patchedEnv(env map[string]string, patch api.PatchEnvRequest) (map[string]string, error) {
	if len(patch.Set) == 0 && len(patch.Unset) == 0 {
		return nil, api.Errorf(api.CodeInvalidArgument, "the patch is empty: give set ({\"NAME\": \"value\"}) or unset ([\"NAME\"]) or both")
	}
	if err := api.CheckEnv(patch.Set); err != nil {
		return nil, err
	}
	out := maps.Clone(env)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, patch.Set)
	for _, k := range patch.Unset {
		if err := api.CheckEnvVar(k, ""); err != nil {
			return nil, api.Errorf(api.CodeInvalidArgument, "unset: %v", err)
		}
		if _, ok := patch.Set[k]; ok {
			return nil, api.Errorf(api.CodeInvalidArgument, "%s is both in set and in unset; give it in one of them", k)
		}
		delete(out, k)
	}
	if len(out) == 0 {
		return nil, nil
	}
	// Many patches of allowed sizes could add up to an environment no program starts with.
	if err := api.CheckEnv(out); err != nil {
		return nil, err
	}
	return out, nil
}

// envPushTimeout bounds how long a PATCH …/env waits for the sandbox's agent.
const envPushTimeout = 10 * time.Second

// PatchEnv sets and unsets variables of a running sandbox's environment and returns the
// sandbox. New sessions and processes get the new environment; existing sessions apply it
// before their next exec, except for variables they changed themselves.
func (r *Runtime) PatchEnv(ctx context.Context, id string, patch api.PatchEnvRequest) (*api.Sandbox, error) {
	// One patch of a sandbox at a time, under its lock: each one reads the environment the
	// previous one recorded. An agent that does not answer gives up after envPushTimeout.
	sb, err := r.lockRunning(id)
	if err != nil {
		return nil, err
	}
	defer sb.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, envPushTimeout)
	defer cancel()
	env, err := patchedEnv(sb.rec.Env, patch)
	if err != nil {
		return nil, err
	}
	if err := sb.agent.pushEnv(ctx, env); err != nil {
		return nil, sb.live().failure(ctx, err)
	}
	if err := r.update(sb, func(rec *record) { rec.Env = env }); err != nil {
		// The database failed: put the agent back as recorded.
		if perr := sb.agent.pushEnv(context.WithoutCancel(ctx), sb.rec.Env); perr != nil {
			r.log.Error("restore sandbox env after a failed record", "sandbox", id, "err", perr)
		}
		return nil, err
	}
	r.log.Info("sandbox env changed", "sandbox", id, "set", slices.Sorted(maps.Keys(patch.Set)), "unset", patch.Unset)
	out := sb.rec.Sandbox
	return &out, nil
}

func (r *Runtime) handlePatchEnv(w http.ResponseWriter, req *http.Request) error {
	var body api.PatchEnvRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	sb, err := r.PatchEnv(req.Context(), req.PathValue("id"), body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, sb)
	return nil
}

// repushEnv gives a running sandbox's agent its recorded environment again at daemon start,
// in case the daemon died between a push and its record.
func (r *Runtime) repushEnv(sb *sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), agentReadyTimeout)
	defer cancel()
	if err := sb.agent.pushEnv(ctx, sb.rec.Env); err != nil {
		r.log.Warn("give the agent its recorded sandbox env", "sandbox", sb.id, "err", err)
	}
}
