package nsbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsbox/nsbox/api"
	sandboxnet "github.com/nsbox/nsbox/net"
)

// testCore is a Runtime on a fake backend and a fake network, in a temp dir.
type testCore struct {
	*Runtime
	t       *testing.T
	cfg     Config
	backend *fakeBackend
	net     *fakeNetwork
}

func newTestCore(t *testing.T, pool int) *testCore {
	t.Helper()
	dir := t.TempDir()
	c := &testCore{t: t, backend: newFakeBackend(t, dir), net: newFakeNetwork()}
	c.cfg = Config{DataDir: filepath.Join(dir, "data"), RunDir: dir, Backend: c.backend, DefaultCPUs: 1,
		DefaultMemoryMB: 64, DefaultPids: 64, WarmPool: map[string]int{"host": pool}, network: c.net}
	c.open()
	t.Cleanup(func() {
		c.Close()
		for _, id := range c.backend.ids() {
			if inst := c.backend.get(id); inst != nil {
				inst.exit()
			}
		}
	})
	return c
}

// open (re)starts the daemon's core on the same state, backend and network.
func (c *testCore) open() {
	c.t.Helper()
	r, err := Open(c.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		c.t.Fatal(err)
	}
	c.Runtime = r
}

// waitPool waits until the pool holds n ready containers.
func (c *testCore) waitPool(n int) {
	c.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.pool.readyCount("host") != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			c.t.Fatalf("the pool holds %d containers, want %d", c.pool.readyCount("host"), n)
		}
	}
}

func (c *testCore) create(req api.CreateSandboxRequest) *api.Sandbox {
	c.t.Helper()
	sb, err := c.Create(context.Background(), req)
	if err != nil {
		c.t.Fatalf("create %s: %v", req.ID, err)
	}
	return sb
}

// leftovers lists what a sandbox that is gone must not have left: a record, a container, a
// run or data dir, a network.
func (c *testCore) leftovers(id string) []string {
	c.retiring.Wait() // a remove tears its container down in the background
	var out []string
	if _, err := c.Get(id); err == nil {
		out = append(out, "sandbox still listed")
	}
	recs, _ := c.records.List()
	for _, rec := range recs {
		if rec.ID == id {
			out = append(out, "record")
		}
	}
	if _, ok := c.net.Lookup(id); ok {
		out = append(out, "network")
	}
	inPool := map[string]bool{}
	c.pool.mu.Lock()
	for _, sc := range c.pool.ready["host"] {
		inPool[sc.inst.ID()] = true
	}
	c.pool.mu.Unlock()
	for _, cid := range c.backend.ids() {
		if !inPool[cid] && !c.belongs(cid) {
			out = append(out, "container "+cid)
		}
	}
	for _, dir := range []string{filepath.Join(c.cfg.RunDir, "sandboxes"), filepath.Join(c.cfg.DataDir, "sandboxes")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !inPool[e.Name()] && !c.belongs(e.Name()) {
				out = append(out, "dir "+filepath.Join(dir, e.Name()))
			}
		}
	}
	return out
}

// belongs reports whether a container is some known sandbox's.
func (c *testCore) belongs(container string) bool {
	for _, sb := range c.List() {
		s, _ := c.lookup(sb.ID)
		if s.snapshot().container() == container {
			return true
		}
	}
	return false
}

func TestCreateBindsAndRemoveDestroys(t *testing.T) {
	c := newTestCore(t, 0)
	sb := c.create(api.CreateSandboxRequest{ID: "box", Env: map[string]string{"A": "1"}, Cwd: "/tmp", Labels: map[string]string{"team": "qa"}})
	if sb.Status != api.StatusRunning || sb.Network.IP == "" || sb.PID == 0 {
		t.Fatalf("created: %+v", sb)
	}
	s, _ := c.lookup("box")
	inst := c.backend.get(s.snapshot().container())
	host, cfg, _ := inst.agentConfig()
	if host != "box" || cfg.Hostname != "box" || cfg.Cwd != "/tmp" || cfg.Env["A"] != "1" {
		t.Errorf("bind: hostname %q, agent config %+v", host, cfg)
	}
	if got := c.List(); len(got) != 1 || got[0].ID != "box" || got[0].Labels["team"] != "qa" {
		t.Errorf("list: %+v", got)
	}
	if _, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "box"}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create with the id: %v", err)
	}
	if err := c.Remove("box", false); err != nil {
		t.Fatal(err)
	}
	if left := c.leftovers("box"); len(left) > 0 {
		t.Errorf("after remove: %v", left)
	}
	if err := c.Remove("box", false); !api.IsCode(err, api.CodeNotFound) {
		t.Errorf("remove again: %v", err)
	}
	// A request that found the sandbox before its remove ended holds it, removed: to the API
	// it is gone (Get, List and stats answered it with status "removed").
	if rec := s.snapshot(); rec.exists() || !api.IsCode(stateError("box", rec.Status, "try again"), api.CodeNotFound) {
		t.Errorf("a sandbox held across its remove, in state %q, is still shown", rec.Status)
	}
}

