// Package auth authenticates and authorizes the daemon's TCP callers. The unix socket is full
// access (its file mode is the guard); a TCP request carries a bearer token:
//
//   - admin tokens, one per line of the --auth-tokens file, re-read on SIGHUP (Store.LoadAdmin);
//   - scoped tokens, minted through the API for one sandbox (and optionally one session of it)
//     with read or write permission and a TTL, listed and revoked through the API, and kept in
//     the data dir so that they survive a restart.
//
// Only SHA-256 hashes of tokens are kept, in memory and on disk, and they are compared in
// constant time. A token's grant carries a context that ends when the token is revoked,
// expires, or (admin) leaves the file: the middleware closes the connections of requests
// made with it, so open streams and terminals are cut at once.
//
// The core (package nsbox) knows nothing of tokens: each of its routes says what it needs
// (api.Access, api.SessionFrom) and Service.Check, called by its router, decides.
package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/internal/atomicfile"
)

// tokenPrefix starts every scoped token: "nsbox." ID "." secret. Admin tokens are whatever
// the file holds.
const tokenPrefix = "nsbox."

// A Grant is what a valid token allows: everything (Admin) or Token's scope. Done ends when
// the token stops being valid.
type Grant struct {
	Admin bool
	Token api.Token // scoped tokens only
	ctx   context.Context
}

// Done is closed when the token is revoked or expires (or an admin token leaves the file).
func (g *Grant) Done() <-chan struct{} { return g.ctx.Done() }

type hash [sha256.Size]byte

func hashOf(token string) hash { return sha256.Sum256([]byte(token)) }

// scoped is a minted token as the store keeps it: never its secret.
type scoped struct {
	api.Token
	Hash   string `json:"hash"` // hex SHA-256 of the whole token
	ctx    context.Context
	cancel context.CancelFunc
}

// admin is one admin token's hash and the life of its grants.
type admin struct {
	hash   hash
	ctx    context.Context
	cancel context.CancelFunc
}

// Store holds the admin and scoped tokens.
type Store struct {
	path string           // where scoped tokens are kept
	now  func() time.Time // the clock (tests move it)

	mu     sync.Mutex
	admins []*admin
	tokens map[string]*scoped // by id
}

// Open loads the scoped tokens kept in dir (tokens.json); expired ones are dropped.
func Open(dir string) (*Store, error) {
	return open(dir, time.Now)
}

func open(dir string, now func() time.Time) (*Store, error) {
	s := &Store{path: filepath.Join(dir, "tokens.json"), now: now, tokens: map[string]*scoped{}}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	var list []*scoped
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("decode tokens %s: %w", s.path, err)
	}
	for _, t := range list {
		if t.ExpiresAt.After(now()) {
			s.add(t)
		}
	}
	return s, nil
}

// add makes t live: its context ends at its expiry.
func (s *Store) add(t *scoped) {
	t.ctx, t.cancel = context.WithDeadline(context.Background(), t.ExpiresAt)
	s.tokens[t.ID] = t
}

// LoadAdmin (re)reads the admin tokens from path: one per line, blank lines and lines
// starting with # skipped. Grants of tokens no longer in the file end. On error the tokens
// stay as they were.
func (s *Store) LoadAdmin(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read admin tokens: %w", err)
	}
	var hashes []hash
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			hashes = append(hashes, hashOf(line))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var kept []*admin
	for _, h := range hashes {
		i := slices.IndexFunc(s.admins, func(a *admin) bool { return a.hash == h })
		if i >= 0 {
			kept = append(kept, s.admins[i])
			continue
		}
		a := &admin{hash: h}
		a.ctx, a.cancel = context.WithCancel(context.Background())
		kept = append(kept, a)
	}
	for _, a := range s.admins {
		if !slices.Contains(kept, a) {
			a.cancel()
		}
	}
	s.admins = kept
	return len(kept), nil
}

