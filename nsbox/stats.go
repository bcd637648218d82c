package nsbox

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/api/httpapi"
	sandboxnet "github.com/nsbox/nsbox/net"
	"github.com/nsbox/nsbox/nsbox/backend"
)

// Stats: a sandbox's resource use is read when it is asked for, from its cgroup (through the
// backend: CPU, memory, pids, OOM kills), its host veth's counters (package net) and its disk's
// file system; its open sessions and running processes are the counts its agent last told the
// daemon (agentwatch.go), or, while it has not, asked of the agent. CPU percent is the use
// since the previous reading of the same sandbox, kept on the sandbox (reading) with the OOM
// kills published; those are published as events when the backend notifies them (watchOOMs).

// statsParallel bounds the agents asked at once for their counts by GET /v1/stats.
const statsParallel = 16

// ops is what the daemon keeps for its operators: the event log, the metrics, and the
// watches of the agents.
type ops struct {
	events  *eventLog
	metrics *metrics
	mu      sync.Mutex
	follows map[string]*agentFollow // by sandbox id
}

// reading is what the daemon keeps of a sandbox's use: its CPU time at the last reading, and
// the OOM kills published; checking: an oomNotified is looking at the count, again: a
// notification came meanwhile.
type reading struct {
	mu              sync.Mutex
	cpu             uint64
	at              time.Time
	ooms            uint64
	checking, again bool
}

func newOps(r *Runtime) *ops {
	o := &ops{events: newEventLog(), follows: map[string]*agentFollow{}}
	o.metrics = newMetrics(r)
	return o
}

// statsOf is what a reading of a sandbox needs, copied under its lock.
type statsOf struct {
	sb    *sandbox
	inst  backend.Instance
	agent *agentClient
	rec   record
}

func (sb *sandbox) statsOf() statsOf {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return statsOf{sb: sb, inst: sb.inst, agent: sb.agent, rec: sb.rec}
}

// Stats reads one sandbox's resource use.
func (r *Runtime) Stats(ctx context.Context, id string) (*api.SandboxStats, error) {
	sb, err := r.lookup(id)
	if err != nil {
		return nil, err
	}
	s := sb.statsOf()
	if !s.rec.exists() {
		return nil, api.Errorf(api.CodeNotFound, "sandbox %q not found", id)
	}
	st := r.readStats(s, statsRead{sample: true})
	if !r.countInside(s, &st) {
		r.askInside(ctx, s, &st)
	}
	return &st, nil
}

// AllStats reads every sandbox's resource use, ordered by id.
func (r *Runtime) AllStats(ctx context.Context) []api.SandboxStats {
	var of []statsOf
	for _, sb := range r.all() {
		if s := sb.statsOf(); s.rec.exists() {
			of = append(of, s)
		}
	}
	slices.SortFunc(of, func(a, b statsOf) int { return strings.Compare(a.rec.ID, b.rec.ID) })
	out := make([]api.SandboxStats, len(of))
	var wg sync.WaitGroup
	sem := make(chan struct{}, statsParallel)
	how := r.bulkRead(true)
	for i, s := range of {
		out[i] = r.readStats(s, how)
		if r.countInside(s, &out[i]) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.askInside(ctx, s, &out[i])
		})
	}
	wg.Wait()
	return out
}

// statsRead is how readStats reads. With sample, the reading is the one the next CPU percent
// is measured from; without (a metrics scrape), CPU percent is left 0. veths, when not nil,
// are every interface's counters read at once (bulkRead), else each veth's are read alone.
type statsRead struct {
	sample bool
	veths  map[string]sandboxnet.Counters
}

// bulkRead is how to read many sandboxes' stats: every veth's counters in one read.
func (r *Runtime) bulkRead(sample bool) statsRead {
	veths, err := sandboxnet.AllVethCounters()
	if err != nil {
		r.log.Warn("read the veths' counters", "err", err)
	}
	return statsRead{sample: sample, veths: veths}
}