// A remove answers once the sandbox's processes are killed, before its network is detached
// (which waits for them to be dead); a create that takes the id again at once gets its network
// only after that detach, or, when it failed, after trying it again.
func TestRemoveAnswersBeforeTheNetworkGoes(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "box"})
	gate := make(chan struct{})
	c.net.mu.Lock()
	c.net.detachGate = gate
	c.net.mu.Unlock()
	removed := make(chan error, 1)
	go func() { removed <- c.Remove("box", true) }()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("the remove waited for the network's detach")
	}
	created := make(chan error, 1)
	go func() {
		_, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "box"})
		created <- err
	}()
	close(gate)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	c.net.mu.Lock()
	log := slices.Clone(c.net.log)
	c.net.mu.Unlock()
	if want := []string{"attach box", "detach box", "attach box"}; !slices.Equal(log, want) {
		t.Errorf("network calls %v, want %v", log, want)
	}
	if sb, err := c.Get("box"); err != nil || sb.Network.IP == "" {
		t.Errorf("the second box: %+v %v", sb, err)
	}

	// A detach that fails is tried again by the next create of the id, which fails if it
	// fails again (and is kept, failed, as a create whose teardown failed is).
	c.net.mu.Lock()
	c.net.detachGate, c.net.failDetach = nil, errors.New("no")
	c.net.mu.Unlock()
	if err := c.Remove("box", true); err != nil {
		t.Fatal(err)
	}
	c.retiring.Wait()
	if _, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "box"}); err == nil || !strings.Contains(err.Error(), "removed before under this id") {
		t.Errorf("a create while the old network stays: %v", err)
	}
	c.net.mu.Lock()
	c.net.failDetach = nil
	c.net.mu.Unlock()
	if err := c.Remove("box", true); err != nil {
		t.Fatal(err)
	}
	c.create(api.CreateSandboxRequest{ID: "box"})
	if err := c.Remove("box", true); err != nil {
		t.Fatal(err)
	}
	if left := c.leftovers("box"); len(left) > 0 {
		t.Errorf("after remove: %v", left)
	}
}

func TestCreateRollsBackEveryFailingStep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    api.CreateSandboxRequest
		break_ func(*testCore)
		code   string
	}{
		{"start fails", api.CreateSandboxRequest{}, func(c *testCore) {
			c.backend.set(func(b *fakeBackend) { b.failStart = errors.New("no container for you") })
		}, api.CodeInternal},
		{"agent never answers", api.CreateSandboxRequest{}, func(c *testCore) {
			c.backend.set(func(b *fakeBackend) { b.badAgent = true })
		}, api.CodeInternal},
		{"network fails", api.CreateSandboxRequest{}, func(c *testCore) {
			c.net.mu.Lock()
			c.net.failAttach = errors.New("no veth for you")
			c.net.mu.Unlock()
		}, api.CodeInternal},
		{"network refuses", api.CreateSandboxRequest{}, func(c *testCore) {
			c.net.mu.Lock()
			c.net.failAttach = fmt.Errorf("%w: no address left", sandboxnet.ErrConflict)
			c.net.mu.Unlock()
		}, api.CodeConflict},
		{"agent refuses the cwd", api.CreateSandboxRequest{Cwd: "/unusable"}, func(*testCore) {}, api.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCore(t, 0)
			tc.break_(c)
			tc.req.ID = "doomed"
			_, err := c.Create(context.Background(), tc.req)
			if !api.IsCode(err, tc.code) {
				t.Fatalf("create: %v, want %s", err, tc.code)
			}
			if left := c.leftovers("doomed"); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if len(c.backend.ids()) != 0 {
				t.Errorf("containers left: %v", c.backend.ids())
			}
		})
	}
}

