package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nsbox/nsbox/api"
)

// SetNetwork changes a running sandbox's network mode and returns the sandbox.
func (c *Client) SetNetwork(ctx context.Context, id string, spec api.NetworkSpec) (*api.Sandbox, error) {
	var sb api.Sandbox
	return &sb, c.do(ctx, http.MethodPatch, "/v1/sandboxes/"+url.PathEscape(id)+"/network", spec, &sb)
}

// ExposePort exposes a sandbox port on a host port.
func (c *Client) ExposePort(ctx context.Context, id string, req api.ExposePortRequest) (*api.ExposedPort, error) {
	var p api.ExposedPort
	return &p, c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/ports", req, &p)
}

// ListPorts lists a sandbox's exposed ports.
func (c *Client) ListPorts(ctx context.Context, id string) ([]api.ExposedPort, error) {
	return list[api.ExposedPort](ctx, c, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id)+"/ports", nil)
}

// UnexposePort stops exposing a sandbox port (protocol "tcp" or "udp"; empty is tcp); the
// connections open through it are cut.
func (c *Client) UnexposePort(ctx context.Context, id string, port int, protocol string) error {
	path := "/v1/sandboxes/" + url.PathEscape(id) + "/ports/" + strconv.Itoa(port)
	if protocol != "" {
		path += "?protocol=" + url.QueryEscape(protocol)
	}
	return c.do(ctx, http.MethodDelete, path, nil, nil)
}
