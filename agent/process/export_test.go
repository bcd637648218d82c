package process

// Test hooks: not part of the package's API.

// setLogBudget has the processes' logs hold at most bytes together, instead of the budget
// LogBudget gives for the sandbox's memory limit. Set it before the first process is started.
func (m *Manager) setLogBudget(bytes int64) {
	m.logs = newLogBudget(func() int64 { return bytes })
}

// held is how many bytes the log holds.
func (o *output) held() int64 {
	n, _ := o.holding()
	return n
}

// inUse is how many bytes the logs hold now.
func (b *logBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
