package nsbox

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moby/sys/capability"

	"github.com/nsbox/nsbox/api"
)

// Capabilities beyond the backend's default set (containerd 2.0's) are given to a sandbox
// only when its create asks for them and the daemon allows them (Config.AllowedCapabilities,
// --allow-cap). A container with extra capabilities is started for its sandbox, never taken
// from the warm pool.

// NormalizeCapability turns "net_raw", "NET_RAW" or "CAP_NET_RAW" into "CAP_NET_RAW", or fails
// for a capability this kernel's headers do not name.
func NormalizeCapability(name string) (string, error) {
	short := strings.TrimPrefix(strings.ToLower(name), "cap_")
	for _, c := range capability.ListKnown() {
		if c.String() == short {
			return "CAP_" + strings.ToUpper(short), nil
		}
	}
	return "", fmt.Errorf("unknown capability %q", name)
}

// checkCapabilities normalises the extra capabilities a create request asks for (sorted, no
// repeats) and refuses those the daemon does not allow.
func (r *Runtime) checkCapabilities(req *api.CreateSandboxRequest) error {
	var out []string
	for _, name := range req.Capabilities {
		c, err := NormalizeCapability(name)
		if err != nil {
			return api.Errorf(api.CodeInvalidArgument, "capabilities: %v", err)
		}
		if !slices.Contains(r.cfg.AllowedCapabilities, c) {
			allowed := "none"
			if len(r.cfg.AllowedCapabilities) > 0 {
				allowed = strings.Join(r.cfg.AllowedCapabilities, ", ")
			}
			return api.Errorf(api.CodeInvalidArgument, "capability %s is not allowed: a sandbox may ask only for those the daemon allows with --allow-cap (%s)", c, allowed)
		}
		out = append(out, c)
	}
	slices.Sort(out)
	req.Capabilities = slices.Compact(out)
	return nil
}
