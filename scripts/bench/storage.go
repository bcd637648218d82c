package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// diskBenchMB is the disk limit of the storage section's disk-limited sandboxes.
const diskBenchMB = 1024

// storageSection times what a workspace and a disk limit add to a sandbox's create → remove,
// next to the same work done with the tools (mkfs.ext4, mount -o loop, umount).
func (b *bench) storageSection(ctx context.Context, n int) error {
	d, err := b.daemon(ctx, "nsbox-storage", true, "")
	if err != nil {
		return err
	}
	ws := filepath.Join(b.tmpDir, "workspace")
	if err := os.MkdirAll(filepath.Join(ws, "src"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ws, "src", "main.go"), []byte("package main\n"), 0o644); err != nil {
		return err
	}
	creates := map[string][]time.Duration{}
	cycle := func(name string, req api.CreateSandboxRequest) benchCase {
		return benchCase{name: name, ref: "plain", run: func(ctx context.Context) error {
			start := time.Now()
			sb, err := d.client.CreateSandbox(ctx, req)
			if err != nil {
				return fmt.Errorf("create sandbox: %w", err)
			}
			creates[name] = append(creates[name], time.Since(start))
			return d.client.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true})
		}}
	}
	cow := &api.Workspace{HostPath: ws, Mode: api.WorkspaceCOW}
	disk := api.Limits{DiskMB: diskBenchMB}
	img, mnt := filepath.Join(b.tmpDir, "tools-disk.img"), filepath.Join(b.tmpDir, "tools-disk")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return err
	}
	cases := []benchCase{
		cycle("plain", api.CreateSandboxRequest{Image: image}),
		cycle("workspace cow", api.CreateSandboxRequest{Image: image, Workspace: cow}),
		cycle("workspace rw", api.CreateSandboxRequest{Image: image, Workspace: &api.Workspace{HostPath: ws, Mode: api.WorkspaceRW}}),
		cycle(fmt.Sprintf("diskMB %d", diskBenchMB), api.CreateSandboxRequest{Image: image, Limits: disk}),
		cycle(fmt.Sprintf("diskMB %d + cow", diskBenchMB), api.CreateSandboxRequest{Image: image, Limits: disk, Workspace: cow}),
		{name: "tools: mkfs+mount+umount", ref: "plain", run: func(context.Context) error {
			if err := runCommand("truncate", "-s", fmt.Sprintf("%dM", diskBenchMB), img); err != nil {
				return err
			}
			if err := runCommand("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", img); err != nil {
				return err
			}
			if err := runCommand("mount", "-o", "loop,noinit_itable", img, mnt); err != nil {
				return err
			}
			if err := runCommand("umount", mnt); err != nil {
				return err
			}
			return os.Remove(img)
		}},
	}
	fmt.Printf("storage: create → remove of a busybox sandbox, %d warm-ups, then %d measured runs of each\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	fmt.Print("create alone (median ms):")
	for _, c := range cases[:5] {
		fmt.Printf(" %s %s;", c.name, ms(median(creates[c.name][warmups:])))
	}
	fmt.Print("\n\n")
	return nil
}
