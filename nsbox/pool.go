package nsbox

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/rootfs"
)

// The warm pool keeps a few containers started ahead of time, per image, with the default
// limits and an agent that answers. A create that fits takes one and only binds it (attach:
// hostname, limits, network; bindAgent: environment, working directory), which takes a few
// milliseconds instead of a whole container start; the pool refills in the background. Containers in the pool have
// no record: if the daemon dies, the next one destroys them in reconcile like any container
// that belongs to no sandbox, and a clean shutdown (Close) destroys them.
//
// Its size follows demand. Each image keeps at least its base (--warm-pool IMAGE=N); every
// create that finds the image's pool empty raises the image's target by one, up to
// maxWarmPerImage and as long as the ready containers of all images fit the memory budget
// (--warm-pool-memory); once an image has had no miss for demandWindow, its target halves
// every demandWindow back to the base and the containers beyond it are destroyed.
type warmPool struct {
	base   map[string]int // image → the least to keep ready (--warm-pool)
	budget int64          // bytes the ready containers of all images may use beyond the bases; 0: no growth

	mu       sync.Mutex
	want     map[string]int // image → how many to keep ready now (base ≤ want)
	lastMiss map[string]time.Time
	ready    map[string][]*startedContainer
	filling  map[string]bool // a refill goroutine runs for the image
	// lastTake is when a container was last taken (unix ns), for waitAfterTake.
	lastTake atomic.Int64
	closed   bool
	wg       sync.WaitGroup
	stop     context.CancelFunc
	ctx      context.Context
}

// maxWarmPerImage bounds an image's pool whatever the demand; demandWindow is how long after
// its last miss an image's pool starts shrinking, and how often it halves then.
const (
	maxWarmPerImage = 128
	demandWindow    = 2 * time.Minute
)

func newWarmPool(base map[string]int, budgetMB int64) *warmPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &warmPool{base: base, budget: budgetMB << 20, want: maps.Clone(base), lastMiss: map[string]time.Time{},
		ready: map[string][]*startedContainer{}, filling: map[string]bool{}, ctx: ctx, stop: cancel}
}

// takeWarm returns a started container of img from the warm pool for a new sandbox made with
// st, or nil: the pool has none whose agent still runs, or the sandbox needs storage of its
// own beyond the default disk (the create then starts one; bind applies the limits to a warm
// one). Either way the pool refills.
func (r *Runtime) takeWarm(img *rootfs.Image, st extrasSpec) *startedContainer {
	if !r.pooled(st) {
		return nil
	}
	defer r.refill(img)
	for sc := r.pool.take(img.Name); sc != nil; sc = r.pool.take(img.Name) {
		if sc.inst.Alive() {
			r.ops.metrics.poolTake.WithLabelValues(img.Name, "hit").Inc()
			return sc
		}
		r.log.Warn("warm pool: its agent has exited; discarding the container", "container", sc.inst.ID())
		r.discard(sc)
	}
	r.ops.metrics.poolTake.WithLabelValues(img.Name, "miss").Inc()
	r.pool.missed(img.Name)
	return nil
}

// take removes a ready container of the image from the pool, or returns nil.
func (p *warmPool) take(image string) *startedContainer {
	p.mu.Lock()
	defer p.mu.Unlock()
	ready := p.ready[image]
	if len(ready) == 0 {
		return nil
	}
	sc := ready[0]
	p.ready[image] = ready[1:]
	p.lastTake.Store(time.Now().UnixNano())
	return sc
}

// burstWindow is how recent a miss of an empty pool makes its refill start at once.
const burstWindow = time.Second

// bursting reports whether creates of the image come faster than its pool: it is empty and
// one missed it within burstWindow.
func (p *warmPool) bursting(image string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[image]) == 0 && time.Since(p.lastMiss[image]) < burstWindow
}

// missed raises an image's target after a create found its pool empty.
func (p *warmPool) missed(image string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, pooled := p.base[image]; !pooled || p.budget == 0 {
		return
	}
	p.want[image] = min(p.want[image]+1, maxWarmPerImage)
	p.lastMiss[image] = time.Now()
}

// target is how many containers of the image the pool keeps ready now.
func (p *warmPool) target(image string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want[image]
}

// readyCount is how many containers of the image are ready.
func (p *warmPool) readyCount(image string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[image])
}

// containers are the pool's ready containers, of every image.
func (p *warmPool) containers() []*startedContainer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*startedContainer
	for _, ready := range p.ready {
		out = append(out, ready...)
	}
	return out
}

