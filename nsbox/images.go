package nsbox

import (
	"errors"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs/layers"
	"github.com/nsbox/nsbox/rootfs/oci"
)

// The OCI image endpoints: pull, import, inspect, remove and prune, on the OCI store of the
// runtime's image store (rootfs/oci).

func (r *Runtime) handlePullImage(w http.ResponseWriter, req *http.Request) {
	var body api.PullImageRequest
	if err := decodeBody(w, req, &body); err != nil {
		api.WriteError(w, err)
		return
	}
	if body.Ref == "" {
		api.WriteError(w, api.Errorf(api.CodeInvalidArgument, "ref is required, e.g. alpine:3.20"))
		return
	}
	opt := oci.PullOptions{}
	if a := body.Auth; a != nil {
		opt.Auth = authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
	}
	if !strings.Contains(req.Header.Get("Accept"), "text/event-stream") {
		img, err := r.images.OCI().Pull(req.Context(), body.Ref, opt)
		if err != nil {
			r.writeError(w, imageError(err))
			return
		}
		api.WriteJSON(w, http.StatusOK, img)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher := http.NewResponseController(w)
	// Progress comes one event at a time, and never after Pull returned.
	send := func(event string, v any) {
		if writeSSE(w, event, v) == nil {
			_ = flusher.Flush() // a client that went away ends the pull through the request's context
		}
	}
	opt.Progress = func(p api.ImageProgress) {
		send(api.EventProgress, api.ImagePullEvent{Type: api.EventProgress, ImageProgress: &p})
	}
	img, err := r.images.OCI().Pull(req.Context(), body.Ref, opt)
	if err != nil {
		var e *api.Error
		if !errors.As(imageError(err), &e) || e.Code == api.CodeInternal {
			r.log.Error("image pull failed", "ref", body.Ref, "err", err)
			e = &api.Error{Code: api.CodeInternal, Message: err.Error()}
		}
		send("error", api.ErrorBody{Error: e})
		return
	}
	send(api.EventDone, api.ImagePullEvent{Type: api.EventDone, Image: img})
}

func (r *Runtime) handleImportImages(w http.ResponseWriter, req *http.Request) {
	imgs, err := r.images.OCI().Import(req.Context(), req.Body, oci.ImportOptions{Name: req.URL.Query().Get("name")})
	if err != nil {
		r.writeError(w, imageError(err))
		return
	}
	res := api.ImportImagesResult{Images: make([]api.ImageInfo, len(imgs))}
	for i, img := range imgs {
		res.Images[i] = *img
	}
	api.WriteJSON(w, http.StatusOK, res)
}

func (r *Runtime) handleGetImage(w http.ResponseWriter, req *http.Request) {
	img, err := r.images.OCI().Get(req.PathValue("name"))
	if err != nil {
		r.writeError(w, imageError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, img)
}

func (r *Runtime) handleRemoveImage(w http.ResponseWriter, req *http.Request) {
	r.cleanUpImages(w, req, "force", func(force bool, inUse oci.InUse) (any, error) {
		return r.images.OCI().Remove(req.PathValue("name"), force, inUse)
	})
}

func (r *Runtime) handlePruneImages(w http.ResponseWriter, req *http.Request) {
	r.cleanUpImages(w, req, "all", func(all bool, inUse oci.InUse) (any, error) {
		images, removedLayers, err := r.images.OCI().Prune(all, inUse)
		return api.PruneImagesResult{Images: images, Layers: removedLayers}, err
	})
}

// cleanUpImages answers a removal or a prune: do gets the boolean query parameter flag and
// what sandboxes use, and returns the answer.
func (r *Runtime) cleanUpImages(w http.ResponseWriter, req *http.Request, flag string, do func(bool, oci.InUse) (any, error)) {
	on, err := queryBool(req, flag, false)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	inUse, err := r.imageInUse()
	if err != nil {
		r.writeError(w, err)
		return
	}
	res, err := do(on, inUse)
	if err != nil {
		r.writeError(w, imageError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, res)
}

// imageInUse tells the images sandboxes were made from: a sandbox records the name of its
// image, resolved again here.
func (r *Runtime) imageInUse() (oci.InUse, error) {
	sandboxes, err := r.List()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, sb := range sandboxes {
		if img, err := r.images.Get(sb.Image); err == nil && img.OCI != nil {
			used[img.OCI.ID] = true
		}
	}
	return func(img *api.ImageInfo) bool { return used[img.ID] }, nil
}

// imageError gives an image store error its API code.
func imageError(err error) error {
	for _, c := range []struct {
		target error
		code   string
	}{
		{oci.ErrNotFound, api.CodeNotFound},
		{oci.ErrInvalid, api.CodeInvalidArgument},
		{oci.ErrInUse, api.CodeConflict},
		{oci.ErrUnauthorized, api.CodePermissionDenied},
		{layers.ErrDigestMismatch, api.CodeUnavailable},
	} {
		if errors.Is(err, c.target) {
			return &api.Error{Code: c.code, Message: err.Error()}
		}
	}
	return err
}
