package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/nsbox/nsbox/api"
)

// codeSection times a trivial run in a Python code context (the interpreter is already
// running, and keeps its state) against starting `python3 -c` for the same expression
// through the processes API and waiting for its end, in a sandbox of the host image.
func (b *bench) codeSection(ctx context.Context, n int) (err error) {
	d, err := b.daemon(ctx, "nsbox", true, "")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.removeAllSandboxes()) }()
	sb, err := d.client.CreateSandbox(ctx, api.CreateSandboxRequest{})
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	cc, err := d.client.CreateCodeContext(ctx, sb.ID, api.CreateCodeContextRequest{Language: api.LanguagePython})
	if err != nil {
		return fmt.Errorf("create a python context: %w", err)
	}
	var pid string
	cases := []benchCase{
		{name: "runCode 6*7", ref: "process python3 -c", run: func(ctx context.Context) error {
			res, err := d.client.RunCode(ctx, sb.ID, cc.ID, api.RunCodeRequest{Code: "6*7"})
			if err == nil && (len(res.Results) != 1 || res.Results[0]["text/plain"] != "42") {
				err = fmt.Errorf("runCode: %+v", res)
			}
			return err
		}},
		{name: "process python3 -c", run: func(ctx context.Context) error {
			p, err := d.client.StartProcess(ctx, sb.ID, api.StartProcessRequest{Argv: []string{"python3", "-c", "print(6*7)"}})
			if err != nil {
				return err
			}
			pid = p.ID
			res, err := d.client.WaitProcess(ctx, sb.ID, p.ID, api.WaitProcessRequest{})
			if err == nil && (!res.Met || res.Process.ExitCode != 0) {
				err = fmt.Errorf("python3 -c: %+v", res)
			}
			return err
		}, after: func(ctx context.Context) error {
			return d.client.RemoveProcess(ctx, sb.ID, pid)
		}},
	}
	fmt.Printf("code: a trivial runCode in a running Python context vs python3 -c through the processes API; %d warm-ups, then %d measured runs of each, interleaved in random order\n", warmups, n)
	samples, err := timeCases(ctx, cases, warmups, n)
	if err != nil {
		return err
	}
	printTable(cases, samples)
	fmt.Printf("runCode ÷ python3 -c: %.3f\n\n", medianRatio(samples, "runCode 6*7", "process python3 -c"))
	return nil
}
