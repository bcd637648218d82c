//go:build !linux

package api

// hugePages and prefault are the Linux ways to fault a large output buffer in fewer,
// cheaper steps; elsewhere its pages fault in on first write.
func hugePages([]byte) {}

func prefault([]byte, int) {}
