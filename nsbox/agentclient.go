package nsbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/nsbox/nsbox/api"
)

// agentClient talks to one sandbox's agent over its host-side unix socket.
type agentClient struct {
	http *http.Client
}

// agentOf returns the client of a sandbox's agent.
func (r *Runtime) agentOf(rec *record) *agentClient { return r.containerAgent(rec.container()) }

// containerAgent returns the (cached) client of a container's agent.
func (r *Runtime) containerAgent(id string) *agentClient {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.agents[id]; ok {
		return c
	}
	socket := r.agentSocket(id)
	var d net.Dialer
	c := &agentClient{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
	}}}
	r.agents[id] = c
	return c
}

// forgetAgent drops a container's agent client and its idle connections.
func (r *Runtime) forgetAgent(id string) {
	r.mu.Lock()
	c, ok := r.agents[id]
	delete(r.agents, id)
	r.mu.Unlock()
	if ok {
		c.http.CloseIdleConnections()
	}
}

func (c *agentClient) health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	return &h, c.call(ctx, http.MethodGet, "/v1/health", nil, &h)
}

// configure gives the agent its sandbox's environment and working directory.
func (c *agentClient) configure(ctx context.Context, cfg api.AgentConfig) error {
	return c.call(ctx, http.MethodPut, "/v1/config", cfg, nil)
}

// call sends one request to the agent and decodes its JSON answer into out.
func (c *agentClient) call(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.do(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return api.ReadError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	return nil
}

// do sends one request with an optional JSON body and returns the agent's response as it is.
func (c *agentClient) do(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return nil, fmt.Errorf("encode agent request: %w", err)
		}
	}
	return c.doRaw(ctx, method, path, &body)
}

// doRaw sends one request with a raw body and returns the agent's response as it is.
func (c *agentClient) doRaw(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return nil, fmt.Errorf("agent request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "sandbox agent unreachable: %v", err)
	}
	return resp, nil
}
