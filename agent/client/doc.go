// Package client speaks the agent side of the execq agent protocol
// (shared/agent.go) to the coordinator over hashicorp/go-retryablehttp.
//
// Retries: connection errors and 5xx answers are retried with bounded
// exponential backoff and jitter (RetryMax, RetryWaitMin, RetryWaitMax); a
// 4xx is never retried — it is the coordinator's answer, returned as an
// *Error carrying the envelope's code (and, for output_gap, the offsets to
// resend from). Long-poll lease requests use their own HTTP client whose
// timeout exceeds the longest wait, so a parked poll is never cut short by
// the client.
//
// Every request carries the node token as a bearer token; the token is never
// logged (go-retryablehttp logs only method and URL).
package client
