package client

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/execq/execq/shared"
)

// Error is a non-2xx answer from the coordinator, after retries.
type Error struct {
	Op         string // what the agent was doing, e.g. "heartbeat"
	StatusCode int
	Code       string // envelope code, e.g. shared.CodeLeaseLost; may be empty
	Message    string
	// Offsets is set for shared.CodeOutputGap: the stored end of each
	// stream, to resend from.
	Offsets *shared.Offsets
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s: coordinator answered %d %s: %s", e.Op, e.StatusCode, e.Code, e.Message)
	}
	return fmt.Sprintf("%s: coordinator answered %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
}

// HasCode reports whether err is a coordinator answer with the given
// envelope code.
func HasCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// GapOffsets returns the offsets of an output_gap answer.
func GapOffsets(err error) (shared.Offsets, bool) {
	var e *Error
	if errors.As(err, &e) && e.Code == shared.CodeOutputGap && e.Offsets != nil {
		return *e.Offsets, true
	}
	return shared.Offsets{}, false
}

// IsRejected reports whether the coordinator refused the request (a 4xx):
// repeating it unchanged will not help. Anything else (network failure,
// 5xx after retries) may succeed later.
func IsRejected(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode >= 400 && e.StatusCode < 500
}
