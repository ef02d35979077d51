package inventory

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/internal/syncbuf"
	"github.com/execq/execq/shared"
)

type recordingSender struct {
	mu      sync.Mutex
	reports [][]shared.ContainerReport
	times   []time.Time
	fail    bool
}

func (s *recordingSender) ReportInventory(_ context.Context, cs []shared.ContainerReport) (*shared.InventoryResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, errors.New("coordinator unreachable")
	}
	s.reports = append(s.reports, cs)
	s.times = append(s.times, time.Now())
	return &shared.InventoryResponse{Accepted: len(cs)}, nil
}

func (s *recordingSender) last() ([]shared.ContainerReport, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reports) == 0 {
		return nil, 0
	}
	return s.reports[len(s.reports)-1], len(s.reports)
}

func ids(cs []shared.ContainerReport) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func waitReport(t *testing.T, s *recordingSender, want []string) []shared.ContainerReport {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cs, n := s.last(); n > 0 && slices.Equal(ids(cs), want) {
			return cs
		}
		time.Sleep(20 * time.Millisecond)
	}
	cs, _ := s.last()
	t.Fatalf("last report %v, want %v", ids(cs), want)
	return nil
}

func TestReporterFollowsRealContainers(t *testing.T) {
	root := runctest.NewRoot(t)
	a := runctest.Start(t, runctest.Options{Root: root})
	runctest.Start(t, runctest.Options{Root: root, ID: "web-not-a-uuid"})
	// The whole ID upper-cased: a prefix alone may be all digits, and the
	// same ID again.
	runctest.Start(t, runctest.Options{Root: root, ID: strings.ToUpper(a.ID)})

	var logs syncbuf.Buffer
	sender := &recordingSender{}
	r := &Reporter{
		Lister:    a.Runner,
		Sender:    sender,
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
		Interval:  50 * time.Millisecond,
		Keepalive: 700 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	cs := waitReport(t, sender, []string{a.ID})
	// runctest gives its containers the hostname execq-test.
	if cs[0].Name != "execq-test" || cs[0].State != "running" {
		t.Fatalf("report %+v, want the container's hostname as its name", cs[0])
	}

	b := runctest.Start(t, runctest.Options{Root: root})
	waitReport(t, sender, []string{a.ID, b.ID})
	a.Remove(t)
	waitReport(t, sender, []string{b.ID})

	// Nothing changes: only keepalives, about every 700ms, not every tick.
	_, n0 := sender.last()
	time.Sleep(1600 * time.Millisecond)
	_, n1 := sender.last()
	if n1-n0 < 1 || n1-n0 > 3 {
		t.Fatalf("%d reports in 1.6s without changes, want 1..3 keepalives", n1-n0)
	}
	if got := strings.Count(logs.String(), "not a canonical UUID"); got != 2 {
		t.Fatalf("skipped containers logged %d times, want once each:\n%s", got, logs.String())
	}
}

type failingLister struct{}

func (failingLister) List(context.Context) ([]runc.Container, error) {
	return nil, errors.New("runc: permission denied")
}

func TestReporterNeverSendsEmptyOnListFailure(t *testing.T) {
	sender := &recordingSender{}
	r := &Reporter{Lister: failingLister{}, Sender: sender, Interval: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, n := sender.last(); n != 0 {
		t.Fatalf("%d reports sent although listing failed", n)
	}
}

type staticLister []runc.Container

func (s staticLister) List(context.Context) ([]runc.Container, error) { return s, nil }

func TestReporterRetriesFailedReport(t *testing.T) {
	sender := &recordingSender{fail: true}
	id := "0b0f3c1e-3a55-4a8b-9a55-3f1b2c3d4e5f"
	r := &Reporter{Lister: staticLister{{ID: id, Status: "running", Bundle: "/srv/web"}}, Sender: sender, Interval: 10 * time.Millisecond, Keepalive: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	sender.mu.Lock()
	sender.fail = false
	sender.mu.Unlock()
	cs := waitReport(t, sender, []string{id})
	cancel()
	<-done
	if cs[0].Name != "web" {
		t.Fatalf("name %q, want the bundle's base name", cs[0].Name)
	}
	if _, n := sender.last(); n != 1 {
		t.Fatalf("%d reports; after a success nothing changed, want 1", n)
	}
}

// TestReportedName: the name reported is the first of: a name annotation,
// the hostname (both from the bundle's config.json), the bundle directory's
// name unless it is just the ID, the ID.
func TestReportedName(t *testing.T) {
	const id = "0b0f3c1e-3a55-4a8b-9a55-3f1b2c3d4e5f"
	bundle := func(name, config string) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if config != "" {
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name   string
		bundle string
		want   string
	}{
		{"annotation first", bundle("b1", `{"hostname":"h1","annotations":{"io.execq.name":"web-1","nerdctl/name":"n"}}`), "web-1"},
		{"nerdctl annotation", bundle("b2", `{"hostname":"h2","annotations":{"nerdctl/name":"db"}}`), "db"},
		{"hostname", bundle("b3", `{"hostname":"cache-7","annotations":{"other":"x"}}`), "cache-7"},
		{"unusable annotation skipped", bundle("b4", `{"hostname":"h4","annotations":{"io.execq.name":"`+strings.Repeat("x", 300)+`"}}`), "h4"},
		{"no hostname: bundle name", bundle("web", `{"annotations":{}}`), "web"},
		{"bundle named after the ID", bundle(id, `{"hostname":""}`), id},
		{"bad config.json: bundle name", bundle("api", `{"hostname":`), "api"},
		{"no bundle", "", id},
	} {
		r := &Reporter{}
		got := r.reports([]runc.Container{{ID: id, Status: "running", Bundle: tc.bundle}}, slog.New(slog.DiscardHandler))
		if len(got) != 1 || got[0].Name != tc.want {
			t.Errorf("%s: reported %+v, want name %q", tc.name, got, tc.want)
		}
	}
}

func TestIsCanonicalUUID(t *testing.T) {
	for id, want := range map[string]bool{
		"f47ac10b-58cc-4372-a567-0e02b2c3d479":          true,
		"F47AC10B-58CC-4372-A567-0E02B2C3D479":          false,
		"f47ac10b58cc4372a5670e02b2c3d479":              false,
		"{f47ac10b-58cc-4372-a567-0e02b2c3d479}":        false,
		"urn:uuid:f47ac10b-58cc-4372-a567-0e02b2c3d479": false,
		"web": false,
		"":    false,
	} {
		if got := IsCanonicalUUID(id); got != want {
			t.Errorf("IsCanonicalUUID(%q) = %v", id, got)
		}
	}
}

// TestAnnotationLabels: only annotations that are valid labels are
// reported, never a reserved key, and at most shared.MaxReportedLabels, so
// the coordinator never refuses the report over an annotation.
func TestAnnotationLabels(t *testing.T) {
	t.Parallel()
	ann := map[string]string{"node": "x", "container": "y", "bad key": "v", "k": "bad value", "team": "db"}
	for i := range shared.MaxReportedLabels + 10 {
		ann["a"+strings.Repeat("x", i)] = "v"
	}
	got := annotationLabels(ann, "id", slog.New(slog.DiscardHandler))
	if len(got) != shared.MaxReportedLabels {
		t.Fatalf("%d labels, want %d", len(got), shared.MaxReportedLabels)
	}
	if err := shared.ValidateReportedLabels("labels", got); err != nil {
		t.Fatalf("reported labels refused: %v", err)
	}
	if got := annotationLabels(map[string]string{"team": "db", "node": "x"}, "id", slog.New(slog.DiscardHandler)); len(got) != 1 || got["team"] != "db" {
		t.Fatalf("labels %v, want only team=db", got)
	}
	if got := annotationLabels(nil, "id", slog.New(slog.DiscardHandler)); got != nil {
		t.Fatalf("no annotations: %v, want nil", got)
	}
}
