package api

import (
	"maps"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Limits of a sandbox's labels: they are kept in every record and listed by every
// GET /v1/sandboxes.
const (
	MaxLabels          = 64
	MaxLabelNameBytes  = 128
	MaxLabelValueBytes = 1024
)

// CheckLabels refuses (invalid_argument) labels beyond the limits, empty names, and names
// or values that CheckText refuses. Names are checked in order, so the error is stable.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Errorf(CodeInvalidArgument, "%d labels: at most %d are allowed", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		switch {
		case k == "":
			return Errorf(CodeInvalidArgument, "label names must not be empty")
		case len(k) > MaxLabelNameBytes:
			return Errorf(CodeInvalidArgument, "label name %.32q… is %d bytes; at most %d are allowed", k, len(k), MaxLabelNameBytes)
		case len(v) > MaxLabelValueBytes:
			return Errorf(CodeInvalidArgument, "label %q: its value is %d bytes; at most %d are allowed", k, len(v), MaxLabelValueBytes)
		}
		if err := CheckText("label name", k); err != nil {
			return err
		}
		if err := CheckText("label "+k, v); err != nil {
			return err
		}
	}
	return nil
}

// CheckText refuses (invalid_argument) text that is not UTF-8 or holds a control character
// (NUL, ESC, newlines, tabs, DEL, C1): names and labels are printed by `nsbox ls` and in
// logs, where such characters could forge lines or drive the terminal. what names the
// text in the error.
func CheckText(what, s string) error {
	if !utf8.ValidString(s) {
		return Errorf(CodeInvalidArgument, "%s %q is not UTF-8", what, s)
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return Errorf(CodeInvalidArgument, "%s %q has a control character (%U at byte %d)", what, s, r, i)
		}
	}
	return nil
}
