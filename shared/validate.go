package shared

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds on a submitted command. They keep one request from filling the job
// table and stay far below the kernel's ARG_MAX, so a command that is
// accepted can actually be exec'd.
const (
	MaxProgramBytes = 4096
	MaxArgs         = 1024
	MaxArgBytes     = 32 * 1024
	MaxArgsBytes    = 256 * 1024
	// MaxSubmitBodyBytes caps the submit request body; larger bodies get 413.
	MaxSubmitBodyBytes = 512 * 1024
)

// ValidationError says which field is wrong and why.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Validate checks a submit request and normalises a missing args list to an
// empty one. It returns a *ValidationError describing the first problem.
func (r *SubmitRequest) Validate() error {
	if r.Program == "" {
		return &ValidationError{"program", "must not be empty"}
	}
	if err := checkString("program", r.Program, MaxProgramBytes); err != nil {
		return err
	}
	if strings.TrimSpace(r.Program) == "" {
		return &ValidationError{"program", "must not be blank"}
	}
	if r.Args == nil {
		r.Args = []string{}
	}
	if len(r.Args) > MaxArgs {
		return &ValidationError{"args", fmt.Sprintf("at most %d arguments are allowed, got %d", MaxArgs, len(r.Args))}
	}
	total := 0
	for i, a := range r.Args {
		if err := checkString(fmt.Sprintf("args[%d]", i), a, MaxArgBytes); err != nil {
			return err
		}
		total += len(a)
	}
	if total > MaxArgsBytes {
		return &ValidationError{"args", fmt.Sprintf("arguments total %d bytes, at most %d are allowed", total, MaxArgsBytes)}
	}
	return nil
}

// checkString rejects what execve(2) and PostgreSQL text cannot carry.
func checkString(field, s string, max int) error {
	if len(s) > max {
		return &ValidationError{field, fmt.Sprintf("is %d bytes, at most %d are allowed", len(s), max)}
	}
	if strings.IndexByte(s, 0) >= 0 {
		return &ValidationError{field, "must not contain NUL bytes"}
	}
	if !utf8.ValidString(s) {
		return &ValidationError{field, "must be valid UTF-8"}
	}
	return nil
}
