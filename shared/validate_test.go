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

// TestValidateAgentNumbers: every number of a heartbeat and a finish is
// checked against its range, the bounds themselves included.
func TestValidateAgentNumbers(t *testing.T) {
	code := func(n int) *int { return &n }
	chunks := func(n int, size int) []Chunk {
		cs := make([]Chunk, n)
		for i := range cs {
			cs[i] = Chunk{Stream: StreamStderr, Offset: int64(i * size), Data: make([]byte, size)}
		}
		return cs
	}
	cases := []struct {
		name  string
		req   FinishRequest
		field string // "" means valid
	}{
		{"minimal", FinishRequest{Attempt: 1}, ""},
		{"largest attempt", FinishRequest{Attempt: MaxAttempt}, ""},
		{"attempt 0", FinishRequest{Attempt: 0}, "attempt"},
		{"attempt negative", FinishRequest{Attempt: -1}, "attempt"},
		{"attempt past int32", FinishRequest{Attempt: MaxAttempt + 1}, "attempt"},
		{"exit 0", FinishRequest{Attempt: 1, ExitCode: code(0)}, ""},
		{"exit 255", FinishRequest{Attempt: 1, ExitCode: code(255)}, ""},
		{"exit 256", FinishRequest{Attempt: 1, ExitCode: code(256)}, "exit_code"},
		{"exit -1", FinishRequest{Attempt: 1, ExitCode: code(-1)}, "exit_code"},
		{"exit 2^32", FinishRequest{Attempt: 1, ExitCode: code(1 << 32)}, "exit_code"},
		{"lengths at the bound", FinishRequest{Attempt: 1, StdoutLength: MaxStreamBytes, StderrLength: MaxStreamBytes}, ""},
		{"stdout length past the bound", FinishRequest{Attempt: 1, StdoutLength: MaxStreamBytes + 1}, "stdout_length"},
		{"stderr length negative", FinishRequest{Attempt: 1, StderrLength: -1}, "stderr_length"},
		{"most chunks", FinishRequest{Attempt: 1, Chunks: chunks(MaxRequestChunks, 1)}, ""},
		{"too many chunks", FinishRequest{Attempt: 1, Chunks: chunks(MaxRequestChunks+1, 0)}, "chunks"},
		{"most bytes", FinishRequest{Attempt: 1, Chunks: chunks(8, MaxRequestOutputBytes/8)}, ""},
		{"too many bytes", FinishRequest{Attempt: 1, Chunks: chunks(9, MaxRequestOutputBytes/8)}, "chunks"},
		{"bogus stream", FinishRequest{Attempt: 1, Chunks: []Chunk{{Stream: "STDOUT"}}}, "chunks[0].stream"},
		{"negative offset", FinishRequest{Attempt: 1, Chunks: []Chunk{{Stream: StreamStdout, Offset: -1}}}, "chunks[0].offset"},
		{"chunk ending at the bound", FinishRequest{Attempt: 1, Chunks: []Chunk{{Stream: StreamStdout, Offset: MaxStreamBytes - 1, Data: []byte("a")}}}, ""},
		{"chunk ending past the bound", FinishRequest{Attempt: 1, Chunks: []Chunk{{Stream: StreamStdout, Offset: MaxStreamBytes - 1, Data: []byte("ab")}}}, "chunks[0]"},
		{"chunk end overflowing", FinishRequest{Attempt: 1, Chunks: []Chunk{{Stream: StreamStdout, Offset: 1<<63 - 1, Data: []byte("ab")}}}, "chunks[0]"},
		{"error too long", FinishRequest{Attempt: 1, Error: strings.Repeat("e", MaxFinishErrorBytes+1)}, "error"},
		{"error with NUL", FinishRequest{Attempt: 1, Error: "a\x00"}, "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				var verr *ValidationError
				switch {
				case tc.field == "" && err != nil:
					t.Fatalf("%s: %v, want valid", what, err)
				case tc.field != "" && (!errors.As(err, &verr) || verr.Field != tc.field):
					t.Fatalf("%s: %v, want a ValidationError on %s", what, err, tc.field)
				}
			}
			check("finish", tc.req.Validate())
			if tc.req.ExitCode == nil && tc.req.StdoutLength == 0 && tc.req.StderrLength == 0 && tc.req.Error == "" {
				hb := HeartbeatRequest{Attempt: tc.req.Attempt, Chunks: tc.req.Chunks}
				check("heartbeat", hb.Validate())
			}
		})
	}
	for _, ms := range []int{-1, MaxWaitMillis + 1, 1<<63 - 1} {
		if ValidateWaitMillis(ms) == nil {
			t.Errorf("wait_ms %d accepted", ms)
		}
	}
	for _, ms := range []int{0, MaxWaitMillis} {
		if err := ValidateWaitMillis(ms); err != nil {
			t.Errorf("wait_ms %d: %v", ms, err)
		}
	}
}
