package main

import (
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestFileAPIGuardsMountsAndOwnPaths is the attack of issue 11 item 4: the file API works
// from outside the sandbox's mount namespace, where renaming over a mount point detaches it.
// `PUT /.nsbox/nsbox` removed the agent's bind mount and `/dev/null` became a regular file.
func TestFileAPIGuardsMountsAndOwnPaths(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "g", Image: "busybox"})
	d.expectError("PUT", filesURL("g", "", "path=/.nsbox/nsbox"), "evil", 409, api.CodeConflict)
	d.expectError("PUT", filesURL("g", "", "path=/dev/null"), "evil", 403, api.CodePermissionDenied)
	d.expectError("DELETE", filesURL("g", "", "path=/dev/null"), nil, 403, api.CodePermissionDenied)
	d.expectError("DELETE", filesURL("g", "", "path=/run/nsbox", "recursive=true"), nil, 409, api.CodeConflict)
	d.expectError("POST", filesURL("g", "move"), map[string]any{"from": "/dev/null", "to": "/tmp/null"}, 403, api.CodePermissionDenied)
	d.expectError("POST", filesURL("g", "move"), map[string]any{"from": "/proc", "to": "/proc2"}, 409, api.CodeConflict)
	d.sh("g", "ln -s /dev /tmp/devlink")
	d.expectError("PUT", filesURL("g", "", "path=/tmp/devlink/null"), "evil", 403, api.CodePermissionDenied)
	if got := d.sh("g", "test -c /dev/null && echo char; grep -c ' /.nsbox/nsbox ' /proc/self/mountinfo; echo ok > /dev/null && echo alive"); got != "char\n1\nalive\n" {
		t.Fatalf("after the attempts: %q", got)
	}
	// Ordinary files next to them still work.
	if code, body := d.call("PUT", filesURL("g", "", "path=/tmp/fine"), "fine"); code != 201 {
		t.Fatalf("PUT /tmp/fine: %d %s", code, body)
	}
}
