package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nsbox/nsbox/api"
)

// TestCrashDuringCreates kills the daemon with SIGKILL while 20 creates (some with a disk
// limit, some with a copy-on-write workspace) are under way, adds a run dir and a cgroup with a
// process (strayCgroup), and checks that the next start, and separately `daemon --cleanup`,
// remove every half-made container: what is left on the host (cgroups, mounts, loop devices,
// processes, directories, veths) belongs to a recorded sandbox, and the host keeps no mount of
// a sandbox but its disk.
func TestCrashDuringCreates(t *testing.T) {
	for _, after := range []string{"restart", "cleanup"} {
		t.Run(after, func(t *testing.T) {
			d := startDaemon(t)
			created := d.crashDuringCreates(20)
			d.strayCgroup()
			if after == "restart" {
				d.start()
				for id := range created {
					if out := d.sh(id, "echo ok"); out != "ok\n" {
						t.Errorf("sandbox %s after the restart: %q", id, out)
					}
				}
				d.stop()
				d.checkOnlyRecordedLeft(created)
				return
			}
			// Sandboxes still run: --cleanup removes what belongs to none of them and refuses the rest.
			if out, err := d.runCleanup(); err == nil || !strings.Contains(out, "--force") {
				t.Fatalf("--cleanup with sandboxes running: %v\n%s", err, out)
			}
			d.checkOnlyRecordedLeft(created)
			if out, err := d.runCleanup("--force"); err != nil {
				t.Fatalf("--cleanup --force: %v\n%s", err, out)
			}
			for _, leak := range append(d.leaks(), d.net.leaks()...) {
				t.Errorf("after --cleanup --force: %s", leak)
			}
			if recs := d.records(); len(recs) != 0 {
				t.Errorf("records after --cleanup --force: %v", recs)
			}
		})
	}
}

// crashDuringCreates starts n creates at once and kills the daemon with SIGKILL once a few have
// answered and others have not. It returns the sandboxes whose create succeeded.
func (d *testDaemon) crashDuringCreates(n int) map[string]bool {
	d.t.Helper()
	ws := d.t.TempDir()
	writeTree(d.t, ws, map[string]string{"a": "a"})
	var (
		mu       sync.Mutex
		created  = map[string]bool{}
		answered = 0
		enough   = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := range n {
		req := api.CreateSandboxRequest{ID: fmt.Sprintf("crash%d", i), Image: "busybox"}
		switch i % 3 {
		case 1:
			req.Limits.DiskMB = 32
		case 2:
			req.Workspace = &api.Workspace{HostPath: ws}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.client.CreateSandbox(context.Background(), req)
			mu.Lock()
			defer mu.Unlock()
			answered++
			if err == nil {
				created[req.ID] = true
				if len(created) == 3 {
					close(enough)
				}
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(60 * time.Second):
		d.t.Fatal("not 3 creates of 20 answered in 60s")
	}
	d.kill9()
	mounts := 0
	for _, l := range d.leftovers() {
		if strings.HasPrefix(l.what, "mount ") {
			mounts++
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(created) == n {
		d.t.Fatalf("every create had answered before the kill")
	}
	d.t.Logf("%d of %d creates had succeeded before the kill, %d had answered; %d host mounts after it", len(created), n, answered, mounts)
	return created
}

// strayCgroup makes what a teardown whose cgroup would not go leaves (and a crash in the
// middle of a container's start, between its cgroup and its state): a run dir, and a cgroup
// with a process in it, in one hierarchy only.
func (d *testDaemon) strayCgroup() {
	d.t.Helper()
	dir := "/sys/fs/cgroup/pids" // a v1 hierarchy, or else the unified one
	if _, err := os.Stat(dir); err != nil {
		dir = "/sys/fs/cgroup"
	}
	dir = filepath.Join(dir, d.cgroupParent, "c-stray")
	for _, dir := range []string{dir, filepath.Join(d.runDir, "sandboxes", "c-stray")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			d.t.Fatal(err)
		}
	}
	sleep := exec.Command("sleep", "1000")
	if err := sleep.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() { _ = sleep.Wait() }()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0o644); err != nil {
		_ = sleep.Process.Kill()
		d.t.Fatal(err)
	}
}

// records reads the stopped daemon's records: the container of each sandbox, by id.
func (d *testDaemon) records() map[string]string {
	d.t.Helper()
	db, err := bolt.Open(filepath.Join(d.dataDir, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		d.t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("sandboxes")).ForEach(func(k, v []byte) error {
			var rec struct {
				Status    string `json:"status"`
				Container string `json:"container"`
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if rec.Status != api.StatusRunning {
				d.t.Errorf("sandbox %s is %s", k, rec.Status)
			}
			out[string(k)] = rec.Container
			return nil
		})
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// checkOnlyRecordedLeft checks, with no daemon running, that every sandbox whose create
// succeeded is recorded, and that all the host holds of containers belongs to recorded ones,
// with no mount but their disks.
func (d *testDaemon) checkOnlyRecordedLeft(created map[string]bool) {
	t := d.t
	t.Helper()
	recs := d.records()
	containers := map[string]bool{}
	for id, c := range recs {
		containers[c] = true
		if !created[id] {
			t.Logf("sandbox %s was recorded but its client got an error (the kill came before the answer)", id)
		}
	}
	for id := range created {
		if recs[id] == "" {
			t.Errorf("sandbox %s was created but has no record", id)
		}
	}
	for _, l := range d.leftovers() {
		isDisk := strings.Contains(l.what, filepath.Join(d.runDir, "sandboxes", l.container, "disk")+" ")
		switch {
		case !containers[l.container]:
			t.Errorf("left of a half-made container: %s", l.what)
		case strings.HasPrefix(l.what, "mount ") && !isDisk:
			t.Errorf("a host mount of a sandbox: %s", l.what)
		}
	}
	veths, err := d.net.veths()
	if err != nil {
		t.Fatal(err)
	}
	for id, veth := range veths {
		if recs[id] == "" {
			t.Errorf("veth %s of %s, which has no record", veth, id)
		}
	}
}