// readStats reads what the host knows of a sandbox's use: its cgroup, its veth, its disk. A
// sandbox that is not running or paused (or whose cgroup cannot be read, as its container is
// going) has zero figures.
func (r *Runtime) readStats(s statsOf, how statsRead) api.SandboxStats {
	now := time.Now()
	st := api.SandboxStats{ID: s.rec.ID, Image: s.rec.Image, Status: s.rec.Status, Time: now.UTC()}
	if s.inst == nil || (s.rec.Status != api.StatusRunning && s.rec.Status != api.StatusPaused) {
		return st
	}
	cg, err := s.inst.Stats()
	if err != nil {
		r.log.Debug("read sandbox stats", "sandbox", s.rec.ID, "err", err)
		return st
	}
	st.CPUSeconds = float64(cg.CPUNanos) / 1e9
	st.MemoryBytes, st.MemoryLimitBytes, st.Pids, st.OOMKills = cg.MemoryBytes, cg.MemoryLimit, cg.Pids, cg.OOMKills
	if how.sample {
		prevCPU, prevAt := s.sb.reading.sample(cg.CPUNanos, now)
		if prevAt.IsZero() {
			prevAt = s.rec.CreatedAt
		}
		if dt := now.Sub(prevAt).Seconds(); dt > 0 && cg.CPUNanos >= prevCPU {
			st.CPUPercent = float64(cg.CPUNanos-prevCPU) / 1e9 / dt * 100
		}
	}
	if a, ok := r.net.Lookup(s.rec.ID); ok && a.HostVeth != "" {
		c, ok := how.veths[a.HostVeth]
		if how.veths == nil {
			c, err = sandboxnet.VethCounters(a.HostVeth)
			ok = err == nil
		}
		if ok {
			st.Network = api.NetworkStats{RxBytes: c.RxBytes, RxPackets: c.RxPackets, TxBytes: c.TxBytes, TxPackets: c.TxPackets}
		}
	}
	if s.rec.Limits.DiskMB > 0 {
		var fs unix.Statfs_t
		if err := unix.Statfs(r.diskMount(s.rec.container()), &fs); err == nil {
			st.DiskLimitBytes = fs.Blocks * uint64(fs.Bsize)
			st.DiskUsedBytes = (fs.Blocks - fs.Bfree) * uint64(fs.Bsize)
		}
	}
	return st
}

// sample records a sandbox's CPU time at a moment and returns the one before (zero: none).
func (g *reading) sample(cpu uint64, at time.Time) (prevCPU uint64, prevAt time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	prevCPU, prevAt = g.cpu, g.at
	g.cpu, g.at = cpu, at
	return prevCPU, prevAt
}

// countInside sets a running sandbox's open sessions and running processes to the counts its
// agent last told the daemon; false when it has not (its watch stream is not open), and the
// sandbox runs: then askInside can.
func (r *Runtime) countInside(s statsOf, st *api.SandboxStats) bool {
	if s.rec.Status != api.StatusRunning || s.agent == nil {
		return true
	}
	c := r.ops.countsOf(s.rec.ID, s.inst)
	if c == nil {
		return false
	}
	st.Sessions, st.Processes = &c.sessions, &c.processes
	return true
}

// askInside sets a running sandbox's open sessions and running processes as its agent answers
// them.
func (r *Runtime) askInside(ctx context.Context, s statsOf, st *api.SandboxStats) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if sessions, err := s.agent.listSessions(ctx); err == nil {
		n := 0
		for _, ss := range sessions {
			if ss.Status != api.SessionEnded {
				n++
			}
		}
		st.Sessions = &n
	}
	if procs, err := s.agent.listProcesses(ctx, url.Values{"status": {api.ProcessRunning}}); err == nil {
		n := len(procs)
		st.Processes = &n
	}
}

// watchOOMs publishes an event each time the kernel's OOM killer kills processes of the
// sandbox's container inst, from the backend's notification. The kills counted before the
// backend began to watch the container (one that ran under an earlier daemon) are not news.
func (r *Runtime) watchOOMs(sb *sandbox, inst backend.Instance) {
	// Under the reading's lock: a notification waits for the count it is measured from.
	sb.reading.mu.Lock()
	defer sb.reading.mu.Unlock()
	before, err := inst.OnOOM(func() { r.oomNotified(sb, inst) })
	if err != nil {
		r.log.Warn("OOM kills in this sandbox will not be published as events", "sandbox", sb.id, "err", err)
		return
	}
	sb.reading.ooms = before
}

