package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nsbox/nsbox/api"
)

func imagePath(name string) string { return "/v1/images/" + url.PathEscape(name) }

// PullImage pulls an image from its registry; onProgress, when set, gets each layer's
// progress as the daemon streams it (an error it returns ends the call with that error).
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, onProgress func(api.ImageProgress) error) (*api.ImageInfo, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/pull", req, "text/event-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var img *api.ImageInfo
	err = readSSE(resp.Body, func(event string, data []byte) (bool, error) {
		var ev api.ImagePullEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return false, fmt.Errorf("decode %s event: %w", event, err)
		}
		if ev.Type == api.EventProgress && ev.ImageProgress != nil && onProgress != nil {
			if err := onProgress(*ev.ImageProgress); err != nil {
				return false, err
			}
		}
		img = ev.Image
		return ev.Type == api.EventDone && img != nil, nil
	})
	if err != nil {
		return nil, err
	}
	if img == nil {
		return nil, errors.New("the pull stream ended before the pull did")
	}
	return img, nil
}

// ImportImages sends a `docker save` archive or an OCI layout tar (plain, gzip or zstd) and
// returns the images stored; name, when set, names the archive's one image.
func (c *Client) ImportImages(ctx context.Context, archive io.Reader, name string) ([]api.ImageInfo, error) {
	path := "/v1/images/import"
	if name != "" {
		path += "?" + url.Values{"name": {name}}.Encode()
	}
	resp, err := c.sendRaw(ctx, http.MethodPost, path, archive, -1, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res api.ImportImagesResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("decode import answer: %w", err)
	}
	return res.Images, nil
}

// GetImage returns an OCI image by name, digest or ID.
func (c *Client) GetImage(ctx context.Context, name string) (*api.ImageInfo, error) {
	var img api.ImageInfo
	return &img, c.do(ctx, http.MethodGet, imagePath(name), nil, &img)
}

// RemoveImageOptions are how an image is removed.
type RemoveImageOptions struct {
	Force bool // remove the names of an image a sandbox uses (the image stays until it is unused)
}

// RemoveImage removes an OCI image, or one of its names. It returns the image as it was.
func (c *Client) RemoveImage(ctx context.Context, name string, opts RemoveImageOptions) (*api.ImageInfo, error) {
	var img api.ImageInfo
	return &img, c.do(ctx, http.MethodDelete, imagePath(name)+"?force="+strconv.FormatBool(opts.Force), nil, &img)
}

// PruneOptions are what a prune removes.
type PruneOptions struct {
	All bool // every image no sandbox uses, not only the dangling ones
}

// PruneImages removes the images no sandbox uses that opts names, and the layers no image
// references.
func (c *Client) PruneImages(ctx context.Context, opts PruneOptions) (*api.PruneImagesResult, error) {
	var res api.PruneImagesResult
	return &res, c.do(ctx, http.MethodPost, "/v1/images/prune?all="+strconv.FormatBool(opts.All), nil, &res)
}
