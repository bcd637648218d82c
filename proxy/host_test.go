package proxy

import (
	"reflect"
	"strings"
	"testing"
)

func TestSplitHost(t *testing.T) {
	for in, want := range map[string][2]string{
		"3000-Box.Example.Test":      {"3000-box.example.test", ""},
		"3000-box.example.test:8080": {"3000-box.example.test", "8080"},
		"3000-box.example.test.":     {"3000-box.example.test", ""},
		"3000-box.example.test.:80":  {"3000-box.example.test", "80"},
		"":                           {"", ""},
	} {
		name, port := splitHost(in)
		if name != want[0] || port != want[1] {
			t.Errorf("splitHost(%q) = %q, %q; want %q, %q", in, name, port, want[0], want[1])
		}
	}
}

func TestParseLabel(t *testing.T) {
	tok := strings.Repeat("0123456789abcdef", 2)
	long := strings.Repeat("a-", 31) + "z" // 63 chars, the longest id
	cases := []struct {
		name     string
		port     int
		readings []reading
	}{
		{"3000-box.example.test", 3000, []reading{{sandbox: "box"}}},
		{"1-a.example.test", 1, []reading{{sandbox: "a"}}},
		{"65535-my-box-2.example.test", 65535, []reading{{sandbox: "my-box-2"}}},
		{"3000-" + long + ".example.test", 3000, []reading{{sandbox: long}}},
		// Both readings are possible: the tokened one first.
		{"8080-my-box-" + tok + ".example.test", 8080, []reading{{"my-box", tok}, {sandbox: "my-box-" + tok}}},
		{"8080-" + long + "-" + tok + ".example.test", 8080, []reading{{long, tok}}},
		// A 32-hex-digit id alone has no token.
		{"80-" + tok + ".example.test", 80, []reading{{sandbox: tok}}},
		// Uppercase hex is no token (hosts are lowercased before parsing, tokens are lowercase).
		{"80-box-" + strings.Repeat("g", 32) + ".example.test", 80, []reading{{sandbox: "box-" + strings.Repeat("g", 32)}}},
		{"80-box--" + tok + ".example.test", 80, []reading{{"box-", tok}, {sandbox: "box--" + tok}}},
	}
	for _, c := range cases {
		port, readings, ok := parseLabel(c.name, "example.test")
		if !ok || port != c.port || !reflect.DeepEqual(readings, c.readings) {
			t.Errorf("parseLabel(%q) = %d, %+v, %v; want %d, %+v", c.name, port, readings, ok, c.port, c.readings)
		}
	}
	for _, bad := range []string{
		"example.test", "box.example.test", "3000.example.test", "3000-.example.test",
		"3000--box.example.test", "0-box.example.test", "03000-box.example.test",
		"65536-box.example.test", "123456-box.example.test", "-3000-box.example.test",
		"x3000-box.example.test", "3000-box.other.test", "3000-box.example.test.evil",
		"a.3000-box.example.test", "3000-b_x.example.test", "3000-" + long + "x.example.test",
		"3000-box.notexample.test", "3000-boxexample.test",
	} {
		if port, readings, ok := parseLabel(bad, "example.test"); ok {
			t.Errorf("parseLabel(%q) = %d, %+v; want not a preview host", bad, port, readings)
		}
	}
}

func TestValidDomain(t *testing.T) {
	for _, good := range []string{"example.test", "localhost", "a-b.c1.example"} {
		if !validDomain(good) {
			t.Errorf("validDomain(%q) = false", good)
		}
	}
	for _, bad := range []string{"", "a..b", "-a.test", "a-.test", "a_b.test", "a/b", "a.test:80"} {
		if validDomain(bad) {
			t.Errorf("validDomain(%q) = true", bad)
		}
	}
}

func TestWithoutParam(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "",
		"nsbox_token=x":                "",
		"a=1&nsbox_token=x&b=%20+2":    "a=1&b=%20+2",
		"nsbox%5Ftoken=x&a=1":          "a=1",
		"nsbox_tokens=1&nsbox_token":   "nsbox_tokens=1",
		"a=1&&nsbox_token=x&nsbox_tok": "a=1&nsbox_tok",
	} {
		if got := withoutParam(in, TokenQuery); got != want {
			t.Errorf("withoutParam(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestWithoutCookies(t *testing.T) {
	for in, want := range map[string]string{
		"nsbox_token_3000=abc":                          "",
		"theme=dark; nsbox_token_3000=abc; sid=\"q r\"": "theme=dark; sid=\"q r\"",
		"a=1;nsbox_token_80=x;b=2":                      "a=1; b=2",
	} {
		if got := withoutCookies(in, cookiePrefix); got != want {
			t.Errorf("withoutCookies(%q) = %q; want %q", in, got, want)
		}
	}
}
