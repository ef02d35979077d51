package api

import (
	"testing"
	"time"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache[string](50 * time.Millisecond)
	_, gen, ok := c.get("tok")
	if ok {
		t.Fatal("hit on an empty cache")
	}
	c.put("tok", "alice", gen)
	if v, _, ok := c.get("tok"); !ok || v != "alice" {
		t.Fatalf("get = %q, %v; want alice, true", v, ok)
	}
	if _, _, ok := c.get("other"); ok {
		t.Fatal("hit for a token never stored")
	}
	time.Sleep(60 * time.Millisecond)
	if _, _, ok := c.get("tok"); ok {
		t.Fatal("hit after the entry expired")
	}
}

func TestTokenCacheDisabled(t *testing.T) {
	c := newTokenCache[string](0)
	c.put("tok", "alice", 0)
	if _, _, ok := c.get("tok"); ok {
		t.Fatal("a zero TTL must disable the cache")
	}
}

// TestTokenCacheInvalidation: drop removes one identity's entries, flush
// all; an answer read before an invalidation is not stored after it.
func TestTokenCacheInvalidation(t *testing.T) {
	c := newTokenCache[string](time.Minute)
	_, gen, _ := c.get("a")
	c.put("a", "alice", gen)
	c.put("a2", "alice", gen)
	c.put("b", "bob", gen)
	c.drop(func(v string) bool { return v == "alice" })
	if _, _, ok := c.get("a"); ok {
		t.Fatal("alice's token survived drop")
	}
	if _, _, ok := c.get("a2"); ok {
		t.Fatal("alice's second token survived drop")
	}
	if v, _, ok := c.get("b"); !ok || v != "bob" {
		t.Fatal("bob's token was dropped with alice's")
	}

	_, stale, _ := c.get("late")
	c.drop(func(v string) bool { return v == "carol" })
	c.put("late", "carol", stale)
	if _, _, ok := c.get("late"); ok {
		t.Fatal("an answer read before an invalidation was stored after it")
	}

	c.flush()
	if _, _, ok := c.get("b"); ok {
		t.Fatal("bob's token survived flush")
	}
}