// TestCreateWhoseClientGaveUpRollsBack: a client that gives up after the sandbox's agent has
// answered, while its network is attached (the last part of a cold create that used to heed no
// cancellation), gets an error, and the create leaves nothing: no sandbox runs that its client
// never learned of.
func TestCreateWhoseClientGaveUpRollsBack(t *testing.T) {
	c := newTestCore(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.net.mu.Lock()
	c.net.onAttach = func(string) {
		ids := c.backend.ids()
		if len(ids) != 1 {
			t.Errorf("containers while the network is attached: %v", ids)
			return
		}
		<-c.backend.get(ids[0]).answered // the agent has answered: only the network is left
		cancel()
	}
	c.net.mu.Unlock()
	if _, err := c.Create(ctx, api.CreateSandboxRequest{ID: "abandoned"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("create whose client gave up: %v, want context.Canceled", err)
	}
	if left := c.leftovers("abandoned"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if got := c.List(); len(got) != 0 {
		t.Errorf("sandboxes after the create whose client gave up: %+v", got)
	}
}

// A cold create hands the agent its configuration at its start, a warm one with PUT
// /v1/config: the agent refusing it fails the create the same way either way, and a warm
// container given to the failed sandbox goes with it.
func TestCreateWithConfigTheAgentRefuses(t *testing.T) {
	for _, warm := range []int{0, 1} {
		c := newTestCore(t, warm)
		c.waitPool(warm)
		var pooled []string
		c.pool.mu.Lock()
		for _, sc := range c.pool.ready["host"] {
			pooled = append(pooled, sc.inst.ID())
		}
		c.pool.mu.Unlock()
		_, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "doomed", Cwd: "/unusable"})
		if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "/unusable") {
			t.Fatalf("warm pool %d: create: %v, want the agent's invalid_argument", warm, err)
		}
		if left := c.leftovers("doomed"); len(left) > 0 {
			t.Errorf("warm pool %d: left behind: %v", warm, left)
		}
		for _, id := range pooled {
			if c.backend.get(id) != nil {
				t.Errorf("warm pool %d: the warm container %s that the failed create took is still there", warm, id)
			}
		}
		if starts := c.backend.startCount(); warm == 0 && starts != 1 {
			t.Errorf("a cold create that failed on its configuration started %d containers", starts)
		}
	}
}

func TestCreateWhoseCleanupFailsStaysFailed(t *testing.T) {
	c := newTestCore(t, 0)
	c.net.failAttach = errors.New("no veth")
	c.backend.failDestroy = errors.New("the container will not go")
	if _, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "stuck"}); !api.IsCode(err, api.CodeInternal) {
		t.Fatalf("create: %v", err)
	}
	sb, err := c.Get("stuck")
	if err != nil || sb.Status != api.StatusFailed || !strings.Contains(sb.Error, "will not go") {
		t.Fatalf("a create that could not clean up: %+v %v", sb, err)
	}
	// A remove frees the id at once and tears the container down in the background: what will
	// not go stays, without a record, until a daemon start destroys it.
	if err := c.Remove("stuck", true); err != nil {
		t.Fatalf("remove while destroy still fails: %v", err)
	}
	c.retiring.Wait()
	if len(c.backend.ids()) != 1 {
		t.Fatalf("the container that would not go: %v", c.backend.ids())
	}
	c.backend.set(func(b *fakeBackend) { b.failDestroy = nil })
	c.Close()
	c.open()
	if left := c.leftovers("stuck"); len(left) > 0 || len(c.backend.ids()) != 0 {
		t.Errorf("left behind after a restart: %v, containers %v", left, c.backend.ids())
	}
}

