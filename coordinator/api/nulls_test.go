package api

import (
	"encoding/json"
	"testing"
)

// TestHasNull: the fast pre-check finds every null literal and none inside
// strings, escapes included. The server tests (coordinator/app
// TestNullRejected) prove the walk behind it.
func TestHasNull(t *testing.T) {
	for _, doc := range []string{
		`null`,
		`{"a":null}`,
		`{"a":"null"}`,
		`{"null":1}`,
		`{"a":"x\"null"}`,
		`{"a":"x\\","b":null}`,
		`{"a":"x\\\"n","b":1}`,
		`{"a":"\\\\","b":[1,null]}`,
		`{"a":"\u006e","b":true}`,
		`["n\"", "\\", null]`,
		`[]`,
		`{"a":""}`,
	} {
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatalf("test document %s: %v", doc, err)
		}
		if got, want := hasNull([]byte(doc)), containsNull(v); got != want {
			t.Errorf("hasNull(%s) = %v, want %v", doc, got, want)
		}
	}
}

func containsNull(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case []any:
		for _, e := range v {
			if containsNull(e) {
				return true
			}
		}
	case map[string]any:
		for _, e := range v {
			if containsNull(e) {
				return true
			}
		}
	}
	return false
}