// oomRechecks are the waits between the looks at a sandbox's OOM kill count after a
// notification, until it has grown: cgroup v1 notifies as the OOM begins, before the OOM
// killer has killed (and counted) anything.
var oomRechecks = []time.Duration{0, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, 5 * time.Second}

// oomNotified publishes how many more processes of the sandbox the OOM killer killed than
// it published before, once the count has grown (oomRechecks). One looks at a time: the
// notifications that come meanwhile (a sandbox can make many, fast) make it look once more.
func (r *Runtime) oomNotified(sb *sandbox, inst backend.Instance) {
	g := &sb.reading
	g.mu.Lock()
	if g.checking {
		g.again = true
		g.mu.Unlock()
		return
	}
	g.checking = true
	for {
		g.again = false
		g.mu.Unlock()
		for _, wait := range oomRechecks {
			time.Sleep(wait)
			if published, err := r.publishOOMs(sb, inst); published || err != nil {
				break // err: the container is going
			}
		}
		g.mu.Lock()
		if !g.again {
			g.checking = false
			g.mu.Unlock()
			return
		}
	}
}

// publishOOMs publishes the OOM kills of inst, sb's container, that are news; false when
// there are none.
func (r *Runtime) publishOOMs(sb *sandbox, inst backend.Instance) (bool, error) {
	kills, err := inst.OOMKills()
	if err != nil {
		return false, err
	}
	sb.reading.mu.Lock()
	seen := sb.reading.ooms
	sb.reading.ooms = max(seen, kills)
	sb.reading.mu.Unlock()
	if kills <= seen {
		return false, nil
	}
	n := kills - seen
	r.ops.metrics.oomKills.Add(float64(n))
	r.log.Warn("the kernel's OOM killer killed processes in a sandbox", "sandbox", sb.id, "count", n, "memory_limit_mb", sb.snapshot().Limits.MemoryMB)
	r.ops.events.publish(api.EventSandboxOOMKilled, sb.id, "count", strconv.FormatUint(n, 10), "total", strconv.FormatUint(kills, 10))
	return true, nil
}

func (r *Runtime) handleStats(w http.ResponseWriter, req *http.Request) error {
	id := req.PathValue("id")
	stream, err := streamParam(req)
	if err != nil {
		return err
	}
	if !stream {
		st, err := r.Stats(req.Context(), id)
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, st)
		return nil
	}
	if _, err := r.Stats(req.Context(), id); err != nil {
		return err // a sandbox that does not exist is a 404, not a stream
	}
	return streamStats(w, req, func() (any, error) { return r.Stats(req.Context(), id) })
}

func (r *Runtime) handleAllStats(w http.ResponseWriter, req *http.Request) error {
	stream, err := streamParam(req)
	if err != nil {
		return err
	}
	if !stream {
		httpapi.WriteJSON(w, http.StatusOK, r.AllStats(req.Context()))
		return nil
	}
	return streamStats(w, req, func() (any, error) { return r.AllStats(req.Context()), nil })
}

// streamParam reads ?stream=.
func streamParam(req *http.Request) (bool, error) {
	v := req.URL.Query().Get("stream")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, api.Errorf(api.CodeInvalidArgument, "stream must be true or false (or 1 or 0), got %q", v)
	}
	return b, nil
}

// statsEvent is the Server-Sent Event name of each reading of a stats stream.
const statsEvent = "stats"

// streamStats sends read's answer as a "stats" event at once and then every second, until
// the client goes away or read fails (an "error" event: the sandbox was removed).
func streamStats(w http.ResponseWriter, req *http.Request, read func() (any, error)) error {
	out := httpapi.NewSSEWriter(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		v, err := read()
		if err != nil {
			_ = out.SendError(err)
			return nil
		}
		if out.Send(statsEvent, v) != nil {
			return nil
		}
		select {
		case <-req.Context().Done():
			endOfStream(req.Context(), out)
			return nil
		case <-tick.C:
		}
	}
}