func TestWarmPool(t *testing.T) {
	c := newTestCore(t, 2)
	c.waitPool(2)
	c.pool.mu.Lock()
	var pooled []string
	for _, sc := range c.pool.ready["host"] {
		pooled = append(pooled, sc.inst.ID())
	}
	c.pool.mu.Unlock()
	warm := c.create(api.CreateSandboxRequest{ID: "warm"})
	// (The refill may start meanwhile: count nothing, look at the container it got.)
	if s, _ := c.lookup(warm.ID); !slices.Contains(pooled, s.snapshot().container()) {
		t.Errorf("a create with a full pool got container %s, not one of the pool's %v", s.snapshot().container(), pooled)
	}
	c.waitPool(2) // refilled
	// A pooled container whose agent died is discarded, never bound.
	c.pool.mu.Lock()
	dead := c.pool.ready["host"][0]
	c.pool.mu.Unlock()
	dead.inst.(*fakeInstance).exit()
	sb := c.create(api.CreateSandboxRequest{ID: "second"})
	s, _ := c.lookup(sb.ID)
	if got := s.snapshot().container(); got == dead.inst.ID() {
		t.Fatalf("bound the dead container %s", got)
	}
	if c.backend.get(dead.inst.ID()) != nil {
		t.Errorf("the dead pooled container was not destroyed")
	}
	// A create with its own limits binds a pooled container and sets them.
	c.waitPool(2)
	sb = c.create(api.CreateSandboxRequest{ID: "limited", Limits: api.Limits{MemoryMB: 32}})
	s, _ = c.lookup(sb.ID)
	if lim := c.backend.get(s.snapshot().container()).currentLimits(); lim.MemoryBytes != 32<<20 {
		t.Errorf("limits of a pooled container: %+v", lim)
	}
	c.waitPool(2)
	c.Close()
	for _, id := range []string{"warm", "second", "limited"} {
		s, _ := c.lookup(id)
		if c.backend.get(s.snapshot().container()) == nil {
			t.Errorf("Close destroyed sandbox %s's container", id)
		}
	}
	if n := len(c.backend.ids()); n != 3 {
		t.Errorf("after Close the backend holds %d containers, want the 3 sandboxes' (the pool's destroyed)", n)
	}
	c.open() // for the cleanup's Close
}

// TestWarmPoolFollowsDemand: creates that find the pool empty raise its target, the refill
// reaches it within the memory budget, and without demand it shrinks back to its base.
func TestWarmPoolFollowsDemand(t *testing.T) {
	c := newTestCore(t, 1)
	c.Close()
	c.cfg.WarmPoolMemoryMB = 4 // the fake's containers use 1 MB each
	c.open()
	c.waitPool(1)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Create(context.Background(), api.CreateSandboxRequest{ID: fmt.Sprintf("burst-%d", i)})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := c.pool.target("host")
	if want < 2 || want > 6 {
		t.Fatalf("after a burst of 6 creates on a pool of 1, its target is %d", want)
	}
	// The budget holds 4 MB: 4 containers (the next would need 5).
	c.waitPool(min(want, 4))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.pool.mu.Lock()
		filling := c.pool.filling["host"]
		c.pool.mu.Unlock()
		if !filling {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refill did not stop at the budget")
		}
	}
	if n := c.pool.readyCount("host"); n != min(want, 4) {
		t.Fatalf("the pool holds %d containers; want %d (target %d, budget 4 MB)", n, min(want, 4), want)
	}
	// No demand for a while: the target halves towards the base, the extra containers go.
	extra := c.pool.shrink(time.Now().Add(demandWindow))
	for _, sc := range extra {
		c.discard(sc)
		if c.backend.get(sc.inst.ID()) != nil {
			t.Errorf("a container taken out of the pool was not destroyed")
		}
	}
	if got := c.pool.target("host"); got != max(1, want/2) {
		t.Errorf("target after a quiet window: %d, want %d", got, max(1, want/2))
	}
	if n := c.pool.readyCount("host"); n > c.pool.target("host") {
		t.Errorf("the pool holds %d containers beyond its target %d", n, c.pool.target("host"))
	}
	for c.pool.target("host") > 1 {
		for _, sc := range c.pool.shrink(time.Now().Add(demandWindow)) {
			c.discard(sc)
		}
	}
	c.waitPool(1)
}