// Authenticate returns the grant of a token; a missing, unknown, revoked or expired token is
// an unauthenticated error.
func (s *Store) Authenticate(token string) (*Grant, error) {
	if token == "" {
		return nil, api.Errorf(api.CodeUnauthenticated, "no token: send Authorization: Bearer TOKEN (or, for a terminal WebSocket, the subprotocol %sTOKEN)", api.TerminalTokenProtocol)
	}
	h := hashOf(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, _, ok := strings.Cut(strings.TrimPrefix(token, tokenPrefix), "."); ok && strings.HasPrefix(token, tokenPrefix) {
		t := s.tokens[id]
		if t != nil && equal(h, t.Hash) {
			if !t.ExpiresAt.After(s.now()) || t.ctx.Err() != nil {
				return nil, api.Errorf(api.CodeUnauthenticated, "token %s expired at %s", t.ID, t.ExpiresAt.Format(time.RFC3339))
			}
			return &Grant{Token: t.Token, ctx: t.ctx}, nil
		}
	}
	// Every admin hash is compared, whichever matches.
	var match *admin
	for _, a := range s.admins {
		if subtle.ConstantTimeCompare(h[:], a.hash[:]) == 1 {
			match = a
		}
	}
	if match != nil {
		return &Grant{Admin: true, ctx: match.ctx}, nil
	}
	return nil, api.Errorf(api.CodeUnauthenticated, "unknown or revoked token")
}

// equal compares a token's hash with a stored hex hash in constant time.
func equal(h hash, stored string) bool {
	want, err := hex.DecodeString(stored)
	return err == nil && subtle.ConstantTimeCompare(h[:], want) == 1
}

// Mint makes a token for t's scope (Sandbox, Session, Permission) that expires after ttl,
// keeps its hash and returns it with its secret.
func (s *Store) Mint(t api.Token, ttl time.Duration) (*api.NewToken, error) {
	id, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	token := tokenPrefix + id + "." + secret
	h := hashOf(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	t.ID, t.CreatedAt = id, s.now().UTC().Truncate(time.Second)
	t.ExpiresAt = t.CreatedAt.Add(ttl)
	rec := &scoped{Token: t, Hash: hex.EncodeToString(h[:])}
	s.add(rec)
	if err := s.save(); err != nil {
		rec.cancel()
		delete(s.tokens, id)
		return nil, err
	}
	return &api.NewToken{Token: t, Secret: token}, nil
}

// List returns the tokens that have not expired, oldest first.
func (s *Store) List() []api.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.Token{}
	for _, t := range s.tokens {
		if t.ExpiresAt.After(s.now()) {
			out = append(out, t.Token)
		}
	}
	slices.SortFunc(out, func(a, b api.Token) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

// Revoke ends a token now: it is forgotten, and its grants' connections are cut.
func (s *Store) Revoke(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[id]
	if t == nil {
		return api.Errorf(api.CodeNotFound, "token %q not found (revoked, expired or never minted)", id)
	}
	return s.revoke(t)
}

// RevokeSandbox revokes every token of a sandbox (when it is removed).
func (s *Store) RevokeSandbox(sandbox string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, t := range s.tokens {
		if t.Sandbox == sandbox {
			errs = append(errs, s.revoke(t))
		}
	}
	return errors.Join(errs...)
}

func (s *Store) revoke(t *scoped) error {
	t.cancel()
	delete(s.tokens, t.ID)
	return s.save()
}

// save writes the live tokens (hashes only) to the store's file: a temporary file, synced,
// renamed into place. Expired tokens are dropped on the way.
func (s *Store) save() error {
	list := []*scoped{}
	for id, t := range s.tokens {
		if !t.ExpiresAt.After(s.now()) {
			t.cancel()
			delete(s.tokens, id)
			continue
		}
		list = append(list, t)
	}
	data, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("encode tokens: %w", err)
	}
	if err := atomicfile.Write(s.path, data); err != nil {
		return fmt.Errorf("save tokens: %w", err)
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
