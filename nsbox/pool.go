package nsbox

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsbox/nsbox/nsbox/backend"
	"github.com/nsbox/nsbox/rootfs"
)

// The warm pool keeps a few containers started ahead of time, per image, with the default
// limits and an agent that answers. A create that fits takes one and only binds it (bind:
// hostname, limits, environment, working directory), which takes about a millisecond instead
// of a whole container start; the pool refills in the background. Containers in the pool have
// no record: if the daemon dies, the next one destroys them in reconcile like any container
// that belongs to no sandbox, and a clean shutdown (Close) destroys them.
type warmPool struct {
	want map[string]int // image → how many to keep ready

	mu      sync.Mutex
	ready   map[string][]*startedContainer
	filling map[string]bool // a refill goroutine runs for the image
	// lastTake is when a container was last taken (unix ns), for waitAfterTake.
	lastTake atomic.Int64
	closed   bool
	wg       sync.WaitGroup
	stop     context.CancelFunc
	ctx      context.Context
}

func newWarmPool(want map[string]int) *warmPool {
	ctx, cancel := context.WithCancel(context.Background())
	return &warmPool{want: want, ready: map[string][]*startedContainer{}, filling: map[string]bool{}, ctx: ctx, stop: cancel}
}

// acquire returns a started container for a new sandbox of img: a warm one when the pool has
// one whose agent still runs (bind applies the limits) and the sandbox needs no storage of its
// own beyond the default disk, else a new one.
func (r *Runtime) acquire(ctx context.Context, img *rootfs.Image, lim backend.Limits, st extrasSpec) (sc *startedContainer, fromPool bool, err error) {
	if r.pooled(st) {
		defer r.refill(img)
		for sc := r.pool.take(img.Name); sc != nil; sc = r.pool.take(img.Name) {
			if sc.inst.Alive() {
				r.ops.metrics.poolTake.WithLabelValues(img.Name, "hit").Inc()
				return sc, true, nil
			}
			r.log.Warn("warm pool: its agent has exited; discarding the container", "container", sc.inst.ID())
			r.discard(sc)
		}
		r.ops.metrics.poolTake.WithLabelValues(img.Name, "miss").Inc()
	}
	sc, err = r.startContainer(ctx, img, lim, st)
	return sc, false, err
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

// readyCount is how many containers of the image are ready.
func (p *warmPool) readyCount(image string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready[image])
}

// refill starts containers of img in the background until the pool holds as many as it
// should. One goroutine per image does it, one container at a time, and only refillDelay
// after the last take: a container start is 20-30 ms of CPU, which would otherwise slow down
// the very sandbox that was just taken, while its first commands run.
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
			p.mu.Lock()
			if p.closed || len(p.ready[img.Name]) >= p.want[img.Name] {
				p.filling[img.Name] = false
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			if !p.waitAfterTake(p.ctx) {
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
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				r.discard(sc)
				continue
			}
			p.ready[img.Name] = append(p.ready[img.Name], sc)
			p.mu.Unlock()
		}
	}()
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

// fillPool starts filling the pool for every image it keeps.
func (r *Runtime) fillPool() error {
	for name := range r.pool.want {
		img, err := r.images.Get(name)
		if err != nil {
			return fmt.Errorf("warm pool: %w", err)
		}
		r.refill(img)
	}
	return nil
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
