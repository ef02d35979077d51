package api

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// TestFailLimiter: burst failures pass, the next must wait about one
// interval, a refilled address may fail again, and other addresses keep
// their own budget.
func TestFailLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newFailLimiter(time.Second, 3)
	l.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if d := l.wait(a); d != 0 {
			t.Fatalf("failure %d within the burst must not wait (%s)", i, d)
		}
		l.fail(a)
	}
	if d := l.wait(a); d <= 0 || d > time.Second {
		t.Fatalf("past the burst: wait %s, want (0, 1s]", d)
	}
	if retryAfter(l.wait(a)) != 1 {
		t.Fatalf("Retry-After %d, want 1", retryAfter(l.wait(a)))
	}
	if d := l.wait(b); d != 0 {
		t.Fatalf("another address waits %s", d)
	}
	now = now.Add(time.Second)
	if d := l.wait(a); d != 0 {
		t.Fatalf("after one interval: wait %s, want 0", d)
	}
}

// TestFailLimiterBounded: addresses whose bucket refilled are swept, and
// the map never holds more than its bound however many addresses fail.
func TestFailLimiterBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newFailLimiter(time.Second, 2)
	l.now = func() time.Time { return now }
	l.max = 100
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range 1000 {
		l.fail(addr(i))
		if n := l.size(); n > l.max {
			t.Fatalf("after %d addresses the limiter holds %d, bound %d", i+1, n, l.max)
		}
	}
	// Two seconds later every bucket has refilled: the next new address
	// sweeps them all.
	now = now.Add(2 * time.Second)
	l.fail(netip.MustParseAddr("192.0.2.9"))
	if n := l.size(); n != 1 {
		t.Fatalf("after refill and sweep the limiter holds %d, want 1", n)
	}
}

// TestClientAddr: the bucket is the peer's IP, IPv6 by its /64, IPv4-mapped
// IPv6 as IPv4.
func TestClientAddr(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.1:5555":             "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::",
		"[::ffff:192.0.2.7]:80":      "192.0.2.7",
		"[fe80::1%eth0]:80":          "fe80::",
		"garbage":                    "invalid IP",
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := clientAddr(r).String(); got != want {
			t.Errorf("%s: bucket %s, want %s", remote, got, want)
		}
	}
}
