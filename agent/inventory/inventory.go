package inventory

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/shared"
)

// Defaults for zero Reporter fields.
const (
	DefaultInterval  = 2 * time.Second
	DefaultKeepalive = 60 * time.Second
)

// Lister lists containers; *runc.Runner is one.
type Lister interface {
	List(ctx context.Context) ([]runc.Container, error)
}

// Sender sends an inventory; *client.Client is one.
type Sender interface {
	ReportInventory(ctx context.Context, containers []shared.ContainerReport) (*shared.InventoryResponse, error)
}

// Reporter keeps the coordinator's view of this node's containers current.
type Reporter struct {
	Lister    Lister
	Sender    Sender
	Logger    *slog.Logger
	Metrics   *metrics.Metrics // optional
	Interval  time.Duration
	Keepalive time.Duration
	// Reported, if set, is called after each report the coordinator
	// accepted: the agent tells systemd it is ready after the first.
	Reported func()

	skipped map[string]bool // non-UUID IDs already logged
	// names caches each container's name and labels by ID: its
	// config.json does not change while it exists, and reading thousands
	// every tick would.
	names map[string]cachedName
}

type cachedName struct {
	bundle, name string
	labels       map[string]string
}

// sameReport compares two reports field by field (labels are a map).
func sameReport(a, b shared.ContainerReport) bool {
	return a.ID == b.ID && a.Name == b.Name && a.State == b.State && maps.Equal(a.Labels, b.Labels)
}

