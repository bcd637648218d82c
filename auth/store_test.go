package auth

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
)

// clock is a test clock the store reads.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func openTest(t *testing.T, dir string) (*Store, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, err := open(dir, c.now)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func mint(t *testing.T, s *Store, sandbox, session, perm string, ttl time.Duration) *api.NewToken {
	t.Helper()
	nt, err := s.Mint(api.Token{Sandbox: sandbox, Session: session, Permission: perm}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

func wantUnauthenticated(t *testing.T, s *Store, token, why string) {
	t.Helper()
	if g, err := s.Authenticate(token); !api.IsCode(err, api.CodeUnauthenticated) {
		t.Fatalf("%s: got grant %+v, err %v; want unauthenticated", why, g, err)
	}
}

func TestMintKeepsOnlyHashesAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	nt := mint(t, s, "box", "dev", api.PermissionRead, time.Hour)
	if !strings.HasPrefix(nt.Secret, tokenPrefix+nt.ID+".") {
		t.Fatalf("token %q does not carry its id %s", nt.Secret, nt.ID)
	}
	data, err := os.ReadFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(nt.Secret, tokenPrefix+nt.ID+".")
	if strings.Contains(string(data), secret) {
		t.Fatalf("the token file holds the secret: %s", data)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tokens.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", fi.Mode(), err)
	}
	again, _ := openTest(t, dir)
	g, err := again.Authenticate(nt.Secret)
	if err != nil {
		t.Fatalf("a token after a reopen: %v", err)
	}
	if g.Admin || g.Token.Sandbox != "box" || g.Token.Session != "dev" || g.Token.Permission != api.PermissionRead {
		t.Fatalf("grant after a reopen: %+v", g)
	}
}

func TestUnknownAndAlteredTokens(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	nt := mint(t, s, "box", "", api.PermissionWrite, time.Hour)
	wantUnauthenticated(t, s, "", "no token")
	wantUnauthenticated(t, s, "nsbox.0000000000000000.00", "unknown id")
	flipped := "0"
	if strings.HasSuffix(nt.Secret, "0") {
		flipped = "1"
	}
	altered := nt.Secret[:len(nt.Secret)-1] + flipped
	wantUnauthenticated(t, s, altered, "a token with its last digit changed")
	wantUnauthenticated(t, s, nt.Secret+"0", "a token with a digit more")
	if _, err := s.Authenticate(nt.Secret); err != nil {
		t.Fatal(err)
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	s, c := openTest(t, dir)
	nt := mint(t, s, "box", "", api.PermissionWrite, time.Minute)
	if _, err := s.Authenticate(nt.Secret); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Minute)
	wantUnauthenticated(t, s, nt.Secret, "an expired token")
	if list := s.List(); len(list) != 0 {
		t.Fatalf("List shows expired tokens: %+v", list)
	}
	// A reopen at that time drops it.
	again, err := open(dir, c.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.tokens) != 0 {
		t.Fatalf("reopen kept expired tokens: %v", again.tokens)
	}
}

func TestRevoke(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	a := mint(t, s, "box", "", api.PermissionWrite, time.Hour)
	b := mint(t, s, "box", "dev", api.PermissionRead, time.Hour)
	other := mint(t, s, "other", "", api.PermissionRead, time.Hour)
	ga, err := s.Authenticate(a.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(a.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ga.Done():
	default:
		t.Fatal("revoke did not end the token's grant")
	}
	wantUnauthenticated(t, s, a.Secret, "a revoked token")
	if err := s.Revoke(a.ID); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if err := s.RevokeSandbox("box"); err != nil {
		t.Fatal(err)
	}
	wantUnauthenticated(t, s, b.Secret, "a token of a removed sandbox")
	again, _ := openTest(t, dir)
	wantUnauthenticated(t, again, a.Secret, "a revoked token after a reopen")
	if _, err := again.Authenticate(other.Secret); err != nil {
		t.Fatalf("another sandbox's token: %v", err)
	}
}

func TestAdminTokensReload(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	file := filepath.Join(t.TempDir(), "admin")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadAdmin(file); err != nil {
			t.Fatal(err)
		}
	}
	write("# admins\nalpha\n\n  beta  \n")
	ga, err := s.Authenticate("alpha")
	if err != nil || !ga.Admin {
		t.Fatalf("alpha: %+v %v", ga, err)
	}
	if g, err := s.Authenticate("beta"); err != nil || !g.Admin {
		t.Fatalf("beta (spaces trimmed): %+v %v", g, err)
	}
	wantUnauthenticated(t, s, "# admins", "a comment line")
	wantUnauthenticated(t, s, "alph", "a prefix of an admin token")
	write("beta\ngamma\n")
	wantUnauthenticated(t, s, "alpha", "an admin token removed from the file")
	select {
	case <-ga.Done():
	default:
		t.Fatal("the removed admin token's grant goes on")
	}
	if g, err := s.Authenticate("gamma"); err != nil || !g.Admin {
		t.Fatalf("gamma after reload: %+v %v", g, err)
	}
	// A file that cannot be read leaves the tokens as they were.
	if _, err := s.LoadAdmin(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("LoadAdmin of a missing file succeeded")
	}
	if _, err := s.Authenticate("beta"); err != nil {
		t.Fatalf("beta after a failed reload: %v", err)
	}
}

// TestCompareIsConstantTime checks the comparison itself: equal only compares whole hashes
// with crypto/subtle, so a stored hash that shares a prefix with the given one is no closer.
func TestCompareIsConstantTime(t *testing.T) {
	h := hashOf("token")
	stored := h
	if !equal(h, hex.EncodeToString(stored[:])) {
		t.Fatal("equal hashes differ")
	}
	stored[len(stored)-1] ^= 1
	if equal(h, hex.EncodeToString(stored[:])) {
		t.Fatal("hashes that differ in their last byte are equal")
	}
	if equal(h, "zz") {
		t.Fatal("a malformed stored hash is equal")
	}
}
