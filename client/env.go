package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/nsbox/nsbox/api"
)

// PatchEnv sets and unsets variables of a sandbox's environment and returns the sandbox. New
// sessions and processes see the change; existing sessions see it at their next exec, except
// for variables they set or unset themselves.
func (c *Client) PatchEnv(ctx context.Context, id string, set map[string]string, unset []string) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPatch, "/v1/sandboxes/"+url.PathEscape(id)+"/env", api.PatchEnvRequest{Set: set, Unset: unset}, &sb)
}

// GetEnv returns a sandbox's environment: what it was created with and what PatchEnv changed
// since (sessions' own exports are not in it).
func (c *Client) GetEnv(ctx context.Context, id string) (map[string]string, error) {
	sb, err := c.GetSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	return sb.Env, nil
}

// InSession returns a client whose file calls are made for a session of the sandbox: relative
// paths start at the session's current directory, and files and directories it creates belong
// to the session's user. Every other call is as c's.
func (c *Client) InSession(sessionID string) *Client {
	cc := *c
	cc.fileSession = sessionID
	return &cc
}

// SetPermissions replaces the per-path rules of a sandbox created with permissions and
// returns the sandbox (PATCH /v1/sandboxes/{id}/permissions).
func (c *Client) SetPermissions(ctx context.Context, id string, rules []api.PermissionRule) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPatch, "/v1/sandboxes/"+url.PathEscape(id)+"/permissions", api.PermissionsRequest{Permissions: rules}, &sb)
}
