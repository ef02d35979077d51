package app

import (
	"net"
	"net/http"
	"sync"
)

// resumer gives connections taken over by the API (parked lease polls, see
// api/detach.go) back to the HTTP server once they are answered: it is a
// listener the server serves besides its own, whose Accept returns them.
type resumer struct {
	mu sync.Mutex
	ln *connListener // that of the last server from HTTPServer; nil before
}

// serveWith makes srv serve the connections handed back from now on. It
// starts serving them with the first one: by then srv is configured and
// serving (a request came in on it), so its set-up is not raced.
func (r *resumer) serveWith(srv *http.Server, addr net.Addr) {
	ln := &connListener{conns: make(chan net.Conn), done: make(chan struct{}), served: make(chan struct{}), addr: addr}
	ln.serve = func() {
		defer close(ln.served)
		// srv closes ln when it is shut down or closed, ending Serve; a
		// srv closed before this started never takes ln, so close it here.
		_ = srv.Serve(ln)
		_ = ln.Close()
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
}

func (r *resumer) current() *connListener {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ln
}

// Serving reports that a server takes connections back.
func (r *resumer) Serving() bool {
	ln := r.current()
	return ln != nil && !ln.closed()
}

// Stop ends the handing back: answered polls' connections are closed from
// now on instead. It returns once the server has taken in every connection
// it accepted from here (their ConnState hooks have run). http.Server's
// Shutdown and Close end it too; this is for a server stopped otherwise,
// such as httptest.Server.Close, whose wait for its connections must not
// race a connection still being handed over.
func (r *resumer) Stop() {
	ln := r.current()
	if ln == nil {
		return
	}
	_ = ln.Close()
	started := true
	ln.serving.Do(func() { started = false })
	if started {
		<-ln.served
	}
}

// Resume hands c to the server; false if it no longer serves.
func (r *resumer) Resume(c net.Conn) bool {
	ln := r.current()
	return ln != nil && ln.push(c)
}

// connListener is a net.Listener fed by push.
type connListener struct {
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	addr    net.Addr
	serve   func()
	serving sync.Once
	// served is closed when serve returns.
	served chan struct{}
}

func (l *connListener) push(c net.Conn) bool {
	l.serving.Do(func() { go l.serve() })
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
