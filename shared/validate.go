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

// ValidateAttempt checks a lease attempt quoted by an agent.
func ValidateAttempt(attempt int) error {
	if attempt < 1 || attempt > MaxAttempt {
		return &ValidationError{"attempt", fmt.Sprintf("must be between 1 and %d, got %d", MaxAttempt, attempt)}
	}
	return nil
}

// ValidateWaitMillis checks the wait_ms of a long-poll.
func ValidateWaitMillis(ms int) error {
	if ms < 0 || ms > MaxWaitMillis {
		return &ValidationError{"wait_ms", fmt.Sprintf("must be between 0 and %d, got %d", MaxWaitMillis, ms)}
	}
	return nil
}

// ValidateChunks checks the chunks of one heartbeat or finish: their number,
// their streams, their offsets and ends, and the bytes they carry together.
func ValidateChunks(chunks []Chunk) error {
	if len(chunks) > MaxRequestChunks {
		return &ValidationError{"chunks", fmt.Sprintf("at most %d per request, got %d", MaxRequestChunks, len(chunks))}
	}
	total := 0
	for i, c := range chunks {
		if c.Stream != StreamStdout && c.Stream != StreamStderr {
			return &ValidationError{fmt.Sprintf("chunks[%d].stream", i), `must be "stdout" or "stderr"`}
		}
		if c.Offset < 0 {
			return &ValidationError{fmt.Sprintf("chunks[%d].offset", i), "must not be negative"}
		}
		if c.Offset > MaxStreamBytes-int64(len(c.Data)) {
			return &ValidationError{fmt.Sprintf("chunks[%d]", i), fmt.Sprintf("ends past byte %d of its stream", MaxStreamBytes)}
		}
		total += len(c.Data)
	}
	if total > MaxRequestOutputBytes {
		return &ValidationError{"chunks", fmt.Sprintf("carry %d bytes, at most %d per request", total, MaxRequestOutputBytes)}
	}
	return nil
}

// Validate checks a heartbeat's numbers and chunks.
func (r *HeartbeatRequest) Validate() error {
	if err := ValidateAttempt(r.Attempt); err != nil {
		return err
	}
	return ValidateChunks(r.Chunks)
}

// Validate checks a finish's numbers, chunks and error text. Which end
// reasons and signals the coordinator accepts is its own business.
func (r *FinishRequest) Validate() error {
	if err := ValidateAttempt(r.Attempt); err != nil {
		return err
	}
	if err := ValidateChunks(r.Chunks); err != nil {
		return err
	}
	for _, l := range []struct {
		field string
		n     int64
	}{{"stdout_length", r.StdoutLength}, {"stderr_length", r.StderrLength}} {
		if l.n < 0 || l.n > MaxStreamBytes {
			return &ValidationError{l.field, fmt.Sprintf("must be between 0 and %d, got %d", MaxStreamBytes, l.n)}
		}
	}
	if r.ExitCode != nil && (*r.ExitCode < 0 || *r.ExitCode > MaxExitCode) {
		return &ValidationError{"exit_code", fmt.Sprintf("must be an exit status between 0 and %d, got %d", MaxExitCode, *r.ExitCode)}
	}
	if len(r.Error) > MaxFinishErrorBytes || strings.IndexByte(r.Error, 0) >= 0 {
		return &ValidationError{"error", fmt.Sprintf("must be at most %d bytes without NUL", MaxFinishErrorBytes)}
	}
	return nil
}
