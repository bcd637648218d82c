package api

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// randomString draws a string that exercises JSON's escapes: quotes, backslashes, control
// characters, HTML characters, U+2028, non-ASCII text, bytes that are not UTF-8, and lone
// surrogates' encodings.
func randomString(rng *rand.Rand) string {
	pieces := []string{"", "a", "Z", " ", `"`, `\`, "/", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"<", ">", "&", "\u2028", "\u2029", "é", "日本", "🙂", "\ufffd", "\xff", "\xc3", "\xed\xa0\x80", "ls -la | wc", "$HOME"}
	var b strings.Builder
	for range rng.IntN(6) {
		b.WriteString(pieces[rng.IntN(len(pieces))])
	}
	return b.String()
}

// fillRandom sets every field of the struct v points to, by its kind; a field of a kind it
// does not know fails the test, so a field added to the exec's types is not left out of the
// codec unnoticed.
func fillRandom(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(randomString(rng))
		case reflect.Int, reflect.Int64:
			f.SetInt([]int64{0, 1, -1, 42, 1 << 40, -1 << 63, 1<<63 - 1}[rng.IntN(7)])
		case reflect.Bool:
			f.SetBool(rng.IntN(2) == 1)
		case reflect.Slice:
			if rng.IntN(4) > 0 {
				s := reflect.MakeSlice(f.Type(), 0, 3)
				for range rng.IntN(3) {
					s = reflect.Append(s, reflect.ValueOf(randomString(rng)))
				}
				f.Set(s)
			}
		case reflect.Map:
			if rng.IntN(4) > 0 {
				m := reflect.MakeMap(f.Type())
				for range rng.IntN(3) {
					m.SetMapIndex(reflect.ValueOf(randomString(rng)), reflect.ValueOf(randomString(rng)))
				}
				f.Set(m)
			}
		case reflect.Pointer:
			if rng.IntN(3) > 0 {
				p := reflect.New(f.Type().Elem())
				fillRandom(t, rng, p.Elem())
				f.Set(p)
			}
		default:
			t.Fatalf("%s.%s is a %s, which the test (and the codec) do not know", v.Type(), v.Type().Field(i).Name, f.Kind())
		}
	}
}

// TestExecEventAsJSON: AppendExecEvent writes what json.Marshal writes, byte for byte.
func TestExecEventAsJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var e ExecEvent
		fillRandom(t, rng, reflect.ValueOf(&e).Elem())
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendExecEvent([]byte("prefix"), &e); !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("AppendExecEvent(%+v) = %s, json.Marshal: %s", e, got, want)
		}
	}
}

// decodeBoth decodes a body with DecodeBody (encoding/json) and with ReadBody and
// DecodeExecRequest, and fails the test if they disagree on whether it is valid or on what it
// holds.
func decodeBoth(t *testing.T, body []byte) {
	t.Helper()
	var want, got ExecRequest
	wantErr := DecodeBody(bytes.NewReader(body), &want, false)
	data, gotErr := ReadBody(bytes.NewReader(body), false)
	if gotErr == nil {
		gotErr = DecodeExecRequest(data, &got)
	}
	switch {
	case (wantErr == nil) != (gotErr == nil):
		t.Fatalf("body %q: encoding/json: %v; DecodeExecRequest: %v", body, wantErr, gotErr)
	case wantErr == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("body %q: DecodeExecRequest read %#v, encoding/json %#v", body, got, want)
	case gotErr != nil && !IsCode(gotErr, CodeInvalidArgument):
		t.Fatalf("body %q: error %v is not invalid_argument", body, gotErr)
	}
}

// execRequestSeeds are bodies that reach each path of the decoder.
var execRequestSeeds = []string{
	`{"command":"true"}`,
	` {"argv":["ls","-la"],"env":{"A":"1","B":null},"cwd":"/tmp","timeoutMs":1500,"killOnDisconnect":true,"maxOutputBytes":-1} `,
	`{"stdin":"aGk=","stdinEncoding":"base64","sessionId":"s1"}`,
	`null`, `{}`, `[]`, `"x"`, `1`, `true`, `{"command":null,"argv":null,"env":null,"timeoutMs":null,"killOnDisconnect":null}`,
	`{"COMMAND":"x","Cwd":"/","ENV":{"k":"v"},"ſessionId":"s","Killondisconnect":false}`,
	`{"command":"a","command":"b","env":{"x":"1"},"env":{"y":"2"},"argv":["1"],"argv":[]}`,
	`{"command":"\u00e9\ud83d\ude42\ud800\udc00x\ud800\u0041\udc00\"\\\/\b\f\n\r\t"}`,
	`{"command":"\ud800"}`, `{"command":"\ud83d\u"}`, `{"command":"\x"}`, `{"command":"` + "\x01" + `"}`,
	`{"command":"` + "\xff\xfe" + `é"}`, `{"command":"abc`, `{"command":"a"`, `{"command":"a",}`, `{,}`,
	`{"command" "a"}`, `{"command":"a"}}`, `{"command":"a"} x`, `{"command":"a"}]`, `{"command":"a"} {}`,
	`{"timeoutMs":0}`, `{"timeoutMs":-0}`, `{"timeoutMs":01}`, `{"timeoutMs":1.5}`, `{"timeoutMs":1e3}`,
	`{"timeoutMs":-}`, `{"timeoutMs":9223372036854775807}`, `{"timeoutMs":9223372036854775808}`,
	`{"timeoutMs":-9223372036854775808}`, `{"timeoutMs":"1"}`, `{"timeoutMs":12abc}`, `{"timeoutMs":+1}`,
	`{"killOnDisconnect":"true"}`, `{"killOnDisconnect":tru}`, `{"command":nul}`, `{"argv":"ls"}`,
	`{"argv":[1]}`, `{"argv":[,]}`, `{"argv":["a",]}`, `{"argv":["a" "b"]}`, `{"argv":[null,"b"]}`,
	`{"env":{"a":1}}`, `{"env":["a"]}`, `{"env":{}}`, `{"unknown":1}`, `{"command":"a","stdout":""}`,
	"{\"command\":\"a\"}\n\t\r ", "{}\x00", "{\"command\":\"a\"}\x00", "\f{}", "{\"command\":\v\"a\"}", `{"command":"a"`, `{"`, `{"a`, `"`,
}

// TestExecRequestAsJSON: DecodeExecRequest reads what encoding/json reads, and refuses what it
// refuses: every field of random requests, the seeds, and random mutations of them.
func TestExecRequestAsJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		var req ExecRequest
		fillRandom(t, rng, reflect.ValueOf(&req).Elem())
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		decodeBoth(t, body)
	}
	const alphabet = "{}[]:,\"\\/ ntrfue0123456789.-+Ee\x00\x01\xff\u00e9"
	for _, seed := range execRequestSeeds {
		decodeBoth(t, []byte(seed))
		for range 300 {
			body := []byte(seed)
			for range 1 + rng.IntN(3) {
				i := rng.IntN(len(body) + 1)
				switch c := alphabet[rng.IntN(len(alphabet))]; rng.IntN(3) {
				case 0: // insert
					body = append(body[:i], append([]byte{c}, body[i:]...)...)
				case 1: // replace
					if i < len(body) {
						body[i] = c
					}
				default: // delete
					if i < len(body) {
						body = append(body[:i], body[i+1:]...)
					}
				}
			}
			decodeBoth(t, body)
		}
	}
}

// FuzzExecRequest: `go test -fuzz FuzzExecRequest ./api` looks further for a body the two
// decoders disagree on.
func FuzzExecRequest(f *testing.F) {
	for _, seed := range execRequestSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) { decodeBoth(t, body) })
}
