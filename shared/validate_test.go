package shared

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name  string
		req   SubmitRequest
		field string // "" means valid
	}{
		{"minimal", SubmitRequest{Program: "true"}, ""},
		{"dash args", SubmitRequest{Program: "-x", Args: []string{"--", "-n", ""}}, ""},
		{"empty program", SubmitRequest{Program: ""}, "program"},
		{"blank program", SubmitRequest{Program: "  \t"}, "program"},
		{"NUL program", SubmitRequest{Program: "a\x00b"}, "program"},
		{"long program", SubmitRequest{Program: strings.Repeat("a", MaxProgramBytes+1)}, "program"},
		{"invalid utf8", SubmitRequest{Program: "\xff"}, "program"},
		{"NUL arg", SubmitRequest{Program: "echo", Args: []string{"ok", "a\x00"}}, "args[1]"},
		{"long arg", SubmitRequest{Program: "echo", Args: []string{strings.Repeat("a", MaxArgBytes+1)}}, "args[0]"},
		{"too many args", SubmitRequest{Program: "echo", Args: make([]string, MaxArgs+1)}, "args"},
		{"args too large", SubmitRequest{Program: "echo", Args: repeat(strings.Repeat("a", MaxArgBytes), MaxArgsBytes/MaxArgBytes+1)}, "args"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a ValidationError on %s, got %v", tc.field, err)
			}
			if verr.Field != tc.field {
				t.Fatalf("want field %s, got %s (%v)", tc.field, verr.Field, err)
			}
		})
	}
}

func TestValidateNormalisesMissingArgs(t *testing.T) {
	r := SubmitRequest{Program: "true"}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Args == nil || len(r.Args) != 0 {
		t.Fatalf("args = %#v, want empty non-nil slice", r.Args)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
