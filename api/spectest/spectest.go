// Package spectest validates API responses against openapi.json in tests. It loads the
// OpenAPI document, lists its operations, and checks that a response's status is documented
// for its operation and that its JSON body matches the documented schema; event streams
// (text/event-stream) are checked event by event. It understands the subset of JSON Schema
// the document uses, and Load rejects a document that uses more, so a schema is never
// silently left unchecked.
//
// An event stream is documented by the extension x-sse on its media type: "events" maps each
// event name to the schema of its data, and "endsWith" lists the events after which the
// stream ends (a complete stream must end with one of them).
package spectest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Spec is a loaded OpenAPI document.
type Spec struct {
	ops       map[string]*operation // by "METHOD /path/{param}"
	schemas   map[string]*schema
	responses map[string]*response
}

type operation struct {
	Responses map[string]*response `json:"responses"`
}

type response struct {
	Ref     string                `json:"$ref"`
	Content map[string]*mediaType `json:"content"`
}

type mediaType struct {
	Schema *schema  `json:"schema"`
	SSE    *sseSpec `json:"x-sse"`
	Frames *sseSpec `json:"x-frames"` // the events of frames, as x-sse's (frames.go)
}

// sseSpec describes a text/event-stream body: the schema of each event's data, by event name,
// and the events that end the stream.
type sseSpec struct {
	Events   map[string]*schema `json:"events"`
	EndsWith []string           `json:"endsWith"`
}

func (s *sseSpec) UnmarshalJSON(data []byte) error {
	type plain sseSpec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode((*plain)(s)); err != nil {
		return fmt.Errorf("x-sse: %w", err)
	}
	if len(s.Events) == 0 {
		return fmt.Errorf("x-sse: no events")
	}
	for _, name := range s.EndsWith {
		if s.Events[name] == nil {
			return fmt.Errorf("x-sse: endsWith names %q, which is not one of its events", name)
		}
	}
	return nil
}

const eventStream = "text/event-stream"

// schema is the subset of JSON Schema that the validator understands.
type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	Enum                 []any              `json:"enum"`
	Pattern              string             `json:"pattern"`
	Minimum              *float64           `json:"minimum"`
	Maximum              *float64           `json:"maximum"`
	Required             []string           `json:"required"`
	Properties           map[string]*schema `json:"properties"`
	AdditionalProperties *schema            `json:"additionalProperties"`
	Items                *schema            `json:"items"`
	// Annotations, accepted and ignored; any other keyword is an error.
	Description, Title, Default, Example, Examples json.RawMessage

	never   bool // the boolean schema false: nothing matches
	pattern *regexp.Regexp
}

