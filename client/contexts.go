package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/nsbox/nsbox/api"
)

func contextsPath(id, cid string, rest ...string) string {
	p := "/v1/sandboxes/" + url.PathEscape(id) + "/contexts"
	if cid != "" {
		p += "/" + url.PathEscape(cid)
	}
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// CreateCodeContext starts a code context (a Python or JavaScript interpreter that keeps its
// state between runs) in a sandbox.
func (c *Client) CreateCodeContext(ctx context.Context, id string, req api.CreateCodeContextRequest) (*api.CodeContext, error) {
	var cc api.CodeContext
	if err := c.do(ctx, http.MethodPost, contextsPath(id, ""), req, &cc); err != nil {
		return nil, err
	}
	return &cc, nil
}

// ListCodeContexts lists a sandbox's code contexts.
func (c *Client) ListCodeContexts(ctx context.Context, id string) ([]api.CodeContext, error) {
	var out []api.CodeContext
	if err := c.do(ctx, http.MethodGet, contextsPath(id, ""), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteCodeContext ends a code context.
func (c *Client) DeleteCodeContext(ctx context.Context, id, cid string) error {
	return c.do(ctx, http.MethodDelete, contextsPath(id, cid), nil, nil)
}

// RunCode runs code in a context and returns its result once it has ended.
func (c *Client) RunCode(ctx context.Context, id, cid string, req api.RunCodeRequest) (*api.RunCodeResult, error) {
	var res api.RunCodeResult
	if err := c.do(ctx, http.MethodPost, contextsPath(id, cid, "run"), req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// RunCodeStream runs code like RunCode but delivers its events as they come: onEvent gets
// every output chunk, result and exception. The returned result has empty Stdout and Stderr.
func (c *Client) RunCodeStream(ctx context.Context, id, cid string, req api.RunCodeRequest, onEvent func(api.CodeEvent) error) (*api.RunCodeResult, error) {
	resp, err := c.send(ctx, http.MethodPost, contextsPath(id, cid, "run"), req, api.EventStream)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var result *api.RunCodeResult
	err = readSSE(resp.Body, func(event string, data []byte) (bool, error) {
		var ev api.CodeEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return false, fmt.Errorf("decode %s event: %w", event, err)
		}
		if ev.Type == api.EventEnd {
			result = ev.End
			return true, nil
		}
		return false, onEvent(ev)
	})
	if err != nil {
		return nil, err
	}
	if result == nil {
		return nil, errors.New("run stream ended before the run did")
	}
	return result, nil
}

// GitCheckout clones a repository into a sandbox directory, or fetches and checks out when the
// directory is a clone of it already.
func (c *Client) GitCheckout(ctx context.Context, id string, req api.GitCheckoutRequest) (*api.GitCheckoutResult, error) {
	var res api.GitCheckoutResult
	if err := c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/git/checkout", req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
