package shared

import (
	"errors"
	"fmt"
)

// AgentPathReports is POST /agent/v1/reports: the starts and finishes of
// several commands in one request. Each is what the per-command start or
// finish route would take and gets that route's answer, on its own: one
// refused does not refuse the others. An agent running many commands sends
// what is ready together instead of a request (and a database commit) per
// command.
const AgentPathReports = "/agent/v1/reports"

// MaxReportItems bounds the starts and finishes of one reports request (a
// lease answer carries at most 100 commands).
const MaxReportItems = 100

// ReportsRequest is the body of POST /agent/v1/reports.
type ReportsRequest struct {
	Starts   []StartItem  `json:"starts"`
	Finishes []FinishItem `json:"finishes"`
}

// StartItem asks for one leased command to be marked running.
type StartItem struct {
	CommandID string `json:"command_id"`
	Attempt   int    `json:"attempt"`
}

// FinishItem reports one command's end: a FinishRequest and its command.
type FinishItem struct {
	CommandID string `json:"command_id"`
	FinishRequest
}

// ReportsResponse answers each item of a ReportsRequest, in order.
type ReportsResponse struct {
	Starts   []StartOutcome  `json:"starts"`
	Finishes []FinishOutcome `json:"finishes"`
}

// StartOutcome is the answer to one StartItem: the StartResponse, or the
// error the per-command route would have answered.
type StartOutcome struct {
	CommandID string `json:"command_id"`
	StartResponse
	Error *ItemError `json:"error,omitempty"`
}

// FinishOutcome is the answer to one FinishItem.
type FinishOutcome struct {
	CommandID string `json:"command_id"`
	FinishResponse
	Error *ItemError `json:"error,omitempty"`
}

// ItemError is a refused item: the status and envelope the per-command
// route would have answered with (409 lease_lost, 403 forbidden, 409
// output_gap with the offsets to resend from, 503 timeout...).
type ItemError struct {
	Status int `json:"status"`
	ErrorDetail
	// Offsets is set for CodeOutputGap.
	Offsets *Offsets `json:"offsets,omitempty"`
}

// Validate checks a reports request the way each per-command route checks
// its own body, and the bounds of the whole: at least one item, at most
// MaxReportItems, and at most MaxRequestOutputBytes of output together.
func (r *ReportsRequest) Validate() error {
	n := len(r.Starts) + len(r.Finishes)
	if n == 0 || n > MaxReportItems {
		return &ValidationError{"starts", fmt.Sprintf("a reports request holds 1 to %d starts and finishes, got %d", MaxReportItems, n)}
	}
	for i, s := range r.Starts {
		if err := ValidateAttempt(s.Attempt); err != nil {
			return within(fmt.Sprintf("starts[%d]", i), err)
		}
	}
	total, chunks := 0, 0
	for i := range r.Finishes {
		f := &r.Finishes[i]
		if err := f.Validate(); err != nil {
			return within(fmt.Sprintf("finishes[%d]", i), err)
		}
		for _, c := range f.Chunks {
			total += len(c.Data)
		}
		chunks += len(f.Chunks)
	}
	if total > MaxRequestOutputBytes || chunks > MaxRequestChunks {
		return &ValidationError{"finishes", fmt.Sprintf("carry %d chunks and %d bytes; at most %d and %d per request",
			chunks, total, MaxRequestChunks, MaxRequestOutputBytes)}
	}
	return nil
}

// within names the item a validation error is about.
func within(item string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return &ValidationError{item + "." + ve.Field, ve.Message}
	}
	return err
}
