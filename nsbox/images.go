package nsbox

import (
	"errors"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/rootfs/layers"
	"github.com/nsbox/nsbox/rootfs/oci"
)

// The OCI image endpoints: pull, import, inspect, remove and prune, on the OCI store of the
// runtime's image store (rootfs/oci).

func (r *Runtime) handlePullImage(w http.ResponseWriter, req *http.Request) error {
	var body api.PullImageRequest
	if err := httpapi.DecodeJSON(req, &body, false); err != nil {
		return err
	}
	if body.Ref == "" {
		return api.Errorf(api.CodeInvalidArgument, "ref is required, e.g. alpine:3.20")
	}
	opt := oci.PullOptions{}
	if a := body.Auth; a != nil {
		opt.Auth = authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
	}
	if !httpapi.WantsEventStream(req) {
		img, err := r.images.OCI().Pull(req.Context(), body.Ref, opt)
		if err != nil {
			return imageError(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, img)
		return nil
	}
	// Progress comes one event at a time, and never after Pull returned; a client that went
	// away ends the pull through the request's context.
	events := httpapi.NewSSEWriter(w)
	if events.Start() != nil {
		return nil
	}
	opt.Progress = func(p api.ImageProgress) {
		_ = events.Send(api.EventProgress, api.ImagePullEvent{Type: api.EventProgress, ImageProgress: &p})
	}
	img, err := r.images.OCI().Pull(req.Context(), body.Ref, opt)
	if err != nil {
		err = imageError(err)
		var e *api.Error
		if !errors.As(err, &e) {
			r.log.Error("image pull failed", "ref", body.Ref, "err", err)
		}
		_ = events.SendError(err)
		return nil
	}
	_ = events.Send(api.EventDone, api.ImagePullEvent{Type: api.EventDone, Image: img})
	return nil
}

func (r *Runtime) handleImportImages(w http.ResponseWriter, req *http.Request) error {
	imgs, err := r.images.OCI().Import(req.Context(), req.Body, oci.ImportOptions{Name: req.URL.Query().Get("name")})
	if err != nil {
		return imageError(err)
	}
	res := api.ImportImagesResult{Images: make([]api.ImageInfo, len(imgs))}
	for i, img := range imgs {
		res.Images[i] = *img
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (r *Runtime) handleGetImage(w http.ResponseWriter, req *http.Request) error {
	img, err := r.images.OCI().Get(req.PathValue("name"))
	if err != nil {
		return imageError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, img)
	return nil
}

func (r *Runtime) handleRemoveImage(w http.ResponseWriter, req *http.Request) error {
	return r.cleanUpImages(w, req, "force", func(force bool, inUse oci.InUse) (any, error) {
		return r.images.OCI().Remove(req.PathValue("name"), force, inUse)
	})
}

func (r *Runtime) handlePruneImages(w http.ResponseWriter, req *http.Request) error {
	return r.cleanUpImages(w, req, "all", func(all bool, inUse oci.InUse) (any, error) {
		images, removedLayers, err := r.images.OCI().Prune(all, inUse)
		return api.PruneImagesResult{Images: images, Layers: removedLayers}, err
	})
}

// cleanUpImages answers a removal or a prune: do gets the boolean query parameter flag and
// what sandboxes use, and returns the answer.
func (r *Runtime) cleanUpImages(w http.ResponseWriter, req *http.Request, flag string, do func(bool, oci.InUse) (any, error)) error {
	on, err := queryBool(req, flag, false)
	if err != nil {
		return err
	}
	res, err := do(on, r.imageInUse())
	if err != nil {
		return imageError(err)
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

// imageInUse tells the OCI images sandboxes and snapshots were made from, by the image id
// each recorded (a tag may have moved to another image since).
func (r *Runtime) imageInUse() oci.InUse {
	used := map[string]bool{}
	for _, rec := range r.snapshots() {
		used[rec.ImageID] = true
	}
	snaps, err := r.records.Snapshots()
	for _, s := range snaps {
		used[s.ImageID] = true
	}
	return func(img *api.ImageInfo) bool { return err != nil || used[img.ID] }
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
