package main

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// fileRSSKB is how much of the files this process maps (its binary, mostly) is resident.
func fileRSSKB(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RssFile:\s+(\d+) kB$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no RssFile line in %s", data)
	}
	kb, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

// TestUnmapEmbedded: the pages of the embedded agent leave this process's resident set once
// unmapped, and the file reads the same afterwards (its pages map again from the binary).
func TestUnmapEmbedded(t *testing.T) {
	const name = "agentbin/nsbox-agent"
	before, err := agentFiles.ReadFile(name)
	if err != nil {
		t.Skip("no embedded agent (a plain go build): make build embeds it")
	}
	// agentBinary's copy faults in every page, as ReadFile did above.
	mapped := fileRSSKB(t)
	if err := unmapEmbedded(agentFiles, name); err != nil {
		t.Fatal(err)
	}
	unmapped := fileRSSKB(t)
	// Not all of it: pages of neighbouring data that came in with the file's (fault-around, a
	// large folio mapped whole) stay, and count here; the file's own pages go.
	if drop, want := mapped-unmapped, len(before)/1024/2; drop < want {
		t.Errorf("resident file pages went from %d to %d kB: down %d kB, less than half the embedded file's %d", mapped, unmapped, drop, len(before)/1024)
	}
	after, err := agentFiles.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the embedded agent reads differently after its pages were unmapped")
	}
	if err := unmapEmbedded(agentFiles, "agentbin/missing"); err == nil {
		t.Error("unmapEmbedded of a file that is not embedded did not fail")
	}
}
