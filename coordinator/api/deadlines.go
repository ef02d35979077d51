package api

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// The server must not be held by its clients: a body sent a byte at a time,
// or a response nobody reads, would otherwise keep a connection, a goroutine
// and whatever the handler holds for ever. http.Server's own ReadTimeout
// and WriteTimeout are absolute deadlines from the request's start: a
// ReadTimeout left on the connection cancels the request's context when it
// passes (net/http's background read fails), which would end every
// long-poll, and a WriteTimeout cuts a large answer that is being read. So
// the deadlines are set per request here, and extended where a request
// legitimately lasts:
//
//   - reading: the body must arrive within ReadTimeout of the headers. The
//     deadline is set before authentication, so an unauthenticated request,
//     whose body is never read but drained by net/http after the 401, is
//     cut off too. Once the body is read to its end the deadline is
//     cleared, so it never ends a long-poll.
//   - writing: every write of the response gets WriteTimeout to complete
//     from when it starts, so a client that stops reading is cut off and
//     its buffers freed, while one making progress is not. A long-poll
//     extends its deadline over its wait before parking (holdFor), which
//     HTTP/2 needs as its per-stream write timer runs while nothing is
//     written. A long chunked answer (output ?follow=true) does the same:
//     each of its writes extends the deadline as it goes and each park
//     between them extends it over the park, so a follower that reads is
//     never cut, and one that stops is cut WriteTimeout after its last
//     write blocked. A handler that writes around this middleware must call
//     http.ResponseController's SetWriteDeadline itself before each write.

// deadlines wraps the whole handler: it refuses dot-segment paths and sets
// the read and write deadlines described above.
func (s *Server) deadlines(next http.Handler) http.Handler {
	refuse := s.instrumentAs(unmatchedRoute, s.wrap(func(http.ResponseWriter, *http.Request) error {
		return badRequest("invalid_path", "a path must not hold \".\" or \"..\" segments")
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
			// A shallow copy: net/http decides how to drain an unread body
			// (or whether to send 100 Continue) from its own request's
			// body type, which must stay as it was.
			r = r.WithContext(r.Context())
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, timeout: s.cfg.WriteTimeout}
		dw.extend()
		if hasDotSegment(r.URL.Path) {
			refuse.ServeHTTP(dw, r)
			return
		}
		next.ServeHTTP(dw, r)
	})
}

// hasDotSegment reports a "." or ".." segment in the decoded path, however
// it was spelled on the wire ("..", "%2e%2e", "..%2f"). The router's own
// path cleaning, which answered such paths with a redirect to wherever they
// led, is off.
func hasDotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// holdFor extends w's write deadline over a long-poll's wait, plus the
// write timeout for the answer itself.
func (s *Server) holdFor(w http.ResponseWriter, wait time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + s.cfg.WriteTimeout))
}

// errBodyTimeout: the client did not send its body within the read timeout.
var errBodyTimeout = &Error{http.StatusRequestTimeout, "body_timeout", "the request body did not arrive in time"}

// isTimeout reports a read deadline passing.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// deadlineBody clears the read deadline once the body is read to its end.
type deadlineBody struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		// net/http now reads ahead in the background to notice the client
		// leaving; a deadline would fail that read and cancel the request.
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter gives each write of the response timeout to complete.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

// Unwrap lets handlers reach the connection through http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
