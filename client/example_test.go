package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// A sandbox's life: create it, run a command in its default session, remove it.
func Example() {
	ctx := context.Background()
	c := client.New(client.DefaultSocket) // or client.Dial("https://host:8443", client.Options{Token: …})
	sb, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Image: "busybox", Limits: api.Limits{MemoryMB: 256}})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.RemoveSandbox(ctx, sb.ID, client.RemoveOptions{Force: true}) }()
	res, err := c.Exec(ctx, sb.ID, api.ExecRequest{Command: "echo hello from $(hostname)"})
	if err != nil {
		log.Fatal(err)
	}
	stdout, _, _ := res.Output()
	fmt.Print(string(stdout))
}

// Sessions keep their state between commands: the working directory, exported variables,
// functions and aliases.
func ExampleClient_CreateSession() {
	ctx := context.Background()
	c := client.New(client.DefaultSocket)
	if _, err := c.CreateSession(ctx, "box1", api.CreateSessionRequest{ID: "build", Cwd: "/tmp"}); err != nil {
		log.Fatal(err)
	}
	for _, cmd := range []string{"mkdir -p out && cd out", "export STAGE=test", "echo $STAGE in $(pwd)"} {
		res, err := c.Exec(ctx, "box1", api.ExecRequest{SessionID: "build", Command: cmd, TimeoutMs: 10_000})
		if err != nil {
			log.Fatal(err)
		}
		stdout, _, _ := res.Output()
		fmt.Print(string(stdout)) // last: "test in /tmp/out"
	}
}

// Output as it is produced; returning an error from the callback ends the call (and the
// command). Cancelling ctx kills the command too, unless ctx says client.KeepRunning.
func ExampleClient_ExecStream() {
	ctx := context.Background()
	c := client.New(client.DefaultSocket)
	res, err := c.ExecStream(ctx, "box1", api.ExecRequest{Command: "for i in 1 2 3; do echo $i; sleep 1; done"}, func(ev api.ExecEvent) error {
		if ev.Type == api.EventStdout {
			data, err := ev.Bytes()
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(data)
			return err
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", res.ExitCode)
}

// A server as a process: start it, wait until it listens, expose its port on the host.
func ExampleClient_StartProcess() {
	ctx := context.Background()
	c := client.New(client.DefaultSocket)
	p, err := c.StartProcess(ctx, "box1", api.StartProcessRequest{ID: "web", Command: "python3 -m http.server 8000"})
	if err != nil {
		log.Fatal(err)
	}
	if w, err := c.WaitProcess(ctx, "box1", p.ID, api.WaitProcessRequest{Port: 8000, TimeoutMs: 20_000}); err != nil || !w.Met {
		log.Fatalf("not listening: %+v %v", w, err)
	}
	port, err := c.ExposePort(ctx, "box1", api.ExposePortRequest{Port: 8000}) // on the host's 127.0.0.1
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(port.URL)
	logs, err := c.ProcessLogs(ctx, "box1", p.ID, client.LogsOptions{Limit: 64 << 10})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d chunks of log, next read from cursor %d\n", len(logs.Chunks), logs.Cursor)
}

// Files go in and out as streams, whatever their size.
func ExampleClient_WriteFile() {
	ctx := context.Background()
	c := client.New(client.DefaultSocket)
	if _, err := c.Mkdir(ctx, "box1", "/workspace/data", client.MkdirOptions{Parents: true}); err != nil {
		log.Fatal(err)
	}
	if _, err := c.WriteFile(ctx, "box1", "/workspace/data/in.txt", strings.NewReader("hello\n"), client.WriteFileOptions{}); err != nil {
		log.Fatal(err)
	}
	rd, err := c.ReadFile(ctx, "box1", "/workspace/data/in.txt")
	if err != nil {
		log.Fatal(err)
	}
	defer rd.Close()
	if _, err := io.Copy(os.Stdout, rd); err != nil {
		log.Fatal(err)
	}
	entries, err := c.ListFiles(ctx, "box1", "/workspace", client.ListOptions{Depth: 2})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Println(e.Path, e.Size)
	}
}
