package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/nsbox/nsbox/api"
)

func workspacePath(id, op string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + "/workspace/" + op
}

// WorkspaceDiff lists what a sandbox changed in its copy-on-write workspace.
func (c *Client) WorkspaceDiff(ctx context.Context, id string) ([]api.WorkspaceChange, error) {
	return list[api.WorkspaceChange](ctx, c, http.MethodGet, workspacePath(id, "diff"), nil)
}

// ExportWorkspace streams a copy-on-write workspace's changes as a tar (deletions are empty
// ".wh.NAME" entries); close the reader when done.
func (c *Client) ExportWorkspace(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, workspacePath(id, "export"), nil, "application/x-tar")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
