package api

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers successful token lookups for a short time. Agents
// authenticate on every heartbeat and every command costs several requests,
// so this saves a database round trip on most of them. Only successes are
// cached (a new token works at once, a wrong one is always re-checked), and
// entries are keyed by the token's hash, never the token.
//
// A disabled, revoked or rotated identity is dropped by notification (see
// Server.invalidate) on every replica; the TTL is only the back-stop for a
// notification lost while the listener reconnects, after which the whole
// cache is flushed anyway.
type tokenCache[V any] struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[sha256.Size]byte]cacheEntry[V]
	// gen counts invalidations. A lookup notes it before asking the
	// database and stores its answer only if no invalidation came in
	// between: otherwise an answer read just before a revocation committed
	// could be stored just after its notification dropped the entry, and
	// outlive the revocation by a whole TTL.
	gen uint64
}

type cacheEntry[V any] struct {
	v   V
	exp time.Time
}

// maxCachedTokens bounds memory; past it the cache starts over.
const maxCachedTokens = 100_000

func newTokenCache[V any](ttl time.Duration) *tokenCache[V] {
	return &tokenCache[V]{ttl: ttl, m: map[[sha256.Size]byte]cacheEntry[V]{}}
}

// get returns the cached value of tok, and the generation to hand to put
// after a miss.
func (c *tokenCache[V]) get(tok string) (V, uint64, bool) {
	var zero V
	if c.ttl <= 0 {
		return zero, 0, false
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Now().After(e.exp) {
		return zero, c.gen, false
	}
	return e.v, c.gen, true
}

// put stores v for tok unless the cache was invalidated since gen.
func (c *tokenCache[V]) put(tok string, v V, gen uint64) {
	if c.ttl <= 0 {
		return
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= maxCachedTokens {
		c.m = map[[sha256.Size]byte]cacheEntry[V]{}
	}
	c.m[k] = cacheEntry[V]{v: v, exp: time.Now().Add(c.ttl)}
}

// drop removes every entry whose value matches: every token of one
// identity. It scans the cache, which is bounded and changes rarely.
func (c *tokenCache[V]) drop(match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.m {
		if match(e.v) {
			delete(c.m, k)
		}
	}
}

// flush empties the cache.
func (c *tokenCache[V]) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}
