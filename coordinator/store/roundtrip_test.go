package store

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// statementCounter is a TCP proxy in front of PostgreSQL that counts the
// statements clients send (Parse and Query messages of the wire protocol),
// so a test can tell one statement from one per row.
type statementCounter struct {
	n atomic.Int64
}

// proxy starts a statementCounter for the database at dbURL and returns a
// URL that goes through it.
func proxy(t testing.TB, dbURL string) (string, *statementCounter) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := &statementCounter{}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	target := u.Host
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(c, s); c.Close() }()
			go func() { defer wg.Done(); sc.pipe(s, c); s.Close() }()
		}
	}()
	u.Host = ln.Addr().String()
	return u.String(), sc
}

// pipe copies client messages to the server, counting statements. The
// first message (startup) has no type byte.
func (sc *statementCounter) pipe(dst io.Writer, src io.Reader) {
	var hdr [5]byte
	if _, err := io.ReadFull(src, hdr[:4]); err != nil {
		return
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if _, err := dst.Write(hdr[:4]); err != nil {
		return
	}
	if _, err := io.CopyN(dst, src, int64(n)-4); err != nil {
		return
	}
	for {
		if _, err := io.ReadFull(src, hdr[:]); err != nil {
			return
		}
		if hdr[0] == 'P' || hdr[0] == 'Q' {
			sc.n.Add(1)
		}
		if _, err := dst.Write(hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if _, err := io.CopyN(dst, src, int64(n)-4); err != nil && !errors.Is(err, io.EOF) {
			return
		}
	}
}

// statements returns how many statements fn sent.
func (sc *statementCounter) statements(fn func()) int64 {
	before := sc.n.Load()
	fn()
	return sc.n.Load() - before
}

// counted opens a store of one connection through a statementCounter, for
// tests that count the statements of one call.
func (f *fixture) counted(t testing.TB) (*Store, *statementCounter) {
	t.Helper()
	via, counter := proxy(t, f.url)
	return f.open(t, via, Options{MaxConns: 1}), counter
}

// open opens a second store on the test's database, with its own options,
// closed when the test ends.
func (f *fixture) open(t testing.TB, dbURL string, opt Options) *Store {
	t.Helper()
	st, err := Open(f.ctx, dbURL, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
