package api

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

func TestValidEnvName(t *testing.T) {
	for name, ok := range map[string]bool{"A": true, "_x1": true, "PATH": true, "_": true, "z9_Z": true, "1A": false, "9": false, "A-B": false, "": false, "A B": false,
		"A[": false, "`a": false, "a@": false, "é": false, "A\n": false, "a:": false, "a/": false} {
		if ValidEnvName(name) != ok {
			t.Errorf("%q: want %v", name, ok)
		}
	}
}

func TestCheckEnvVar(t *testing.T) {
	for _, ok := range [][2]string{{"A", ""}, {"_x9", "a=b c"}, {"PATH", "/bin"}} {
		if err := CheckEnvVar(ok[0], ok[1]); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range [][2]string{{"", "x"}, {"A=B", "x"}, {"9A", "x"}, {"A-B", "x"}, {"UID", "0"}, {"NSBOX_SESSION", "x"}, {"__nsbox_undo", "x"}, {"__nsbox_rc", "0"}, {"A", "x\x00y"}} {
		if err := CheckEnvVar(bad[0], bad[1]); !IsCode(err, CodeInvalidArgument) {
			t.Errorf("%q should be refused as invalid: %v", bad, err)
		}
	}
}

// TestCheckEnvLimits: environments that would make every exec fail with E2BIG are refused
// (issue 11: a create with 2 million variables was accepted), and the largest allowed one
// still starts a program.
func TestCheckEnvLimits(t *testing.T) {
	many := map[string]string{}
	for i := range MaxEnvVars + 1 {
		many[fmt.Sprintf("V%d", i)] = "x"
	}
	if err := CheckEnv(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d variables: %v", len(many), err)
	}
	if err := CheckEnvVar("BIG", strings.Repeat("x", MaxEnvVarBytes)); err == nil {
		t.Error("a variable over MAX_ARG_STRLEN was accepted")
	}
	big := map[string]string{}
	for i := 0; len(big) < 9; i++ {
		big[fmt.Sprintf("B%d", i)] = strings.Repeat("x", MaxEnvVarBytes-4)
	}
	if err := CheckEnv(big); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("%d variables of 128 KiB: %v", len(big), err)
	}
	// The most that is allowed: a program still starts with it.
	largest := map[string]string{}
	for i := 0; len(largest) < 7; i++ {
		largest[fmt.Sprintf("L%d", i)] = strings.Repeat("x", MaxEnvVarBytes-4)
	}
	if err := CheckEnv(largest); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	for k, v := range largest {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("a program with the largest allowed environment: %v", err)
	}
}
