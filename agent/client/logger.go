package client

import (
	"context"
	"log/slog"
)

// slogAdapter lets go-retryablehttp log through slog.
type slogAdapter struct{ l *slog.Logger }

var _ interface {
	Error(string, ...any)
	Info(string, ...any)
	Debug(string, ...any)
	Warn(string, ...any)
} = slogAdapter{}

// Error is logged at Debug: go-retryablehttp calls every failed attempt an
// error, including the ones it is about to retry. Whether the request
// finally failed is the caller's to log, once, with context; the
// attempt-by-attempt detail is there with --log-level debug.
func (a slogAdapter) Error(msg string, kv ...any) { a.log(slog.LevelDebug, msg, kv) }
func (a slogAdapter) Warn(msg string, kv ...any)  { a.log(slog.LevelWarn, msg, kv) }
func (a slogAdapter) Info(msg string, kv ...any)  { a.log(slog.LevelInfo, msg, kv) }
func (a slogAdapter) Debug(msg string, kv ...any) { a.log(slog.LevelDebug, msg, kv) }

func (a slogAdapter) log(level slog.Level, msg string, kv []any) {
	a.l.Log(context.Background(), level, "coordinator http: "+msg, kv...)
}