func (s *schema) UnmarshalJSON(data []byte) error {
	switch string(bytes.TrimSpace(data)) {
	case "true":
		return nil
	case "false":
		s.never = true
		return nil
	}
	type plain schema // without this method
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a keyword spectest does not check must not pass unnoticed
	if err := dec.Decode((*plain)(s)); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if s.Pattern != "" {
		var err error
		if s.pattern, err = regexp.Compile(s.Pattern); err != nil {
			return fmt.Errorf("pattern %q: %w", s.Pattern, err)
		}
	}
	return nil
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Load reads and parses the OpenAPI document (JSON) at path.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load spec: %w", err)
	}
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas   map[string]*schema   `json:"schemas"`
			Responses map[string]*response `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse spec %s: %w", path, err)
	}
	s := &Spec{ops: map[string]*operation{}, schemas: doc.Components.Schemas, responses: doc.Components.Responses}
	for p, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(methods, method) {
				continue // parameters, summary, …
			}
			op := &operation{}
			if err := json.Unmarshal(raw, op); err != nil {
				return nil, fmt.Errorf("parse spec %s: %s %s: %w", path, strings.ToUpper(method), p, err)
			}
			s.ops[strings.ToUpper(method)+" "+p] = op
		}
	}
	// An event stream without x-sse, or frames without x-frames, would go unchecked.
	for key, op := range s.ops {
		for status, resp := range op.Responses {
			if media := resp.Content[eventStream]; media != nil && media.SSE == nil {
				return nil, fmt.Errorf("parse spec %s: %s: status %s: %s without x-sse", path, key, status, eventStream)
			}
			if media := resp.Content[frames]; media != nil && media.Frames == nil {
				return nil, fmt.Errorf("parse spec %s: %s: status %s: %s without x-frames", path, key, status, frames)
			}
		}
	}
	for name, resp := range s.responses {
		if media := resp.Content[eventStream]; media != nil && media.SSE == nil {
			return nil, fmt.Errorf("parse spec %s: response %s: %s without x-sse", path, name, eventStream)
		}
	}
	return s, nil
}

// Operations returns every operation as "METHOD /path/{param}", sorted.
func (s *Spec) Operations() []string {
	return slices.Sorted(maps.Keys(s.ops))
}

// ValidateResponse checks that status is documented for the operation and that body matches
// the documented JSON schema; a response documented without content must have an empty body.
// An event stream (Content-Type text/event-stream) is checked with ValidateSSE instead.
// path is the operation's template ("/v1/sandboxes/{id}") or a concrete request path
// ("/v1/sandboxes/abc?force=true"), which is matched against the templates.
func (s *Spec) ValidateResponse(method, path string, status int, body []byte) error {
	key, resp, err := s.response(method, path, status)
	if err != nil {
		return err
	}
	if len(resp.Content) == 0 {
		if len(bytes.TrimSpace(body)) > 0 {
			return fmt.Errorf("%s: status %d is documented without a body, got %q", key, status, body)
		}
		return nil
	}
	media, ok := resp.Content["application/json"]
	if !ok || media.Schema == nil {
		return nil // not JSON: nothing to check
	}
	if err := s.validateJSON(media.Schema, body); err != nil {
		return fmt.Errorf("%s: status %d: %w", key, status, err)
	}
	return nil
}

// ValidateSchema checks that body matches the named schema of components/schemas, e.g. a
// request body against "ExecRequest".
func (s *Spec) ValidateSchema(name string, body []byte) error {
	if err := s.validateJSON(&schema{Ref: "#/components/schemas/" + name}, body); err != nil {
		return fmt.Errorf("schema %s: %w", name, err)
	}
	return nil
}

// response finds the documented response of an operation for a status.
func (s *Spec) response(method, path string, status int) (string, *response, error) {
	key, op := s.operation(strings.ToUpper(method), path)
	if op == nil {
		return "", nil, fmt.Errorf("%s %s: no such operation in the spec", method, path)
	}
	resp, ok := op.Responses[strconv.Itoa(status)]
	if !ok {
		documented := strings.Join(slices.Sorted(maps.Keys(op.Responses)), ", ")
		return "", nil, fmt.Errorf("%s: status %d is not documented (documented: %s)", key, status, documented)
	}
	if ref := resp.Ref; ref != "" {
		if resp = s.responses[strings.TrimPrefix(ref, "#/components/responses/")]; resp == nil {
			return "", nil, fmt.Errorf("%s: status %d: unresolvable $ref %q", key, status, ref)
		}
	}
	return key, resp, nil
}

// operation finds an operation by template, or by a concrete path that fits one template.
func (s *Spec) operation(method, path string) (string, *operation) {
	path, _, _ = strings.Cut(path, "?")
	if op := s.ops[method+" "+path]; op != nil {
		return method + " " + path, op
	}
	for _, key := range s.Operations() {
		if m, tmpl, _ := strings.Cut(key, " "); m == method && fits(path, tmpl) {
			return key, s.ops[key]
		}
	}
	return "", nil
}

// fits reports whether path is an instance of the template: each {param} stands for one
// non-empty segment.
func fits(path, tmpl string) bool {
	return slices.EqualFunc(strings.Split(path, "/"), strings.Split(tmpl, "/"), func(seg, t string) bool {
		return seg == t || strings.HasPrefix(t, "{") && strings.HasSuffix(t, "}") && seg != ""
	})
}

func (s *Spec) validateJSON(sc *schema, body []byte) error {
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("body %w", err)
	}
	return s.validate(sc, v, "$", 0)
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("is not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("has data after the JSON value")
	}
	return v, nil
}

// validate checks v against sc; at is v's JSON path, for error messages.
func (s *Spec) validate(sc *schema, v any, at string, depth int) error {
	switch {
	case depth > 64:
		return fmt.Errorf("%s: schemas nest too deep (a $ref cycle?)", at)
	case sc.never:
		return fmt.Errorf("%s: no value is allowed here", at)
	case sc.Ref != "":
		target := s.schemas[strings.TrimPrefix(sc.Ref, "#/components/schemas/")]
		if target == nil {
			return fmt.Errorf("%s: unresolvable $ref %q", at, sc.Ref)
		}
		return s.validate(target, v, at, depth+1)
	}
	if t := typeOf(v); sc.Type != "" && sc.Type != t && !(sc.Type == "number" && t == "integer") {
		return fmt.Errorf("%s: %s is a JSON %s, want %s", at, short(v), t, sc.Type)
	}
	if sc.Enum != nil && !slices.ContainsFunc(sc.Enum, func(e any) bool { return toJSON(e) == toJSON(v) }) {
		return fmt.Errorf("%s: %s is not one of %s", at, short(v), short(sc.Enum))
	}
	switch v := v.(type) {
	case string:
		if sc.pattern != nil && !sc.pattern.MatchString(v) {
			return fmt.Errorf("%s: %q does not match %s", at, v, sc.Pattern)
		}
		if sc.Format == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				return fmt.Errorf("%s: %q is not an RFC 3339 date-time: %w", at, v, err)
			}
		}
	case json.Number:
		f, _ := v.Float64()
		if sc.Minimum != nil && f < *sc.Minimum {
			return fmt.Errorf("%s: %s is less than the minimum %g", at, v, *sc.Minimum)
		}
		if sc.Maximum != nil && f > *sc.Maximum {
			return fmt.Errorf("%s: %s is more than the maximum %g", at, v, *sc.Maximum)
		}
	case []any:
		for i, item := range v {
			if err := s.validate(orAny(sc.Items), item, fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, name := range sc.Required {
			if _, ok := v[name]; !ok {
				return fmt.Errorf("%s: required property %q is missing", at, name)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			sub, ok := sc.Properties[k]
			if !ok && sc.AdditionalProperties != nil && sc.AdditionalProperties.never {
				return fmt.Errorf("%s: unknown property %q", at, k)
			} else if !ok {
				sub = orAny(sc.AdditionalProperties)
			}
			if err := s.validate(sub, v[k], at+"."+k, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

func typeOf(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if f, err := v.Float64(); err == nil && f == math.Trunc(f) {
			return "integer" // 1.0 and 1e3 are integers too
		}
	}
	return "number"
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// short renders v as JSON for messages, cut to 80 bytes.
func short(v any) string {
	s := toJSON(v)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

func orAny(sc *schema) *schema {
	if sc == nil {
		return &schema{}
	}
	return sc
}