// refill starts containers of img in the background until the pool holds as many as it
// should. One goroutine per image does it, one container at a time. It starts one only
// refillDelay after the last take: a container start is 20-30 ms of CPU, which would otherwise
// slow down the very sandbox that was just taken, while its first commands run. During a burst
// (the image's pool is empty and a create missed it within burstWindow) it refills at once.
func (r *Runtime) refill(img *rootfs.Image) {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.filling[img.Name] || len(p.ready[img.Name]) >= p.want[img.Name] {
		return
	}
	p.filling[img.Name] = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			if !r.needsContainer(img.Name) {
				return
			}
			if !p.bursting(img.Name) && !p.waitAfterTake(p.ctx) {
				continue // closed meanwhile
			}
			sc, err := r.startContainer(p.ctx, img, r.defaultLimits, r.poolExtras())
			if err != nil {
				r.log.Error("warm pool: start container", "image", img.Name, "err", err)
				p.mu.Lock()
				p.filling[img.Name] = false
				p.mu.Unlock()
				return
			}
			// Its default session starts now (asking for it starts it), so that the first
			// command of the sandbox that takes the container does not wait for a shell.
			if _, err := sc.agent.getSession(p.ctx, api.DefaultSessionID); err != nil {
				r.log.Debug("warm pool: no default session ahead", "container", sc.inst.ID(), "err", err)
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				r.discard(sc)
				continue
			}
			p.ready[img.Name] = append(p.ready[img.Name], sc)
			p.mu.Unlock()
			r.recheckViews(sc)
		}
	}()
}

// needsContainer reports whether the image's refill should start another container: fewer are
// ready than its target, and beyond its base the ready containers of every image (each
// counted at what its cgroup uses) leave room in the budget for one more of their average
// size. When it says no, it ends the refill (filling is cleared under the same lock).
func (r *Runtime) needsContainer(image string) bool {
	p := r.pool
	p.mu.Lock()
	ready, want, base := len(p.ready[image]), p.want[image], p.base[image]
	var all []*startedContainer
	if !p.closed && ready < want && ready >= base {
		for _, list := range p.ready {
			all = append(all, list...)
		}
	}
	p.mu.Unlock()
	more := ready < want
	if more && len(all) > 0 {
		var used int64
		for _, sc := range all {
			if st, err := sc.inst.Stats(); err == nil {
				used += int64(st.MemoryBytes)
			}
		}
		more = used+used/int64(len(all)) <= p.budget
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !more {
		p.filling[image] = false
		return false
	}
	return true
}

// refillDelay is how long after a container was taken from the pool its refill waits.
const refillDelay = 50 * time.Millisecond

// waitAfterTake waits until no container was taken from the pool for refillDelay. It returns
// false when ctx ends first.
func (p *warmPool) waitAfterTake(ctx context.Context) bool {
	for {
		since := time.Since(time.Unix(0, p.lastTake.Load()))
		if since >= refillDelay {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(refillDelay - since):
		}
	}
}

// fillPool starts filling the pool for every image it keeps, and its shrinking.
func (r *Runtime) fillPool() error {
	r.shrinkPool()
	for name := range r.pool.base {
		img, err := r.images.Get(name)
		if err != nil {
			return fmt.Errorf("warm pool: %w", err)
		}
		r.refill(img)
	}
	return nil
}

// shrinkPool halves, every demandWindow, the target of each image that had no miss in the
// last demandWindow (never below its base), and destroys the ready containers beyond it.
func (r *Runtime) shrinkPool() {
	p := r.pool
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(demandWindow)
		defer tick.Stop()
		for {
			select {
			case <-p.ctx.Done():
				return
			case now := <-tick.C:
				for _, sc := range p.shrink(now) {
					r.discard(sc)
				}
			}
		}
	}()
}

// shrink lowers the targets of images without recent demand and takes out the containers
// beyond them, for the caller to destroy.
func (p *warmPool) shrink(now time.Time) []*startedContainer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var extra []*startedContainer
	for image, want := range p.want {
		if want <= p.base[image] || now.Sub(p.lastMiss[image]) < demandWindow {
			continue
		}
		p.want[image] = max(p.base[image], want/2)
		if ready := p.ready[image]; len(ready) > p.want[image] {
			extra = append(extra, ready[p.want[image]:]...)
			p.ready[image] = ready[:p.want[image]]
		}
	}
	return extra
}

// drainPool stops refilling and destroys every container in the pool.
func (r *Runtime) drainPool() {
	p := r.pool
	p.mu.Lock()
	p.closed = true
	p.stop()
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	var all []*startedContainer
	for img, ready := range p.ready {
		all = append(all, ready...)
		delete(p.ready, img)
	}
	p.mu.Unlock()
	for _, sc := range all {
		r.discard(sc)
	}
}

// discard destroys a started container that no sandbox will have.
func (r *Runtime) discard(sc *startedContainer) {
	if err := r.destroyContainer(sc.inst); err != nil {
		r.log.Error("destroy unused container", "container", sc.inst.ID(), "err", err)
	}
	r.forgetContainerAgent(sc.agent)
}
