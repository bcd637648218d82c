package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/nsbox/nsbox/api"
	"github.com/nsbox/nsbox/client"
)

// detachKeys end an attach without touching the session (as in Docker): Ctrl-P Ctrl-Q.
var detachKeys = []byte{0x10, 0x11}

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "attach this terminal to a session's shell (detach with Ctrl-P Ctrl-Q)",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "session", Aliases: []string{"s"}, Value: "default", Usage: "session to attach to"},
		},
		Action: cmdAttach,
	}
}

func cmdAttach(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError("usage: nsbox attach [-s SESSION] ID")
	}
	term, err := apiClient(c).AttachTerminal(c.Context, c.Args().First(), c.String("session"), client.TerminalOptions{})
	if err != nil {
		return err
	}
	defer term.Close()
	if restore, err := rawTerminal(int(os.Stdin.Fd())); err == nil {
		defer restore()
	}
	sendSize(term)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for range winch {
			sendSize(term)
		}
	}()
	done := make(chan error, 2)
	go func() { done <- forwardInput(term) }()
	go func() { done <- printOutput(term) }()
	err = <-done
	fmt.Fprint(os.Stderr, "\r\n")
	return err
}

// rawTerminal puts fd in raw mode and returns how to undo it.
func rawTerminal(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func sendSize(term *client.Terminal) {
	size, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ)
	if err != nil || size.Col == 0 {
		return
	}
	_ = term.Resize(size.Col, size.Row)
}

// forwardInput sends stdin to the terminal until the detach keys or the end of stdin.
func forwardInput(term *client.Terminal) error {
	buf := make([]byte, 4096)
	var last byte
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if i := bytes.Index(append([]byte{last}, chunk...), detachKeys); i >= 0 {
				if i > 1 {
					_ = term.Input(chunk[:i-1])
				}
				return nil
			}
			last = chunk[n-1]
			if err := term.Input(chunk); err != nil {
				return fmt.Errorf("send input: %w", err)
			}
		}
		if err != nil {
			return nil
		}
	}
}

// printOutput writes terminal output to stdout until the session ends.
func printOutput(term *client.Terminal) error {
	for {
		output, notice, err := term.Read()
		if err != nil {
			return nil
		}
		if notice == nil {
			if _, err := os.Stdout.Write(output); err != nil {
				return err
			}
			continue
		}
		switch notice.Type {
		case api.TerminalLive:
		case api.TerminalEnded:
			return errors.New("the session ended")
		case api.TerminalSkipped:
			fmt.Fprintf(os.Stderr, "\r\n[nsbox: %d bytes of output were dropped]\r\n", notice.Skipped)
		default:
			fmt.Fprintf(os.Stderr, "\r\n[nsbox: %s]\r\n", notice.Data)
		}
	}
}
