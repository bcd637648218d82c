//go:build !linux

package api

// largeBuffers and prefault are the Linux ways to fault a large output buffer in fewer,
// cheaper steps (prefault_linux.go); elsewhere its pages fault in on first write.
type largeBuffers struct{}

func (largeBuffers) adopt(_, _ []byte) {}

func (largeBuffers) settle([]byte) {}

func prefault([]byte, int) {}
