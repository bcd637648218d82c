package api

import "testing"

func TestValidEnvName(t *testing.T) {
	for name, ok := range map[string]bool{"A": true, "_x1": true, "PATH": true, "1A": false, "A-B": false, "": false, "A B": false} {
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
	for _, bad := range [][2]string{{"", "x"}, {"A=B", "x"}, {"9A", "x"}, {"A-B", "x"}, {"UID", "0"}, {"NSBOX_SESSION", "x"}, {"A", "x\x00y"}} {
		if err := CheckEnvVar(bad[0], bad[1]); !IsCode(err, CodeInvalidArgument) {
			t.Errorf("%q should be refused as invalid: %v", bad, err)
		}
	}
}
