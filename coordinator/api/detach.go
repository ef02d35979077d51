package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
)

// A lease long-poll that finds nothing to claim is parked off net/http:
// its connection is hijacked and the poll waits on a small struct keyed by
// node (lease.Poller.PollOrPark), with no goroutine. Served by net/http, a
// parked poll held its handler's goroutine with a stack grown by the whole
// middleware chain, a second goroutine reading ahead for the client's
// departure, the connection's 4 KiB read and write buffers, the response's
// 2 KiB buffer and the request's objects — about 60 KiB of coordinator
// memory per idle agent, and thousands of agents wait at once. Once
// answered (by hand, below, as net/http would), the connection goes back to
// the same http.Server (Resumer), so the agent's keep-alive connection is
// kept for its next request.
//
// Only HTTP/1.1 connections can be taken over; an HTTP/2 poll (agents over
// TLS negotiate it unless they turn it off) waits inside net/http as before.

// Resumer hands a connection taken over by a handler back to the HTTP
// server, which reads its next request as on any kept-alive connection.
type Resumer interface {
	// Serving reports that Resume can take connections now.
	Serving() bool
	// Resume serves c again; false means the server is not serving (it
	// stopped), and the caller closes c.
	Resume(c net.Conn) bool
}

// detachable reports whether a poll of r can be parked off net/http.
func (s *Server) detachable(r *http.Request) bool {
	return s.cfg.Resumer != nil && r.ProtoMajor == 1 && r.ProtoMinor >= 1 && !r.Close && s.cfg.Resumer.Serving()
}

// detachLease takes over the connection of a lease poll that is about to
// park. Everything of the request is let go: only the connection and the
// node are kept.
func (s *Server) detachLease(w http.ResponseWriter, node string) (lease.Detached, bool) {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return lease.Detached{}, false
	}
	// The deadlines were set for the request (deadlines.go); the answer
	// sets its own, and net/http its own once the connection is back.
	_ = conn.SetDeadline(time.Time{})
	if n := rw.Reader.Buffered(); n > 0 {
		// The client sent more after its request (a pipelined request,
		// or the byte net/http's read-ahead took): keep it for the server.
		b, _ := rw.Reader.Peek(n)
		conn = &prefixConn{Conn: conn, pending: bytes.Clone(b)}
	}
	return lease.Detached{
		Gone:   func() bool { return peerGone(conn) },
		Answer: func(cmds []store.Command, err error) { s.answerDetached(conn, node, cmds, err) },
	}, true
}

// detachedRequest stands for a parked poll's request in the answer's error
// handling (wrap logs the method and path).
var detachedRequest = &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/agent/v1/lease"}, Header: http.Header{}}

// answerDetached writes a parked poll's answer on its connection and hands
// the connection back to the server. Leases that cannot be delivered are
// released at once, as for a poll served by net/http.
func (s *Server) answerDetached(conn net.Conn, node string, cmds []store.Command, err error) {
	rw := &bufferedResponse{header: http.Header{}}
	if err != nil {
		s.wrap(func(http.ResponseWriter, *http.Request) error { return err }).ServeHTTP(rw, detachedRequest)
	} else {
		_ = writeJSON(rw, http.StatusOK, s.leaseResponse(node, cmds))
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, werr := conn.Write(rw.bytes())
	_ = conn.SetWriteDeadline(time.Time{})
	if werr != nil {
		_ = conn.Close()
		if len(cmds) > 0 {
			s.releaseUndelivered(context.Background(), node, cmds)
		}
		return
	}
	if !s.cfg.Resumer.Resume(conn) {
		_ = conn.Close()
	}
}

// bufferedResponse collects an answer to be written by hand as HTTP/1.1.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// bytes is the response as net/http would send it with a known length.
func (b *bufferedResponse) bytes() []byte {
	status := b.status
	if status == 0 {
		status = http.StatusOK
	}
	b.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	b.header.Set("Content-Length", strconv.Itoa(b.body.Len()))
	var out bytes.Buffer
	fmt.Fprintf(&out, "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	_ = b.header.Write(&out)
	out.WriteString("\r\n")
	out.Write(b.body.Bytes())
	return out.Bytes()
}

// peerGone reports, without blocking or consuming anything, that the client
// closed its end of a parked poll's connection (or reset it): a peek at the
// socket returns end of file. Data waiting counts as alive.
func peerGone(c net.Conn) bool {
	if p, ok := c.(*prefixConn); ok {
		c = p.Conn
	}
	if t, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			gone = n == 0
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			gone = true
		}
		return true // never wait for data
	})
	return gone || err != nil
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
