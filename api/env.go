package api

import (
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Environment variables are checked here, once, for everyone who sets them: the daemon (a
// sandbox's env, a patch of it, an image's config) and the agent (sessions, execs,
// processes). A variable must be one a shell can set.

var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidEnvName reports whether name can be set by a shell (a shell variable name).
func ValidEnvName(name string) bool { return shellName.MatchString(name) }

// readOnlyInShells are variables bash will not let anyone set; NSBOX_SESSION marks a
// session's processes.
var readOnlyInShells = map[string]bool{
	"BASHOPTS": true, "BASH_VERSINFO": true, "EUID": true, "PPID": true, "SHELLOPTS": true, "UID": true,
	"NSBOX_SESSION": true,
}

// CheckEnvVar says what is wrong with an environment variable a shell is to set (an
// invalid_argument *Error), or nil.
func CheckEnvVar(name, value string) error {
	switch {
	case name == "":
		return Errorf(CodeInvalidArgument, "an environment variable name is empty")
	case !ValidEnvName(name):
		return Errorf(CodeInvalidArgument, "invalid environment variable name %q: a shell can only set names of letters, digits and '_' that do not start with a digit", name)
	case readOnlyInShells[name]:
		return Errorf(CodeInvalidArgument, "environment variable %s cannot be set: it is read-only in bash or reserved by nsbox", name)
	case strings.ContainsRune(value, 0):
		return Errorf(CodeInvalidArgument, "environment variable %s contains a NUL byte, which no environment can hold", name)
	}
	return nil
}

// CheckEnv checks every variable of env (in name order, so the error is stable).
func CheckEnv(env map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if err := CheckEnvVar(k, env[k]); err != nil {
			return err
		}
	}
	return nil
}
