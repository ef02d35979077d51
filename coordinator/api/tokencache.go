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
// entries are keyed by the token's hash, never the token. A removed identity
// stays valid here for at most ttl.
type tokenCache[V any] struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[sha256.Size]byte]cacheEntry[V]
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

func (c *tokenCache[V]) get(tok string) (V, bool) {
	var zero V
	if c.ttl <= 0 {
		return zero, false
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Now().After(e.exp) {
		return zero, false
	}
	return e.v, true
}

func (c *tokenCache[V]) put(tok string, v V) {
	if c.ttl <= 0 {
		return
	}
	k := sha256.Sum256([]byte(tok))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedTokens {
		c.m = map[[sha256.Size]byte]cacheEntry[V]{}
	}
	c.m[k] = cacheEntry[V]{v: v, exp: time.Now().Add(c.ttl)}
}
