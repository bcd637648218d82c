package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// The remote-access tests (issue 14) talk only to loopback listeners the test made, over TLS
// with a CA the test makes.

// testPKI is a CA and a server certificate for 127.0.0.1, written as PEM files; the CA signs
// more certificates with issue.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
	dir                       string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nsbox test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool(), ca: ca, caKey: caKey, dir: dir}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	p.certFile, p.keyFile = p.issue(t, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return p
}

// issue signs a certificate made from tmpl and writes it and its key as name.pem, name.key.
func (p testPKI) issue(t *testing.T, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// clientCert is a client certificate the CA signed, for mutual TLS.
func (p testPKI) clientCert(t *testing.T, name string) tls.Certificate {
	t.Helper()
	certFile, keyFile := p.issue(t, name, &x509.Certificate{Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// remote calls a daemon's TCP listener; every answer is checked against the spec.
type remote struct {
	t    *testing.T
	base string
	tls  *tls.Config
	http *http.Client
}

func newRemote(t *testing.T, base string, tlsCfg *tls.Config) *remote {
	return &remote{t: t, base: base, tls: tlsCfg, http: &http.Client{Transport: &specCheckingTransport{t: t, next: &http.Transport{TLSClientConfig: tlsCfg}}}}
}

// call sends a request with token (none if empty) and returns the status and body.
func (r *remote) call(token, method, path string, body any, header ...string) (int, []byte) {
	r.t.Helper()
	resp := r.send(token, method, path, body, header...)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, data
}

func (r *remote) send(token, method, path string, body any, header ...string) *http.Response {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, requestBody(r.t, body))
	if err != nil {
		r.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := r.http.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// expect checks an answer's status (and, for errors, that the message holds want).
func (r *remote) expect(token, method, path string, body any, status int, want string) []byte {
	r.t.Helper()
	got, data := r.call(token, method, path, body)
	if got != status || !strings.Contains(string(data), want) {
		r.t.Fatalf("%s %s: want %d with %q, got %d %s", method, path, status, want, got, data)
	}
	return data
}

// mint makes a scoped token through the API with the admin token.
func (r *remote) mint(admin string, req api.CreateTokenRequest) *api.NewToken {
	r.t.Helper()
	var nt api.NewToken
	if err := json.Unmarshal(r.expect(admin, "POST", "/v1/tokens", req, http.StatusCreated, `"token"`), &nt); err != nil {
		r.t.Fatal(err)
	}
	return &nt
}

func TestRemoteAccessOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	adminFile := filepath.Join(t.TempDir(), "admin-tokens")
	const admin = "admin-secret-0123456789"
	if err := os.WriteFile(adminFile, []byte("# admins\n"+admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	d := startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--tls-cert", pki.certFile, "--tls-key", pki.keyFile,
		"--auth-tokens", adminFile, "--cors-origin", "https://app.example")
	r := newRemote(t, fmt.Sprintf("https://127.0.0.1:%d", port), &tls.Config{RootCAs: pki.pool})

	// No token, a wrong one: 401.
	r.expect("", "GET", "/v1/version", nil, http.StatusUnauthorized, "no token")
	r.expect("wrong", "GET", "/v1/sandboxes", nil, http.StatusUnauthorized, "unknown or revoked token")
	// An admin token does everything.
	r.expect(admin, "POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "box"}, http.StatusCreated, `"box"`)
	r.expect(admin, "POST", "/v1/sandboxes", api.CreateSandboxRequest{ID: "other", Image: "busybox"}, http.StatusCreated, `"other"`)
	r.expect(admin, "POST", "/v1/sandboxes/box/sessions", api.CreateSessionRequest{ID: "ro", Permission: api.PermissionRead}, http.StatusCreated, `"permission":"read"`)
	r.expect(admin, "POST", "/v1/sandboxes/box/sessions", api.CreateSessionRequest{ID: "rw"}, http.StatusCreated, `"permission":"write"`)
	// Creating a session that exists answers it as it is.
	r.expect(admin, "POST", "/v1/sandboxes/box/sessions", api.CreateSessionRequest{ID: "ro", Permission: api.PermissionWrite}, http.StatusOK, `"permission":"read"`)
	d.sh("box", "echo hello > /workspace/note")

	t.Run("read session token", func(t *testing.T) {
		r.t = t
		r.expect(admin, "POST", "/v1/tokens", api.CreateTokenRequest{Sandbox: "box", Session: "ro", Permission: api.PermissionWrite, TTLSeconds: 60}, http.StatusForbidden, "read-only")
		ro := r.mint(admin, api.CreateTokenRequest{Sandbox: "box", Session: "ro", Permission: api.PermissionRead, TTLSeconds: 600}).Secret
		if got, data := r.call(ro, "GET", "/v1/sandboxes/box/files?path=note", nil); got != http.StatusOK || string(data) != "hello\n" {
			t.Fatalf("read a file with a read session token: %d %q", got, data)
		}
		r.expect(ro, "GET", "/v1/sandboxes/box/files/list?path=/workspace", nil, http.StatusOK, `"note"`)
		r.expect(ro, "GET", "/v1/sandboxes/box/processes", nil, http.StatusOK, "[")
		r.expect(ro, "POST", "/v1/sandboxes/box/sessions/ro/exec", api.ExecRequest{Command: "true"}, http.StatusForbidden, "read-only")
		r.expect(ro, "PUT", "/v1/sandboxes/box/files?path=x", "data", http.StatusForbidden, "read-only")
		r.expect(ro, "DELETE", "/v1/sandboxes/box/files?path=note", nil, http.StatusForbidden, "read-only")
		r.expect(ro, "POST", "/v1/sandboxes/box/processes", api.StartProcessRequest{Command: "true"}, http.StatusForbidden, "")
		r.expect(ro, "PATCH", "/v1/sandboxes/box/env", api.PatchEnvRequest{Set: map[string]string{"A": "b"}}, http.StatusForbidden, "")
		r.expect(ro, "GET", "/v1/sandboxes/box/sessions/rw", nil, http.StatusForbidden, `session \"ro\" only`)
		// A file request names its session by either query parameter; another session's is refused.
		r.expect(ro, "GET", "/v1/sandboxes/box/files?path=note&session=ro", nil, http.StatusOK, "hello")
		r.expect(ro, "GET", "/v1/sandboxes/box/files?path=note&session=rw", nil, http.StatusForbidden, `session \"ro\" only`)
		r.expect(ro, "GET", "/v1/sandboxes/box/files?path=note&sessionId=rw", nil, http.StatusForbidden, `session \"ro\" only`)
		r.expect(ro, "GET", "/v1/sandboxes/box/files?path=note&session=ro&sessionId=rw", nil, http.StatusBadRequest, "two sessions")
		r.expect(ro, "GET", "/v1/sandboxes/other", nil, http.StatusForbidden, `sandbox \"box\" only`)
		r.expect(ro, "GET", "/v1/sandboxes", nil, http.StatusForbidden, "admin token")
		r.expect(ro, "POST", "/v1/sandboxes", api.CreateSandboxRequest{}, http.StatusForbidden, "admin token")
		r.expect(ro, "POST", "/v1/tokens", api.CreateTokenRequest{Sandbox: "box", Permission: api.PermissionRead, TTLSeconds: 60}, http.StatusForbidden, "admin token")

		// The session itself is read-only for every caller, the socket included.
		d.expectError("POST", "/v1/sandboxes/box/sessions/ro/exec", api.ExecRequest{Command: "true"}, http.StatusForbidden, api.CodePermissionDenied)
		d.expectError("PUT", "/v1/sandboxes/box/files?path=x&sessionId=ro", "data", http.StatusForbidden, api.CodePermissionDenied)
		d.expectError("PUT", "/v1/sandboxes/box/files?path=x&session=ro", "data", http.StatusForbidden, api.CodePermissionDenied)

		// It watches the terminal (the Go SDK sends the token as a header) but cannot type.
		rc, err := client.Dial(r.base, client.Options{Token: ro, TLS: &tls.Config{RootCAs: pki.pool}})
		if err != nil {
			t.Fatal(err)
		}
		d.sh("box", "true") // the default session exists; ro's terminal is watched below
		term, err := rc.AttachTerminal(context.Background(), "box", "ro", client.TerminalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		if err := term.Input([]byte("echo typed\r")); err != nil {
			t.Fatal(err)
		}
		for {
			_, notice, err := term.Read()
			if err != nil {
				t.Fatalf("read the terminal: %v", err)
			}
			if notice != nil && notice.Type == "error" {
				if !strings.Contains(notice.Data, "read-only") {
					t.Fatalf("input into a read-only terminal: %+v", notice)
				}
				break
			}
		}
	})

	t.Run("browser session token", func(t *testing.T) {
		r.t = t
		var st api.SessionToken
		if err := json.Unmarshal(r.expect(admin, "POST", "/v1/sandboxes/box/sessions/ro/tokens", struct{}{}, http.StatusCreated, `"terminal"`), &st); err != nil {
			t.Fatal(err)
		}
		wantURL := fmt.Sprintf("wss://127.0.0.1:%d/v1/sandboxes/box/sessions/ro/terminal", port)
		if st.Permission != api.PermissionRead || st.Session != "ro" || st.Terminal != wantURL || st.API != r.base {
			t.Fatalf("session token: %+v", st)
		}
		// A browser sends the token as a subprotocol; the server answers nsbox.terminal.
		cfg, err := websocket.NewConfig(st.Terminal, "https://app.example")
		if err != nil {
			t.Fatal(err)
		}
		cfg.TlsConfig = &tls.Config{RootCAs: pki.pool}
		cfg.Protocol = []string{api.TerminalProtocol, api.TerminalTokenProtocol + st.Secret}
		ws, err := websocket.DialConfig(cfg)
		if err != nil {
			t.Fatalf("terminal with the token as a subprotocol: %v", err)
		}
		defer ws.Close()
		if got := ws.Config().Protocol; len(got) != 1 || got[0] != api.TerminalProtocol {
			t.Fatalf("server chose subprotocol %q", got)
		}
		// CORS: a preflight from an allowed origin is answered, another origin's is refused.
		preflight := func(origin string) *http.Response {
			req, _ := http.NewRequest(http.MethodOptions, r.base+"/v1/sandboxes/box", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "GET")
			req.Header.Set("Access-Control-Request-Headers", "authorization")
			resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if resp := preflight("https://app.example"); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight from an allowed origin: %d %v", resp.StatusCode, resp.Header)
		}
		if resp := preflight("https://evil.example"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight from another origin: %d %v", resp.StatusCode, resp.Header)
		}
	})

	t.Run("write tokens", func(t *testing.T) {
		r.t = t
		rw := r.mint(admin, api.CreateTokenRequest{Sandbox: "box", Permission: api.PermissionWrite, TTLSeconds: 600}).Secret
		r.expect(rw, "POST", "/v1/sandboxes/box/exec", api.ExecRequest{Command: "echo $((6*7))"}, http.StatusOK, `"stdout":"42\n"`)
		r.expect(rw, "PUT", "/v1/sandboxes/box/files?path=/workspace/w", "written", http.StatusCreated, `"size":7`)
		r.expect(rw, "PATCH", "/v1/sandboxes/box/env", api.PatchEnvRequest{Set: map[string]string{"A": "b"}}, http.StatusOK, `"A":"b"`)
		r.expect(rw, "POST", "/v1/sandboxes/other/exec", api.ExecRequest{Command: "true"}, http.StatusForbidden, `sandbox \"box\" only`)
		r.expect(rw, "DELETE", "/v1/sandboxes/box", nil, http.StatusForbidden, "admin token")
		// A session's write token acts in its session only.
		sess := r.mint(admin, api.CreateTokenRequest{Sandbox: "box", Session: "rw", Permission: api.PermissionWrite, TTLSeconds: 600}).Secret
		r.expect(sess, "POST", "/v1/sandboxes/box/sessions/rw/exec", api.ExecRequest{Command: "cd /tmp && pwd"}, http.StatusOK, `"stdout":"/tmp\n"`)
		r.expect(sess, "POST", "/v1/sandboxes/box/exec", api.ExecRequest{SessionID: "rw", Command: "pwd"}, http.StatusOK, `"stdout":"/tmp\n"`)
		r.expect(sess, "POST", "/v1/sandboxes/box/exec", api.ExecRequest{Command: "pwd"}, http.StatusForbidden, `session \"rw\" only`)
		r.expect(sess, "POST", "/v1/sandboxes/box/sessions/default/exec", api.ExecRequest{Command: "pwd"}, http.StatusForbidden, `session \"rw\" only`)
		// Its file calls are made for its session: relative to its directory.
		r.expect(sess, "PUT", "/v1/sandboxes/box/files?path=mine", "x", http.StatusCreated, `"path":"/tmp/mine"`)
		r.expect(sess, "PUT", "/v1/sandboxes/box/files?path=mine&uid=0", "x", http.StatusForbidden, "uid and gid")
		r.expect(sess, "PATCH", "/v1/sandboxes/box/env", api.PatchEnvRequest{Set: map[string]string{"A": "c"}}, http.StatusForbidden, "sandbox token")
	})

	t.Run("revoke cuts a stream", func(t *testing.T) {
		r.t = t
		nt := r.mint(admin, api.CreateTokenRequest{Sandbox: "box", Permission: api.PermissionWrite, TTLSeconds: 600})
		resp := r.send(nt.Secret, "POST", "/v1/sandboxes/box/exec", api.ExecRequest{Command: "echo started; sleep 3600"}, "Accept", api.EventStream)
		defer resp.Body.Close()
		events := api.NewSSEReader(resp.Body)
		for {
			name, data, err := events.Next()
			if err != nil {
				t.Fatalf("stream ended before the command printed: %v", err)
			}
			if name == api.EventStdout && strings.Contains(string(data), "started") {
				break
			}
		}
		r.expect(admin, "DELETE", "/v1/tokens/"+nt.ID, nil, http.StatusNoContent, "")
		for {
			name, _, err := events.Next()
			if err != nil {
				break // cut: the connection was closed
			}
			if name == api.EventExit {
				t.Fatal("the command ended instead of the stream being cut")
			}
		}
		r.expect(nt.Secret, "GET", "/v1/sandboxes/box", nil, http.StatusUnauthorized, "unknown or revoked")
		var list []api.Token
		if err := json.Unmarshal(r.expect(admin, "GET", "/v1/tokens", nil, http.StatusOK, "["), &list); err != nil {
			t.Fatal(err)
		}
		for _, tok := range list {
			if tok.ID == nt.ID {
				t.Fatalf("a revoked token is listed: %+v", tok)
			}
		}
	})

	t.Run("tokens survive a restart and go with their sandbox", func(t *testing.T) {
		r.t = t
		keep := r.mint(admin, api.CreateTokenRequest{Sandbox: "box", Permission: api.PermissionRead, TTLSeconds: 600}).Secret
		gone := r.mint(admin, api.CreateTokenRequest{Sandbox: "other", Permission: api.PermissionRead, TTLSeconds: 600}).Secret
		d.kill9()
		d.start()
		r.http.CloseIdleConnections()
		r.expect(keep, "GET", "/v1/sandboxes/box", nil, http.StatusOK, `"box"`)
		r.expect(admin, "DELETE", "/v1/sandboxes/other?force=true", nil, http.StatusNoContent, "")
		r.expect(gone, "GET", "/v1/sandboxes/other", nil, http.StatusUnauthorized, "unknown or revoked")
		// SIGHUP re-reads the admin tokens.
		if err := os.WriteFile(adminFile, []byte("new-admin-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second) // a guard: the reload is at once
		for {
			if got, _ := r.call("new-admin-token", "GET", "/v1/sandboxes", nil); got == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the new admin token was not accepted after SIGHUP")
			}
			time.Sleep(20 * time.Millisecond)
		}
		r.expect(admin, "GET", "/v1/sandboxes", nil, http.StatusUnauthorized, "unknown or revoked")
	})
}

// TestRemotePlainHTTPOnlyOnLoopback: a TCP listener without TLS works on a loopback address
// (with tokens) and is refused anywhere else.
func TestRemotePlainHTTPOnlyOnLoopback(t *testing.T) {
	out, err := exec.Command(nsboxBin, "daemon", "--data-dir", t.TempDir(), "--run-dir", reachableTempDir(t), "--listen", "tcp://0.0.0.0:7443").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs --tls-cert and --tls-key unless its address is loopback") {
		t.Fatalf("daemon with plain TCP on 0.0.0.0: %v %s", err, out)
	}
	if _, err := client.Dial("http://192.0.2.1:7443", client.Options{}); err == nil {
		t.Fatal("the SDK accepted plain http to a non-loopback host")
	}
	adminFile := filepath.Join(t.TempDir(), "admin-tokens")
	if err := os.WriteFile(adminFile, []byte("loopback-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	d := startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--auth-tokens", adminFile)
	r := newRemote(t, fmt.Sprintf("http://127.0.0.1:%d", port), nil)
	r.expect("", "GET", "/v1/version", nil, http.StatusUnauthorized, "no token")
	r.expect("loopback-admin", "GET", "/v1/version", nil, http.StatusOK, "version")
	// The CLI over TCP, with NSBOX_HOST and NSBOX_TOKEN.
	cmd := exec.Command(nsboxBin, "version")
	cmd.Env = append(os.Environ(), fmt.Sprintf("NSBOX_HOST=http://127.0.0.1:%d", port), "NSBOX_TOKEN=loopback-admin")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "daemon") {
		t.Fatalf("nsbox version over TCP: %v %s", err, out)
	}
	// The socket needs no token.
	if _, err := d.client.Version(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRemoteMutualTLS: with --tls-client-ca, a client without a certificate, or with one another
// CA signed, is refused in the handshake; one with a certificate the CA signed is served.
func TestRemoteMutualTLS(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	adminFile := filepath.Join(t.TempDir(), "admin-tokens")
	if err := os.WriteFile(adminFile, []byte("mtls-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--tls-cert", pki.certFile, "--tls-key", pki.keyFile,
		"--tls-client-ca", pki.caFile, "--auth-tokens", adminFile)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	get := func(certs ...tls.Certificate) error {
		c, err := client.Dial(base, client.Options{Token: "mtls-admin", TLS: &tls.Config{RootCAs: pki.pool, Certificates: certs}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Version(context.Background())
		return err
	}
	if err := get(); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("a client without a certificate: %v, want the handshake refused (certificate required)", err)
	}
	if err := get(other.clientCert(t, "stranger")); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("a client with another CA's certificate: %v, want the handshake refused (unknown certificate authority)", err)
	}
	if err := get(pki.clientCert(t, "platform")); err != nil {
		t.Fatalf("a client with a certificate the CA signed: %v", err)
	}
}

// TestRemoteTLSCertificateReload: SIGHUP makes the TCP listeners serve the certificate now in
// the --tls-cert and --tls-key files; a broken pair keeps the old one.
func TestRemoteTLSCertificateReload(t *testing.T) {
	first, second := newTestPKI(t), newTestPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(p testPKI) {
		for src, dst := range map[string]string{p.certFile: certFile, p.keyFile: keyFile} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	port := freeLoopbackPort(t)
	d := startDaemon(t, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--tls-cert", certFile, "--tls-key", keyFile)
	// The certificate the listener serves now, read from a new connection's handshake.
	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	signedBy := func(c *x509.Certificate, p testPKI) bool {
		_, err := c.Verify(x509.VerifyOptions{Roots: p.pool})
		return err == nil
	}
	if !signedBy(served(), first) {
		t.Fatal("the listener does not serve the first certificate")
	}
	// A broken pair is refused: the old certificate stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "reload on SIGHUP failed")
	if !signedBy(served(), first) {
		t.Fatal("a broken certificate pair replaced the served one")
	}
	install(second)
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second) // a guard: the reload is at once
	for !signedBy(served(), second) {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate is not served after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits until the daemon's log says want.
func waitLog(t *testing.T, d *testDaemon, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second) // a guard, not a timing assertion
	for !strings.Contains(d.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log never said %q:\n%s", want, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
