// Package inventory reports the runc containers under the agent's runc root
// to the coordinator (PUT /agent/v1/containers): once at start, whenever the
// set changes (it lists every Interval), and again every Keepalive so the
// coordinator sees the node is alive even when nothing changes. A report
// that failed is repeated on the next tick, or after 30s when the coordinator
// refused it (4xx, e.g. a container ID another node already reported).
//
// Only containers whose runc ID is a canonical UUID are reported, under that
// UUID; the others are skipped and logged once at Info. The Name reported is
// what an operator calls the container: a name annotation of its bundle's
// config.json (NameAnnotations), else its hostname there, else the bundle
// directory's base name unless that is the ID again. A failed listing is never reported as an empty inventory:
// that would tell the coordinator every container is gone.
package inventory
