// Package metrics defines the agent's Prometheus collectors. They are
// registered on a registry the caller injects, so tests and several agents
// in one process never collide on the default registry. Names carry the
// execq_agent_ prefix; no command or container IDs appear in labels.
package metrics
