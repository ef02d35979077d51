package api

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// failLimiter rate-limits failed authentications per client address with a
// token bucket each (golang.org/x/time/rate): burst failures at once, then
// one per interval. Only failures spend tokens, so a client's valid
// requests never count against it. A client out of tokens is answered 429
// before its token is looked up, so a flood of bad tokens costs no database
// query and cannot slow other users' lookups.
//
// Memory is bounded: an entry whose bucket has refilled is the same as no
// entry and is swept; past maxEntries the map starts over.
type failLimiter struct {
	every rate.Limit
	burst int
	now   func() time.Time

	mu        sync.Mutex
	m         map[netip.Addr]*rate.Limiter
	lastSweep time.Time
	max       int
}

// maxFailEntries bounds the limiter's map (about 100 bytes an entry).
const maxFailEntries = 100_000

func newFailLimiter(interval time.Duration, burst int) *failLimiter {
	return &failLimiter{every: rate.Every(interval), burst: burst, now: time.Now,
		m: map[netip.Addr]*rate.Limiter{}, max: maxFailEntries}
}

// clientAddr is the bucket of a request: the connection's peer address,
// IPv6 addresses by their /64 (one host or subscriber usually holds a whole
// /64). Behind a load balancer or proxy the peer is the balancer, so all its
// clients share its bucket.
func clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{} // one shared bucket for the unparsable
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// wait reports how long addr must wait before its next failure would be
// allowed: 0 if it may try now.
func (l *failLimiter) wait(addr netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[addr]
	if !ok {
		return 0
	}
	now := l.now()
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(l.every) * float64(time.Second))
}

// fail spends one of addr's tokens for a failed authentication.
func (l *failLimiter) fail(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	lim, ok := l.m[addr]
	if !ok {
		l.sweep(now)
		lim = rate.NewLimiter(l.every, l.burst)
		l.m[addr] = lim
	}
	lim.AllowN(now, 1)
}

// sweep forgets refilled buckets, at most once a second unless the map is
// full; a full map after sweeping starts over (a client then gets a fresh
// burst, the price of the bound).
func (l *failLimiter) sweep(now time.Time) {
	if len(l.m) < l.max && now.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = now
	for a, lim := range l.m {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.m, a)
		}
	}
	if len(l.m) >= l.max {
		l.m = map[netip.Addr]*rate.Limiter{}
	}
}

// size is how many addresses the limiter tracks.
func (l *failLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// retryAfter renders a wait as whole seconds for Retry-After, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
