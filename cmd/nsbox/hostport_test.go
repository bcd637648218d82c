package main

import (
	"testing"

	"github.com/nsbox/nsbox/api"
)

// TestExposeRefusesHostPortOutsideRange is the attack of issue 11 item 4: exposing a sandbox
// port on host port 22, outside the daemon's --host-ports, answered 201.
func TestExposeRefusesHostPortOutsideRange(t *testing.T) {
	d := startDaemon(t)
	d.create(api.CreateSandboxRequest{ID: "p", Image: "busybox"})
	d.expectError("POST", "/v1/sandboxes/p/ports", api.ExposePortRequest{Port: 80, HostPort: 22}, 400, api.CodeInvalidArgument)
}
