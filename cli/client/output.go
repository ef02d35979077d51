package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/execq/execq/shared"
)

// The output endpoint's headers (trailers of a follow).
const (
	statusHeader    = "X-Execq-Status"
	omittedHeader   = "X-Execq-Omitted"
	omittedAtHeader = "X-Execq-Omitted-At"
)

// OutputInfo describes a stream's bytes as the coordinator sent them.
type OutputInfo struct {
	// Status is the command's status when the bytes were read; terminal
	// means they are all the bytes kept.
	Status shared.Status
	// Omitted bytes were dropped past the output cap, at OmittedAt in the
	// bytes sent (head and tail are sent back to back).
	Omitted, OmittedAt int64
}

func readInfo(h http.Header, info *OutputInfo) {
	if v := h.Get(statusHeader); v != "" {
		info.Status = shared.Status(v)
	}
	if n, err := strconv.ParseInt(h.Get(omittedHeader), 10, 64); err == nil {
		info.Omitted = n
		info.OmittedAt, _ = strconv.ParseInt(h.Get(omittedAtHeader), 10, 64)
	}
}

func outputRequest(id, stream string, offset int64, follow bool) request {
	q := url.Values{}
	q.Set("stream", stream)
	if offset > 0 {
		q.Set("offset", strconv.FormatInt(offset, 10))
	}
	if follow {
		q.Set("follow", "true")
	}
	return request{method: http.MethodGet, path: "/api/v1/commands/" + url.PathEscape(id) + "/output", query: q}
}

// Output copies the bytes of a stream ("stdout" or "stderr") stored now,
// from offset, to w: exact bytes, whatever they are.
func (c *Client) Output(ctx context.Context, id, stream string, offset int64, w io.Writer) (OutputInfo, error) {
	var info OutputInfo
	var resp *http.Response
	err := c.retrying(ctx, true, func() error {
		var err error
		resp, err = c.send(ctx, outputRequest(id, stream, offset, false))
		return err
	})
	if err != nil {
		return info, fmt.Errorf("read %s of command %s: %w", stream, id, err)
	}
	defer resp.Body.Close()
	readInfo(resp.Header, &info)
	if _, err := io.Copy(w, resp.Body); err != nil {
		return info, fmt.Errorf("read %s of command %s: %w", stream, id, err)
	}
	return info, nil
}

// Follower reads a stream of a command live, from an offset until the
// command is terminal and every byte was read (Read then returns io.EOF).
// A connection that ends without the status trailer, or breaks, is
// reopened from the offset reached, within the client's reconnect window:
// the bytes read are the stream's bytes exactly, none twice, none lost.
// A Follower is not safe for concurrent use; follow two streams with two.
type Follower struct {
	c      *Client
	ctx    context.Context
	id     string
	stream string
	off    int64

	resp *http.Response
	info OutputInfo
	done bool
	err  error
	b    backoff
	// lastGood is when a connection was last opened or bytes last came;
	// the reconnect window counts from it.
	lastGood time.Time
	// OnReconnect, if set, is told of each connection lost before the end
	// (for -v).
	OnReconnect func(offset int64, cause error)
}

// Follow returns a Follower of stream ("stdout" or "stderr") from offset.
// Nothing is sent until the first Read. Close it when done.
func (c *Client) Follow(ctx context.Context, id, stream string, offset int64) *Follower {
	return &Follower{c: c, ctx: ctx, id: id, stream: stream, off: offset, lastGood: time.Now()}
}

// Read reads the stream's next bytes, waiting for the command to write
// them. It returns io.EOF once the command is terminal and all its bytes
// were read; Info then has the final status.
func (f *Follower) Read(p []byte) (int, error) {
	for {
		if f.err != nil {
			return 0, f.err
		}
		if f.done {
			return 0, io.EOF
		}
		if f.resp == nil {
			if err := f.connect(); err != nil {
				f.err = fmt.Errorf("follow %s of command %s: %w", f.stream, f.id, err)
				return 0, f.err
			}
		}
		n, err := f.resp.Body.Read(p)
		f.off += int64(n)
		if n > 0 {
			f.lastGood = time.Now()
			f.b.reset()
		}
		if err == nil {
			if n > 0 {
				return n, nil
			}
			continue
		}
		// The trailer is there only once the body was read to its end.
		var trailer OutputInfo
		if errors.Is(err, io.EOF) {
			readInfo(f.resp.Trailer, &trailer)
		}
		f.resp.Body.Close()
		f.resp = nil
		if trailer.Status.Terminal() {
			f.info = trailer
			f.done = true
		} else if f.OnReconnect != nil {
			f.OnReconnect(f.off, err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// connect opens the follow from the offset reached, retrying what may pass
// (no answer, 429, 502-504) until the reconnect window since the last
// progress is over.
func (f *Follower) connect() error {
	for {
		resp, err := f.c.send(f.ctx, outputRequest(f.id, f.stream, f.off, true))
		if err == nil {
			f.resp = resp
			f.lastGood = time.Now()
			return nil
		}
		var te *TransportError
		if !temporary(err) || time.Since(f.lastGood) > f.c.reconnect || (!f.c.reached.Load() && errors.As(err, &te)) {
			return err
		}
		if err := f.b.wait(f.ctx, err); err != nil {
			return err
		}
	}
}

// Offset is the stream offset reached: the bytes read so far plus the
// offset the follow started at.
func (f *Follower) Offset() int64 { return f.off }

// Info is the final status and omission of the stream, set once Read has
// returned io.EOF.
func (f *Follower) Info() OutputInfo { return f.info }

// Close ends the follow.
func (f *Follower) Close() error {
	if f.resp != nil {
		f.resp.Body.Close()
		f.resp = nil
	}
	if f.err == nil && !f.done {
		f.err = errors.New("follower closed")
	}
	return nil
}