// Run reports until ctx is done. It returns nil then: a failed report is
// logged and retried on the next tick, never fatal.
func (r *Reporter) Run(ctx context.Context) error {
	interval, keepalive := r.Interval, r.Keepalive
	if interval <= 0 {
		interval = DefaultInterval
	}
	if keepalive <= 0 {
		keepalive = DefaultKeepalive
	}
	logger := r.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var (
		attempted []shared.ContainerReport // the set last sent, accepted or not
		tried     bool
		sent      bool // attempted was accepted
		lastSent  time.Time
		retryAt   time.Time
		failures  int
		listing   bool // listing is failing
	)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		cs, err := r.Lister.List(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if !listing {
				logger.Warn("list runc containers", "error", err)
			}
			listing = true
		default:
			listing = false
			reports := r.reports(cs, logger)
			now := time.Now()
			changed := !tried || !slices.EqualFunc(reports, attempted, sameReport)
			if changed || (!sent && !now.Before(retryAt)) || (sent && now.Sub(lastSent) >= keepalive) {
				sendCtx, cancel := context.WithTimeout(ctx, max(interval, 30*time.Second))
				resp, err := r.Sender.ReportInventory(sendCtx, reports)
				if err == nil && resp != nil && len(resp.Rejected) > 0 && changed {
					logger.Warn("the coordinator refused containers another node already reported; commands cannot reach them through this agent",
						"container_ids", resp.Rejected)
				}
				cancel()
				attempted, tried = reports, true
				switch {
				case ctx.Err() != nil:
					return nil
				case err != nil:
					sent = false
					failures++
					// A refusal (e.g. a container another node claims)
					// will not change by itself every tick; a network
					// failure might.
					wait := interval
					if client.IsRejected(err) {
						wait = max(interval, 30*time.Second)
					}
					retryAt = now.Add(wait)
					if failures == 1 || failures%30 == 0 {
						level := slog.LevelWarn
						if client.IsTLS(err) {
							level = slog.LevelError // a certificate to fix, not a blip
						}
						logger.Log(ctx, level, "report containers", "error", err, "containers", len(reports), "failed_reports", failures)
					}
					if r.Metrics != nil {
						r.Metrics.CoordinatorErrors.WithLabelValues("inventory").Inc()
					}
				default:
					if changed || failures > 0 {
						logger.Info("reported containers", "containers", len(reports))
					}
					sent, lastSent, failures = true, now, 0
					if r.Metrics != nil {
						r.Metrics.InventoryContainers.Set(float64(len(reports)))
					}
					if r.Reported != nil {
						r.Reported()
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// reports turns runc's list into the wire form, sorted by ID so that
// comparing with the last report detects only real changes.
func (r *Reporter) reports(cs []runc.Container, logger *slog.Logger) []shared.ContainerReport {
	if r.skipped == nil {
		r.skipped = make(map[string]bool)
	}
	out := make([]shared.ContainerReport, 0, len(cs))
	for _, c := range cs {
		if !IsCanonicalUUID(c.ID) {
			if !r.skipped[c.ID] {
				r.skipped[c.ID] = true
				logger.Info("skipping runc container whose ID is not a canonical UUID", "runc_id", c.ID, "bundle", c.Bundle)
			}
			continue
		}
		name, labels := r.describe(c, logger)
		out = append(out, shared.ContainerReport{ID: c.ID, Name: name, State: c.Status, Labels: labels})
	}
	// Forget the names of containers that went away.
	present := make(map[string]bool, len(out))
	for _, c := range out {
		present[c.ID] = true
	}
	for id := range r.names {
		if !present[id] {
			delete(r.names, id)
		}
	}
	slices.SortFunc(out, func(a, b shared.ContainerReport) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// NameAnnotations are the annotations of a container's config.json read,
// in this order, for the name reported; the first usable one wins.
var NameAnnotations = []string{"io.execq.name", "nerdctl/name", "io.kubernetes.cri.container-name"}

// maxName is the longest name the coordinator accepts.
const maxName = 256

// describe returns what an operator calls container c, and its labels.
//
// The name is a name annotation, else its hostname (both from the bundle's
// config.json), else the bundle directory's name unless it is only the ID
// again, else the ID.
//
// The labels are the annotations that are valid labels (shared/labels.go),
// the first MaxReportedLabels by key; the reserved keys are the
// coordinator's to set. Others are logged once and left out, so one odd
// annotation does not get the whole report refused.
func (r *Reporter) describe(c runc.Container, logger *slog.Logger) (string, map[string]string) {
	if n, ok := r.names[c.ID]; ok && n.bundle == c.Bundle {
		return n.name, n.labels
	}
	if c.Bundle == "" {
		return c.ID, nil
	}
	cfg, err := readBundleConfig(c.Bundle)
	var candidates []string
	for _, a := range NameAnnotations {
		candidates = append(candidates, cfg.Annotations[a])
	}
	candidates = append(candidates, cfg.Hostname)
	if base := filepath.Base(c.Bundle); base != c.ID && base != "." && base != "/" {
		candidates = append(candidates, base)
	}
	name := c.ID
	for _, n := range candidates {
		if n != "" && len(n) <= maxName && utf8.ValidString(n) && !strings.ContainsRune(n, 0) {
			name = n
			break
		}
	}
	labels := annotationLabels(cfg.Annotations, c.ID, logger)
	if err == nil { // a failed read is tried again on the next tick
		if r.names == nil {
			r.names = make(map[string]cachedName)
		}
		r.names[c.ID] = cachedName{c.Bundle, name, labels}
	}
	return name, labels
}

// annotationLabels keeps the annotations that are valid labels, at most
// shared.MaxReportedLabels of them (by key order); nil when none.
func annotationLabels(annotations map[string]string, id string, logger *slog.Logger) map[string]string {
	var labels map[string]string
	var skipped []string
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		v := annotations[k]
		switch {
		case shared.IsReservedLabel(k), shared.LabelKeyError(k) != "", shared.LabelValueError(v) != "",
			len(labels) >= shared.MaxReportedLabels:
			skipped = append(skipped, k)
			continue
		}
		if labels == nil {
			labels = make(map[string]string)
		}
		labels[k] = v
	}
	if len(skipped) > 0 {
		logger.Info("annotations that are not valid labels (or past the limit) are not reported as labels",
			"container_id", id, "annotations", skipped, "max_labels", shared.MaxReportedLabels)
	}
	return labels
}

// bundleConfig is the part of an OCI config.json a name and labels come
// from.
type bundleConfig struct {
	Hostname    string            `json:"hostname"`
	Annotations map[string]string `json:"annotations"`
}

func readBundleConfig(bundle string) (bundleConfig, error) {
	var cfg bundleConfig
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	// config.json is small; the limit keeps a strange one from costing
	// the agent memory.
	if err := json.NewDecoder(io.LimitReader(f, 4<<20)).Decode(&cfg); err != nil {
		return bundleConfig{}, err
	}
	return cfg, nil
}

// IsCanonicalUUID reports whether id is a UUID written exactly as
// uuid.UUID.String writes it. Other spellings that uuid.Parse accepts
// (upper case, braces, urn:uuid:) are refused because the coordinator hands
// the ID back to `runc exec` verbatim.
func IsCanonicalUUID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}
