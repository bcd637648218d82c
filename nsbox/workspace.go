package nsbox

import (
	"bufio"
	"net/http"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	"github.com/nsbox/nsbox/rootfs"
)

// handleWorkspaceDiff answers the changes a sandbox made to its copy-on-write workspace.
func (r *Runtime) handleWorkspaceDiff(w http.ResponseWriter, req *http.Request) error {
	upper, lower, err := r.workspaceDirs(req.PathValue("id"))
	if err != nil {
		return err
	}
	changes, err := rootfs.Diff(upper, lower)
	if err != nil {
		return err
	}
	if changes == nil {
		changes = []api.WorkspaceChange{}
	}
	httpapi.WriteJSON(w, http.StatusOK, changes)
	return nil
}

// handleWorkspaceExport streams the changed entries of a copy-on-write workspace as a tar.
// An error after the first byte can no longer change the status: the connection is then
// cut, so the client sees a truncated tar rather than a complete-looking one.
func (r *Runtime) handleWorkspaceExport(w http.ResponseWriter, req *http.Request) error {
	upper, lower, err := r.workspaceDirs(req.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-tar")
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := rootfs.Export(bw, upper, lower); err != nil {
		r.log.Error("export workspace", "sandbox", req.PathValue("id"), "err", err)
		panic(http.ErrAbortHandler)
	}
	if err := bw.Flush(); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}