func TestReconcileAfterRestart(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "alive", Env: map[string]string{"K": "v"}})
	c.create(api.CreateSandboxRequest{ID: "dies"})
	c.create(api.CreateSandboxRequest{ID: "lost"})
	container := func(id string) string { s, _ := c.lookup(id); return s.snapshot().container() }
	alive, dies, lost := container("alive"), container("dies"), container("lost")
	c.Close()

	// While the daemon is down: an agent dies, a record is lost, a create was cut short, a
	// container was started for nobody, and a network lost its sandbox.
	c.backend.get(dies).exit()
	recs, _ := openRecords(filepath.Join(c.cfg.DataDir, "meta.db"))
	if err := recs.Delete("lost"); err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{"c-orphan", "c-half"} {
		spec := c.backend.get(alive).spec
		spec.ID = cid
		if _, err := c.backend.Start(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := recs.Insert(&record{Sandbox: api.Sandbox{ID: "half", Status: api.StatusCreating}, Container: "c-half"}); err != nil {
		t.Fatal(err)
	}
	recs.Close()

	c.open()
	if sb, err := c.Get("alive"); err != nil || sb.Status != api.StatusRunning {
		t.Errorf("alive: %+v %v", sb, err)
	}
	if _, _, env := c.backend.get(alive).agentConfig(); env["K"] != "v" {
		t.Errorf("the recorded env was not pushed again: %v", env)
	}
	if sb, err := c.Get("dies"); err != nil || sb.Status != api.StatusFailed || sb.Error == "" {
		t.Errorf("dies: %+v %v", sb, err)
	}
	for _, id := range []string{"lost", "half"} {
		if _, err := c.Get(id); !api.IsCode(err, api.CodeNotFound) {
			t.Errorf("%s: %v", id, err)
		}
	}
	for _, cid := range []string{lost, "c-orphan", "c-half"} {
		if c.backend.get(cid) != nil {
			t.Errorf("container %s of no sandbox survived reconcile", cid)
		}
	}
	if _, ok := c.net.Lookup("lost"); ok {
		t.Errorf("the network of a sandbox without a record survived reconcile")
	}
	if _, ok := c.net.Lookup("dies"); !ok {
		t.Errorf("a failed sandbox lost its network (it keeps it until removed)")
	}
	if err := c.Remove("dies", false); err != nil {
		t.Errorf("remove a failed sandbox: %v", err)
	}
}

func TestAgentExitFailsTheSandbox(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "box"})
	s, _ := c.lookup("box")
	c.backend.get(s.snapshot().container()).exit()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if sb, _ := c.Get("box"); sb.Status == api.StatusFailed {
			if !strings.Contains(sb.Error, "agent (PID 1) exited") {
				t.Errorf("reason: %q", sb.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox was not marked failed")
		}
	}
	if _, err := c.PatchEnv(context.Background(), "box", api.PatchEnvRequest{Set: map[string]string{"A": "1"}}); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "has failed") {
		t.Errorf("patch env of a failed sandbox: %v", err)
	}
}

func TestTransitions(t *testing.T) {
	c := newTestCore(t, 0)
	all := []string{"", api.StatusCreating, api.StatusRunning, api.StatusPaused, api.StatusStopping, api.StatusFailed, stateRemoved}
	allowed := map[[2]string]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			allowed[[2]string{from, to}] = true
		}
	}
	for _, from := range all[:len(all)-1] {
		for _, to := range all[1:] {
			sb := &sandbox{id: "t", rec: record{Sandbox: api.Sandbox{ID: "t", Status: from}}}
			if from != "" {
				_ = c.records.Put(&sb.rec)
			}
			got, err := c.transition(sb, to, nil)
			switch {
			case got != from:
				t.Errorf("%q → %q: reported from %q", from, to, got)
			case allowed[[2]string{from, to}] && err != nil:
				t.Errorf("%q → %q refused: %v", from, to, err)
			case !allowed[[2]string{from, to}] && (!api.IsCode(err, api.CodeConflict) || sb.rec.Status != from):
				t.Errorf("%q → %q: %v, state %q; want a conflict and no change", from, to, err, sb.rec.Status)
			case !allowed[[2]string{from, to}] && from != "" && !strings.Contains(err.Error(), from):
				t.Errorf("%q → %q: the conflict %q does not name the state", from, to, err)
			}
			_ = c.records.Delete("t")
		}
	}
	// What is written: durable states are in the records, stopping is not, removed deletes.
	sb := &sandbox{id: "d", rec: record{Sandbox: api.Sandbox{ID: "d"}}}
	for _, step := range []struct{ to, recorded string }{
		{api.StatusCreating, api.StatusCreating}, {api.StatusRunning, api.StatusRunning},
		{api.StatusStopping, api.StatusRunning}, {api.StatusFailed, api.StatusFailed}, {api.StatusStopping, api.StatusFailed}, {stateRemoved, ""},
	} {
		if _, err := c.transition(sb, step.to, nil); err != nil {
			t.Fatalf("→ %s: %v", step.to, err)
		}
		recs, _ := c.records.List()
		got := ""
		for _, rec := range recs {
			if rec.ID == "d" {
				got = rec.Status
			}
		}
		if got != step.recorded {
			t.Errorf("after → %s the record says %q, want %q", step.to, got, step.recorded)
		}
	}
}

