package net

import "time"

// steps times the steps of one attach for its debug log: each mark adds the time since the
// previous one under its name. A nil *steps times nothing.
type steps struct {
	began, last time.Time
	attrs       []any
}

func newSteps() *steps {
	now := time.Now()
	return &steps{began: now, last: now}
}

func (s *steps) mark(name string) {
	if s == nil {
		return
	}
	now := time.Now()
	s.attrs = append(s.attrs, name, now.Sub(s.last))
	s.last = now
}

// log is the attributes of a debug log line: the whole duration, then each step's.
func (s *steps) log() []any {
	return append([]any{"duration", time.Since(s.began)}, s.attrs...)
}
