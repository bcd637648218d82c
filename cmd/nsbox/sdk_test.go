package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The Python and TypeScript SDKs (sdk/, issue 18) are tested against a real daemon: these
// tests start one with the harness (its leak checks included) and run each SDK's own suite
// against it, over the unix socket and over TLS with a token. The TypeScript suite runs from
// its build (sdk/typescript/dist; `make sdk` or `npm ci && npm run build` there).

const repoRoot = "../.."

// runSDKSuite runs an SDK's test command from the repository root with the daemon's address in
// NSBOX_HOST (and env), failing the test when the suite fails.
func runSDKSuite(t *testing.T, host string, env []string, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is needed for the SDK tests (scripts/install-deps.sh installs it): %v", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(append(os.Environ(), "NSBOX_HOST="+host), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), out.String())
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
}

func tsBuilt(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, "sdk/typescript/dist/test")); err != nil {
		t.Fatalf("the TypeScript SDK is not built: run `make sdk` (npm ci && npm run build in sdk/typescript): %v", err)
	}
}

func TestSDKPython(t *testing.T) {
	d := startDaemon(t)
	runSDKSuite(t, "unix://"+d.socket, nil, "python3", "-m", "unittest", "discover", "-v", "-s", "sdk/python/tests", "-t", "sdk/python")
}

func TestSDKTypeScript(t *testing.T) {
	tsBuilt(t)
	d := startDaemon(t)
	runSDKSuite(t, "unix://"+d.socket, nil, "node", "--test", "--test-concurrency=1", "sdk/typescript/dist/test/")
}

// TestSDKRemote runs both SDKs' remote suites (test_remote, remote.test) over TLS with an admin
// token, the CA the test made, and scoped tokens they mint.
func TestSDKRemote(t *testing.T) {
	tsBuilt(t)
	pki := newTestPKI(t)
	adminFile := filepath.Join(t.TempDir(), "admin-tokens")
	const admin = "sdk-admin-secret-0123456789"
	if err := os.WriteFile(adminFile, []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--tls-cert", pki.certFile, "--tls-key", pki.keyFile,
		"--auth-tokens", adminFile)
	host := fmt.Sprintf("https://127.0.0.1:%d", port)
	env := []string{"NSBOX_TOKEN=" + admin, "NSBOX_CA=" + pki.caFile}
	runSDKSuite(t, host, env, "python3", "-m", "unittest", "discover", "-v", "-s", "sdk/python/tests", "-t", "sdk/python", "-p", "test_remote.py")
	runSDKSuite(t, host, env, "node", "--test", "sdk/typescript/dist/test/remote.test.js")
}

// sdkRoute is how both SDKs write every request: the method and the route template as adjacent
// string literals ("GET", "/v1/sandboxes/{id}").
var sdkRoute = regexp.MustCompile(`"(GET|POST|PUT|PATCH|DELETE)",\s*"(/v1/[^"?]*)"`)

// TestSDKRoutesInSpec checks that every route the SDKs call is an operation of api/openapi.json
// with the same method.
func TestSDKRoutesInSpec(t *testing.T) {
	param := regexp.MustCompile(`\{[^}]*\}`)
	var ops []string
	for _, op := range apiSpec.Operations() {
		ops = append(ops, param.ReplaceAllString(op, "{}"))
	}
	for _, sdk := range []struct{ dir, ext string }{{"sdk/python/nsbox", ".py"}, {"sdk/typescript/src", ".ts"}} {
		files, err := filepath.Glob(filepath.Join(repoRoot, sdk.dir, "*"+sdk.ext))
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s files in %s: %v", sdk.ext, sdk.dir, err)
		}
		seen := map[string]bool{}
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range sdkRoute.FindAllStringSubmatch(string(src), -1) {
				op := m[1] + " " + param.ReplaceAllString(m[2], "{}")
				seen[op] = true
				if !slices.Contains(ops, op) {
					t.Errorf("%s calls %s %s, which api/openapi.json does not have", filepath.Base(f), m[1], m[2])
				}
			}
		}
		// Both SDKs cover the sandbox API: a scan that found little means the convention broke.
		if len(seen) < 45 {
			t.Errorf("%s: only %d distinct routes found; every request must be written as \"METHOD\", \"/v1/…\"", sdk.dir, len(seen))
		}
		t.Logf("%s calls %d of the %d operations", sdk.dir, len(seen), len(ops))
	}
}
