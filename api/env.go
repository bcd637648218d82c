package api

import (
	"maps"
	"slices"
	"strings"
)

// Environment variables are checked here, once, for everyone who sets them: the daemon (a
// sandbox's env, a patch of it, an image's config) and the agent (sessions, execs,
// processes). A variable must be one a shell can set.

// ValidEnvName reports whether name can be set by a shell (a shell variable name:
// [A-Za-z_][A-Za-z0-9_]*). It is a loop, not a regular expression compiled at init, which
// every process that links this package (the agent among them) would keep on its heap.
func ValidEnvName(name string) bool {
	for i, c := range []byte(name) {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return name != ""
}

// readOnlyInShells are variables bash will not let anyone set; NSBOX_SESSION marks a
// session's processes. Names that begin with reservedEnvPrefix are a session shell's own
// (the run files' saved values and undo, the exit status they report).
var readOnlyInShells = map[string]bool{
	"BASHOPTS": true, "BASH_VERSINFO": true, "EUID": true, "PPID": true, "SHELLOPTS": true, "UID": true,
	"NSBOX_SESSION": true,
}

// reservedEnvPrefix begins the names of a session shell's own variables.
const reservedEnvPrefix = "__nsbox_"

// Limits of an environment (the sandbox's, a session's or one command's), so that a program
// started with it never fails with E2BIG. The kernel takes one "NAME=value" string of at most
// MAX_ARG_STRLEN bytes (128 KiB with its NUL) and all of argv and envp, strings and pointers,
// within a quarter of the stack limit: 2 MiB with the usual 8 MiB. An environment may take
// half of that, which leaves room for the defaults nsbox adds and for the command line.
const (
	MaxEnvVars     = 4096
	MaxEnvVarBytes = 128<<10 - 1 // one NAME=value, without its NUL
	MaxEnvBytes    = 1 << 20     // every NAME=value with its NUL and its 8-byte pointer
)

// CheckEnvVar says what is wrong with an environment variable a shell is to set (an
// invalid_argument *Error), or nil.
func CheckEnvVar(name, value string) error {
	switch {
	case len(name)+1+len(value) > MaxEnvVarBytes:
		return Errorf(CodeInvalidArgument, "environment variable %.64s is %d bytes as NAME=value; at most %d fit in a program's environment", name, len(name)+1+len(value), MaxEnvVarBytes)
	case name == "":
		return Errorf(CodeInvalidArgument, "an environment variable name is empty")
	case !ValidEnvName(name):
		return Errorf(CodeInvalidArgument, "invalid environment variable name %q: a shell can only set names of letters, digits and '_' that do not start with a digit", name)
	case readOnlyInShells[name] || strings.HasPrefix(name, reservedEnvPrefix):
		return Errorf(CodeInvalidArgument, "environment variable %s cannot be set: it is read-only in bash or reserved by nsbox", name)
	case strings.ContainsRune(value, 0):
		return Errorf(CodeInvalidArgument, "environment variable %s contains a NUL byte, which no environment can hold", name)
	}
	return nil
}

// CheckEnv checks every variable of env (in name order, so the error is stable) and the
// limits of the whole (MaxEnvVars, MaxEnvBytes). Check an environment after every change
// that can grow it (a patch applied to the sandbox's), not only the change.
func CheckEnv(env map[string]string) error {
	if len(env) > MaxEnvVars {
		return Errorf(CodeInvalidArgument, "%d environment variables: at most %d are allowed", len(env), MaxEnvVars)
	}
	total := 0
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if err := CheckEnvVar(k, env[k]); err != nil {
			return err
		}
		total += len(k) + len(env[k]) + 2 + 8
	}
	if total > MaxEnvBytes {
		return Errorf(CodeInvalidArgument, "the environment takes %d bytes in a program's memory; at most %d are allowed", total, MaxEnvBytes)
	}
	return nil
}