func TestRequestsRefusedByState(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "box"})
	s, _ := c.lookup("box")
	for _, state := range []string{api.StatusCreating, api.StatusStopping} {
		s.mu.Lock()
		s.rec.Status = state
		s.mu.Unlock()
		checks := map[string]error{
			"remove":  c.Remove("box", true),
			"network": func() error { _, err := c.SetNetwork("box", api.NetworkSpec{Mode: api.NetworkNone}); return err }(),
			"env": func() error {
				_, err := c.PatchEnv(context.Background(), "box", api.PatchEnvRequest{Unset: []string{"X"}})
				return err
			}(),
			"running": func() error { _, err := c.running("box"); return err }(),
		}
		for what, err := range checks {
			if !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), state) {
				t.Errorf("%s while %s: %v, want a conflict naming the state", what, state, err)
			}
		}
	}
	s.mu.Lock()
	s.rec.Status = api.StatusRunning
	s.mu.Unlock()
}

func TestConcurrentRequestsOnOneSandbox(t *testing.T) {
	c := newTestCore(t, 0)
	// Creates of one id: one wins, the others are conflicts.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = c.Create(context.Background(), api.CreateSandboxRequest{ID: "one"}) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !api.IsCode(err, api.CodeConflict):
			t.Errorf("a losing create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates of one id succeeded", won)
	}
	// Env patches of one sandbox: each reads what the one before it recorded.
	for i := range 16 {
		wg.Go(func() {
			if _, err := c.PatchEnv(context.Background(), "one", api.PatchEnvRequest{Set: map[string]string{fmt.Sprintf("V%d", i): "x"}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	sb, _ := c.Get("one")
	s, _ := c.lookup("one")
	_, _, agentEnv := c.backend.get(s.snapshot().container()).agentConfig()
	if len(sb.Env) != 16 || len(agentEnv) != 16 {
		t.Errorf("after 16 concurrent patches: record %d vars, agent %d", len(sb.Env), len(agentEnv))
	}
	// A remove in progress: reads go on, every other change is refused, one remove wins.
	gate := make(chan struct{})
	c.backend.set(func(b *fakeBackend) { b.killGate = gate })
	removed := make(chan error, 1)
	go func() { removed <- c.Remove("one", true) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if sb, _ := c.Get("one"); sb != nil && sb.Status == api.StatusStopping {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox never showed stopping")
		}
	}
	if got := c.List(); len(got) != 1 || got[0].Status != api.StatusStopping {
		t.Errorf("list while removing: %+v", got)
	}
	if err := c.Remove("one", true); !api.IsCode(err, api.CodeConflict) {
		t.Errorf("a second remove: %v", err)
	}
	if _, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "one"}); !api.IsCode(err, api.CodeConflict) {
		t.Errorf("a create while removing: %v", err)
	}
	close(gate)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if left := c.leftovers("one"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if !slices.Equal(c.net.Sandboxes(), nil) {
		t.Errorf("networks left: %v", c.net.Sandboxes())
	}
}

func TestPauseResume(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "box"})
	sb, err := c.Pause("box")
	if err != nil || sb.Status != api.StatusPaused {
		t.Fatalf("pause: %+v %v", sb, err)
	}
	s, _ := c.lookup("box")
	inst := c.backend.get(s.snapshot().container())
	if !inst.isFrozen() {
		t.Error("pause did not freeze the container")
	}
	if _, err := c.Pause("box"); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "paused") {
		t.Errorf("pause of a paused sandbox: %v", err)
	}
	c.Close()
	c.open() // a paused sandbox stays paused across a restart, though its agent cannot answer
	if sb, _ := c.Get("box"); sb.Status != api.StatusPaused {
		t.Errorf("after a restart: %s", sb.Status)
	}
	if sb, err := c.Resume("box"); err != nil || sb.Status != api.StatusRunning || inst.isFrozen() {
		t.Fatalf("resume: %+v %v", sb, err)
	}
	if _, err := c.Resume("box"); !api.IsCode(err, api.CodeConflict) || !strings.Contains(err.Error(), "running") {
		t.Errorf("resume of a running sandbox: %v", err)
	}
	if _, err := c.Pause("box"); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove("box", false); err != nil || inst.isFrozen() {
		t.Errorf("remove a paused sandbox: %v (frozen: %v)", err, inst.isFrozen())
	}
}

