package libcontainer

import (
	"slices"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
)

// TestFormatCPUs: a cpuset is listed in ranges, as the kernel lists online CPUs, and reads
// back as the same CPUs.
func TestFormatCPUs(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{[]int{0}, "0"}, {[]int{1}, "1"}, {[]int{0, 1}, "0-1"}, {[]int{0, 2}, "0,2"},
		{[]int{0, 1, 2, 5, 7, 8}, "0-2,5,7-8"},
	} {
		got := formatCPUs(c.cpus)
		set, err := configs.ToCPUSet(got)
		var back []int
		for cpu := range 16 {
			if err == nil && set.IsSet(cpu) {
				back = append(back, cpu)
			}
		}
		if got != c.want || !slices.Equal(back, c.cpus) {
			t.Errorf("%v: %q (reads back as %v, %v), want %q", c.cpus, got, back, err, c.want)
		}
	}
}
