package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbox/nsbox/rootfs/oci/ocitest"
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
	// A hung suite is killed, with everything it started (its own process group), after
	// sdkSuiteBound or just before the test binary's deadline: the test fails with the suite's
	// output and cleans up, rather than the binary panicking with node left running.
	deadline := time.Now().Add(sdkSuiteBound)
	if d, ok := t.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
		deadline = d.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
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

// sdkSuiteBound is the most an SDK suite may take (they take 5-30 s) before it is taken for
// hung and killed.
const sdkSuiteBound = 10 * time.Minute

func tsBuilt(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, "sdk/typescript/dist/test")); err != nil {
		t.Fatalf("the TypeScript SDK is not built: run `make sdk` (npm ci && npm run build in sdk/typescript): %v", err)
	}
}

// sdkImages serves a registry the test owns with one image pushed to it, and writes the same
// image as a `docker save` archive: the suites pull and import them ($NSBOX_TEST_IMAGE_REF,
// $NSBOX_TEST_IMAGE_ARCHIVE), talking to no address the test did not make. It sets the
// environment the daemon is started with, so it comes before startDaemon.
func sdkImages(t *testing.T) []string {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // the daemon finds no credentials of this machine
	img := ocitest.BusyboxImage(t)
	ref := ocitest.NewRegistry(t).Push(t, "sdk/busybox:v1", img)
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(archive, ocitest.DockerSave(t, "example.com/sdk/app:v1", img), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"NSBOX_TEST_IMAGE_REF=" + ref, "NSBOX_TEST_IMAGE_ARCHIVE=" + archive}
}

func TestSDKPython(t *testing.T) {
	env := sdkImages(t)
	d := startDaemon(t)
	runSDKSuite(t, "unix://"+d.socket, env, "python3", "-m", "unittest", "discover", "-v", "-s", "sdk/python/tests", "-t", "sdk/python")
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
// string literals ("GET", "/v1/sandboxes/{id}"; "GET", "/metrics").
var sdkRoute = regexp.MustCompile(`"(GET|POST|PUT|PATCH|DELETE)",\s*"(/v1/[^"?]*|/metrics)"`)

// sdkSources are the SDKs' source directories and file extensions.
var sdkSources = []struct{ dir, ext string }{{"sdk/python/nsbox", ".py"}, {"sdk/typescript/src", ".ts"}}

// routeParam is a route template's parameter, which the SDKs and the spec name differently.
var routeParam = regexp.MustCompile(`\{[^}]*\}`)

// specOps are the operations of api/openapi.json as "METHOD /route/{}".
func specOps() []string {
	var ops []string
	for _, op := range apiSpec.Operations() {
		ops = append(ops, routeParam.ReplaceAllString(op, "{}"))
	}
	return ops
}

// sdkCalls scans an SDK's sources for the requests it writes: each operation ("METHOD
// /route/{}") with the file that writes it first.
func sdkCalls(t *testing.T, dir, ext string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, dir, "*"+ext))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s files in %s: %v", ext, dir, err)
	}
	calls := map[string]string{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range sdkRoute.FindAllStringSubmatch(string(src), -1) {
			op := m[1] + " " + routeParam.ReplaceAllString(m[2], "{}")
			if _, ok := calls[op]; !ok {
				calls[op] = filepath.Base(f)
			}
		}
	}
	return calls
}

// TestSDKRoutesInSpec checks that every route the SDKs call is an operation of api/openapi.json
// with the same method.
func TestSDKRoutesInSpec(t *testing.T) {
	ops := specOps()
	for _, sdk := range sdkSources {
		calls := sdkCalls(t, sdk.dir, sdk.ext)
		for op, file := range calls {
			if !slices.Contains(ops, op) {
				t.Errorf("%s calls %s, which api/openapi.json does not have", file, op)
			}
		}
		// Both SDKs cover the sandbox API: a scan that found little means the convention broke.
		if len(calls) < 45 {
			t.Errorf("%s: only %d distinct routes found; every request must be written as \"METHOD\", \"/v1/…\"", sdk.dir, len(calls))
		}
		t.Logf("%s calls %d of the %d operations", sdk.dir, len(calls), len(ops))
	}
}

// sdkExempt lists the operations of api/openapi.json ("METHOD /route/{param}", as the spec
// writes them) an SDK need not call, each with why a user of the SDK should not call it. It is empty: every operation is something a program
// drives (the image store, snapshots, stats, events and metrics included: platforms built on
// nsbox pull images, scrape metrics and follow events from their own code), and the browser's
// web terminal page is served outside the API (it is not an operation).
var sdkExempt = map[string]string{}

// TestSDKCoversSpec is TestSDKRoutesInSpec's converse: every operation of api/openapi.json is
// called by each SDK (issue 18: "It covers the whole API"), but for sdkExempt.
func TestSDKCoversSpec(t *testing.T) {
	for _, sdk := range sdkSources {
		calls := sdkCalls(t, sdk.dir, sdk.ext)
		var missing []string
		for _, op := range apiSpec.Operations() {
			if _, ok := calls[routeParam.ReplaceAllString(op, "{}")]; !ok && sdkExempt[op] == "" {
				missing = append(missing, op)
			}
		}
		if len(missing) > 0 {
			t.Errorf("%s does not call %d operations of api/openapi.json (write each as \"METHOD\", \"/route\"):\n  %s",
				sdk.dir, len(missing), strings.Join(missing, "\n  "))
		}
	}
}