// TestResumeFromHibernationRollsBack: a resume whose network cannot be reattached (done while
// the agent starts) leaves the sandbox hibernated, with no container; the next resume brings it
// back with its sessions' state.
func TestResumeFromHibernationRollsBack(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "hb"})
	if sb, err := c.Hibernate(context.Background(), "hb", api.HibernateRequest{}); err != nil || sb.Status != api.StatusHibernated {
		t.Fatalf("hibernate: %+v %v", sb, err)
	}
	c.net.mu.Lock()
	c.net.failAttach = errors.New("no veth")
	c.net.mu.Unlock()
	if _, err := c.Resume("hb"); !api.IsCode(err, api.CodeInternal) || !strings.Contains(err.Error(), "no veth") {
		t.Fatalf("resume with a failing network: %v", err)
	}
	if sb, _ := c.Get("hb"); sb.Status != api.StatusHibernated {
		t.Errorf("after a failed resume: %s", sb.Status)
	}
	if ids := c.backend.ids(); len(ids) != 0 {
		t.Errorf("containers left by the failed resume: %v", ids)
	}
	c.net.mu.Lock()
	c.net.failAttach = nil
	c.net.mu.Unlock()
	sb, err := c.Resume("hb")
	if err != nil || sb.Status != api.StatusRunning {
		t.Fatalf("resume: %+v %v", sb, err)
	}
	s, _ := c.lookup("hb")
	inst := c.backend.get(s.snapshot().container())
	inst.mu.Lock()
	restored := inst.restored
	inst.mu.Unlock()
	if len(restored.Sessions) != 1 || restored.Sessions[0].Script != "cd /tmp" {
		t.Errorf("the resumed agent got %+v", restored)
	}
}

func TestRequestsResumeAPausedSandbox(t *testing.T) {
	c := newTestCore(t, 0)
	c.create(api.CreateSandboxRequest{ID: "box"})
	if _, err := c.Pause("box"); err != nil {
		t.Fatal(err)
	}
	if sb, _ := c.Get("box"); sb.Status != api.StatusPaused {
		t.Fatalf("GET woke the sandbox: %s", sb.Status)
	}
	if _, err := c.PatchEnv(context.Background(), "box", api.PatchEnvRequest{Set: map[string]string{"A": "1"}}); err != nil {
		t.Fatalf("a request to a paused sandbox: %v", err)
	}
	s, _ := c.lookup("box")
	if sb, _ := c.Get("box"); sb.Status != api.StatusRunning || c.backend.get(s.snapshot().container()).isFrozen() {
		t.Errorf("after a request: %s", sb.Status)
	}
}

func TestLifecycles(t *testing.T) {
	c := newTestCore(t, 0)
	for _, bad := range []api.Lifecycle{{IdleSeconds: -1}, {TTLSeconds: -1}, {IdleSeconds: 1, OnIdle: "sleep"}} {
		if _, err := c.Create(context.Background(), api.CreateSandboxRequest{Lifecycle: &bad}); !api.IsCode(err, api.CodeInvalidArgument) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	sb := c.create(api.CreateSandboxRequest{ID: "nap", Lifecycle: &api.Lifecycle{IdleSeconds: 1}})
	if sb.Lifecycle == nil || sb.Lifecycle.OnIdle != api.OnIdlePause {
		t.Errorf("lifecycle: %+v", sb.Lifecycle)
	}
	c.create(api.CreateSandboxRequest{ID: "gone", Lifecycle: &api.Lifecycle{IdleSeconds: 1, OnIdle: api.OnIdleRemove}})
	c.create(api.CreateSandboxRequest{ID: "old", Lifecycle: &api.Lifecycle{TTLSeconds: 2}})
	c.create(api.CreateSandboxRequest{ID: "busy", Lifecycle: &api.Lifecycle{IdleSeconds: 1}})
	done := c.busy("busy") // a request in progress, as a long exec is
	defer done()
	c.create(api.CreateSandboxRequest{ID: "plain"})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		nap, _ := c.Get("nap")
		_, goneErr := c.Get("gone")
		_, oldErr := c.Get("old")
		if nap.Status == api.StatusPaused && api.IsCode(goneErr, api.CodeNotFound) && api.IsCode(oldErr, api.CodeNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: nap %s, gone %v, old %v", nap.Status, goneErr, oldErr)
		}
	}
	// Removed by the idle loop: what a sandbox seen gone had is gone once its teardown, which
	// leftovers waits for, ends (retire counts it before the sandbox is seen gone).
	for _, id := range []string{"gone", "old"} {
		if left := c.leftovers(id); len(left) > 0 {
			t.Errorf("%s left behind: %v", id, left)
		}
	}
	for _, id := range []string{"busy", "plain"} {
		if sb, err := c.Get(id); err != nil || sb.Status != api.StatusRunning {
			t.Errorf("%s: %+v %v", id, sb, err)
		}
	}
	if _, err := c.running("nap"); err != nil {
		t.Fatalf("a request to a sandbox paused when idle: %v", err)
	}
	if sb, _ := c.Get("nap"); sb.Status != api.StatusRunning {
		t.Errorf("a request did not resume it: %s", sb.Status)
	}
}

