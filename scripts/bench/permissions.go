package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsbox/nsbox/api"
)

// permTreeDirs × permTreeFiles is the size of the permissions section's workspace.
const permTreeDirs, permTreeFiles = 100, 100

// permissionsSection times file-heavy jobs in a workspace without rules and in the same
// workspace behind issue 16's rules (its permission layer, FUSE): find, find + cat of every
// file, and a tar of the whole workspace, each one exec in the host image.
func (b *bench) permissionsSection(ctx context.Context, n int) error {
	d, err := b.daemon(ctx, "nsbox-perms", true, "")
	if err != nil {
		return err
	}
	ws := filepath.Join(b.tmpDir, "perm-workspace")
	for i := range permTreeDirs {
		dir := filepath.Join(ws, "src", fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for j := range permTreeFiles {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.txt", j)), []byte("some file content\n"), 0o644); err != nil {
				return err
			}
		}
	}
	rules := []api.PermissionRule{{Pattern: "**/.env", Level: api.PermissionNone}, {Pattern: "docs/**", Level: api.PermissionRead},
		{Pattern: "secrets/**", Level: api.PermissionView}, {Pattern: "src/**", Level: api.PermissionWrite}, {Pattern: "**", Level: api.PermissionRead}}
	ids := map[string]string{}
	for name, perms := range map[string][]api.PermissionRule{"no rules": nil, "rules": rules} {
		sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{Workspace: &api.Workspace{HostPath: ws}, Permissions: perms})
		if err != nil {
			return fmt.Errorf("create sandbox: %w", err)
		}
		ids[name] = sb.ID
	}
	job := func(name, sandbox, ref, command string) benchCase {
		return benchCase{name: name + ", " + sandbox, ref: ref, run: func(ctx context.Context) error {
			res, err := d.client.Exec(ctx, ids[sandbox], api.ExecRequest{Command: command})
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("%s: exit %d", command, res.ExitCode)
			}
			return err
		}}
	}
	var cases []benchCase
	for _, j := range []struct{ name, command string }{
		{"find", "find /workspace -type f | wc -l"},
		{"find + cat", "find /workspace -type f -exec cat {} + | wc -c"},
		{"tar", "tar -cf - -C /workspace . | wc -c"},
	} {
		cases = append(cases, job(j.name, "no rules", "", j.command), job(j.name, "rules", j.name+", no rules", j.command))
	}
	fmt.Printf("permissions: file-heavy jobs over a %d-file workspace, without and with rules, %d warm-ups, then %d measured runs of each\n", permTreeDirs*permTreeFiles, warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	fmt.Println()
	return nil
}
