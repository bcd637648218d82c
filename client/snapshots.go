package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/nsbox/nsbox/api"
)

// CreateSnapshot snapshots a running or paused sandbox's files and sessions' state.
func (c *Client) CreateSnapshot(ctx context.Context, id string, req api.CreateSnapshotRequest) (*api.Snapshot, error) {
	var snap api.Snapshot
	return &snap, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/snapshots", req, &snap)
}

// ListSnapshots lists the snapshots, oldest first.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	return list[api.Snapshot](ctx, c, http.MethodGet, "/v1/snapshots", nil)
}

// GetSnapshot returns one snapshot.
func (c *Client) GetSnapshot(ctx context.Context, id string) (*api.Snapshot, error) {
	var snap api.Snapshot
	return &snap, c.do(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(id), nil, &snap)
}

// DeleteSnapshot removes a snapshot that no sandbox was made from (or whose sandboxes are gone).
func (c *Client) DeleteSnapshot(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(id), nil, nil)
}

// ForkSandbox snapshots a sandbox and makes req.Count sandboxes from the snapshot. Create
// one sandbox from an existing snapshot with CreateSandbox and FromSnapshot.
func (c *Client) ForkSandbox(ctx context.Context, id string, req api.ForkRequest) (*api.ForkResult, error) {
	var res api.ForkResult
	return &res, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/fork", req, &res)
}
