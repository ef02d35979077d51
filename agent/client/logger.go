package client

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/hashicorp/go-retryablehttp"
)

type logKey struct{}

// WithLogger returns ctx carrying l: the client logs the attempts of a call
// made with it through l, so the lines about a command's calls carry the
// command_id and container_id its logger has.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, logKey{}, l)
}

// attemptLog logs each attempt of a request at Debug: whether the request
// finally failed is the caller's to log, once, with context; the
// attempt-by-attempt detail is there with --log-level debug. It replaces
// go-retryablehttp's own logger, which is one per client and cannot say
// which command a request is about.
type attemptLog struct{ base *slog.Logger }

func (a attemptLog) logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return a.base
}

// request is go-retryablehttp's RequestLogHook: one line per attempt.
func (a attemptLog) request(_ retryablehttp.Logger, req *http.Request, attempt int) {
	a.logger(req.Context()).Debug("coordinator http: performing request", "method", req.Method, "url", req.URL.Redacted(), "attempt", attempt+1)
}

// checkRetry wraps the retry policy to log a failed attempt.
func (a attemptLog) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	retry, rerr := checkRetry(ctx, resp, err)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		a.logger(ctx).Debug("coordinator http: request failed", "error", err, "retry", retry)
	case retry:
		a.logger(ctx).Debug("coordinator http: request failed", "status", resp.StatusCode, "retry", retry)
	}
	return retry, rerr
}