// TestViewsOfAStartDuringAnLXCFSRestart: a container whose start overlaps an LXCFS restart
// gets the new LXCFS's views, though the restart rebound every container before this one was
// a sandbox's; a start with no restart meanwhile is bound once.
func TestViewsOfAStartDuringAnLXCFSRestart(t *testing.T) {
	c := newTestCore(t, 0)
	c.views = &limitViews{dir: "/lxcfs-1", gen: 1} // no LXCFS of its own to stop
	t.Cleanup(func() { c.views = nil })
	gate := make(chan struct{})
	c.backend.mu.Lock()
	c.backend.healthGate = gate
	c.backend.mu.Unlock()
	created := make(chan error, 1)
	go func() {
		_, err := c.Create(context.Background(), api.CreateSandboxRequest{ID: "box"})
		created <- err
	}()
	// The container runs, has the first LXCFS's views, and its agent has not answered yet.
	var inst *fakeInstance
	for deadline := time.Now().Add(10 * time.Second); inst == nil || len(inst.shownViews()) == 0; time.Sleep(time.Millisecond) {
		if ids := c.backend.ids(); len(ids) == 1 {
			inst = c.backend.get(ids[0])
		}
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("the container's start never bound the views")
		}
	}
	c.publishViews("/lxcfs-2") // LXCFS restarted: the box is nobody's yet
	c.backend.mu.Lock()
	c.backend.healthGate = nil
	c.backend.mu.Unlock()
	close(gate)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if got := inst.shownViews(); len(got) == 0 || got[len(got)-1] != "/lxcfs-2" {
		t.Errorf("a start during an LXCFS restart was given the views of %v, want the new LXCFS's last", got)
	}
	c.create(api.CreateSandboxRequest{ID: "other"})
	sb, err := c.lookup("other")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.backend.get(sb.snapshot().Container).shownViews(); !slices.Equal(got, []string{"/lxcfs-2"}) {
		t.Errorf("a start with no restart was given the views of %v, want /lxcfs-2 once", got)
	}
}

// TestFailedDetachIsRetried: a removed sandbox's network whose detach failed is detached again
// in the background once it can be, with no create of its id; while it cannot, the retries go
// on, and a closing daemon ends them.
func TestFailedDetachIsRetried(t *testing.T) {
	c := newTestCore(t, 0)
	// removeFailing creates a sandbox and removes it while every detach fails.
	removeFailing := func(id string) {
		c.create(api.CreateSandboxRequest{ID: id})
		c.net.mu.Lock()
		c.net.failDetach = errors.New("no")
		c.net.mu.Unlock()
		if err := c.Remove(id, true); err != nil {
			t.Fatal(err)
		}
		c.retiring.Wait()
	}
	removeFailing("box")
	time.Sleep(3 * releaseRetry) // a retry or two, failing
	attached := func() bool {
		c.net.mu.Lock()
		defer c.net.mu.Unlock()
		_, ok := c.net.attached["box"]
		return ok
	}
	if !attached() {
		t.Fatal("the network went though every detach failed")
	}
	c.net.mu.Lock()
	c.net.failDetach = nil
	c.net.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); attached(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a failed detach was not retried")
		}
	}
	c.releasingMu.Lock()
	left := len(c.releasing)
	c.releasingMu.Unlock()
	if left != 0 {
		t.Errorf("%d releases left registered after the retry", left)
	}

	// A retry that never succeeds ends with the daemon.
	removeFailing("box2")
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a detach that keeps failing")
	}
	c.open() // for the test's cleanup, which closes it
}
