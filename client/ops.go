package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nsbox/nsbox/api"
)

// SandboxStats reads a sandbox's resource use.
func (c *Client) SandboxStats(ctx context.Context, id string) (*api.SandboxStats, error) {
	var out api.SandboxStats
	return &out, c.do(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id)+"/stats", nil, &out)
}

// AllStats reads every sandbox's resource use, ordered by id.
func (c *Client) AllStats(ctx context.Context) ([]api.SandboxStats, error) {
	return list[api.SandboxStats](ctx, c, http.MethodGet, "/v1/stats", nil)
}

// StreamSandboxStats calls onStats with a sandbox's resource use every second until ctx ends,
// onStats returns an error (returned), or the sandbox is removed (its not-found error).
func (c *Client) StreamSandboxStats(ctx context.Context, id string, onStats func(api.SandboxStats) error) error {
	return follow(ctx, c, "/v1/sandboxes/"+url.PathEscape(id)+"/stats?stream=1", onStats)
}

// StreamAllStats calls onStats with every sandbox's resource use every second, until ctx ends
// or onStats returns an error (returned).
func (c *Client) StreamAllStats(ctx context.Context, onStats func([]api.SandboxStats) error) error {
	return follow(ctx, c, "/v1/stats?stream=1", onStats)
}

// EventsOptions says where a stream of events starts.
type EventsOptions struct {
	// Replay, with Since, first sends the kept events after the event numbered Since (Since
	// 0: all that are kept); without it only new events come.
	Replay bool
	Since  uint64
}

// FollowEvents calls onEvent with the daemon's events as they happen, until ctx ends or
// onEvent returns an error (returned). A stream that fell too far behind ends with an
// unavailable error: follow again with Replay from the last Seq seen.
func (c *Client) FollowEvents(ctx context.Context, opts EventsOptions, onEvent func(api.Event) error) error {
	path := "/v1/events"
	if opts.Replay {
		path += "?since=" + strconv.FormatUint(opts.Since, 10)
	}
	return follow(ctx, c, path, onEvent)
}

// follow reads an endless stream of Server-Sent Events whose data are T until ctx ends (nil),
// onEvent fails, or the stream does (its error; an end without an error is an error too).
func follow[T any](ctx context.Context, c *Client, path string, onEvent func(T) error) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil, api.EventStream)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	events := api.NewSSEReader(resp.Body)
	for {
		var v T
		if _, err := events.NextJSON(&v); err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, io.EOF):
				return errors.New("the daemon ended the stream")
			}
			return err
		}
		if err := onEvent(v); err != nil {
			return err
		}
	}
}
