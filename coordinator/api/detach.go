package api

import (
	"bytes"
	"context"
	"crypto/tls"
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
// Only HTTP/1.1 connections can be taken over, over TLS too (the agent
// speaks HTTP/1.1 for that, see agent/client.NewTransport); an HTTP/2 poll
// (other clients over TLS) waits inside net/http as before.

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
	pc := &parkedConn{Conn: conn}
	if n := rw.Reader.Buffered(); n > 0 {
		// The client sent more after its request (a pipelined request,
		// or the byte net/http's read-ahead took): keep it for the server.
		b, _ := rw.Reader.Peek(n)
		pc.pending = bytes.Clone(b)
	}
	// Gone and Answer are called one after the other, never at once (the
	// poll's run in lease), so the connection needs no lock.
	return lease.Detached{
		Gone:   pc.gone,
		Answer: func(cmds []store.Command, err error) { s.answerDetached(pc.resumable(), node, cmds, err) },
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

// parkedConn is a parked poll's connection: the TCP connection, or the
// *tls.Conn over it, and what was read from it for the next request.
type parkedConn struct {
	net.Conn
	pending []byte
}

// tlsGoneWait bounds the read through TLS that tells a close_notify from a
// request (gone): the record is on the socket already, or nearly.
const tlsGoneWait = 20 * time.Millisecond

// gone reports that the client closed its end of a parked poll's connection
// (or reset it), without blocking for long and without losing anything the
// client sent. A peek at the socket tells end of file from nothing to read.
// Data waiting is a request on plain HTTP, but over TLS it is also what a
// client's TLS sends when it closes (Go's and OpenSSL's send a close_notify
// alert before the end of the stream): those records are read through TLS,
// where the alert is an end of file, and a request's bytes are kept for the
// server.
func (p *parkedConn) gone() bool {
	tc, isTLS := p.Conn.(*tls.Conn)
	sock := p.Conn
	if isTLS {
		sock = tc.NetConn()
	}
	waiting, gone := peekSocket(sock)
	if gone || !waiting || !isTLS {
		return gone
	}
	_ = tc.SetReadDeadline(time.Now().Add(tlsGoneWait))
	defer func() { _ = tc.SetReadDeadline(time.Time{}) }()
	var b [4096]byte
	n, err := tc.Read(b[:])
	if n > 0 {
		p.pending = append(p.pending, b[:n]...)
		return false
	}
	// A timeout leaves a partial record in the TLS connection's buffer,
	// usable by the next read (crypto/tls keeps no temporary error).
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// resumable is the connection to hand back to the server, with what was
// read ahead of it. Over TLS a connection with bytes read ahead is served
// as a plain one: net/http knows TLS by its concrete type, so such a
// connection's requests have no Request.TLS (which nothing here reads; the
// handshake, and its client certificate check, was done).
func (p *parkedConn) resumable() net.Conn {
	if len(p.pending) == 0 {
		return p.Conn
	}
	return &prefixConn{Conn: p.Conn, pending: p.pending}
}

// peekSocket looks at a socket without blocking or consuming anything:
// waiting is data to read, gone an end of file or an error (a reset).
func peekSocket(c net.Conn) (waiting, gone bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, true
	}
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			gone, waiting = n == 0, n > 0
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			gone = true
		}
		return true // never wait for data
	})
	return waiting, gone || err != nil
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
