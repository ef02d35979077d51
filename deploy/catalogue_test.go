package deploy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// catalogue maps each series name the product exports to its label names;
// a nil set means the labels could not be read from the source (a
// non-literal label list), so only the name is checked.
type catalogue map[string]map[string]bool

// targetLabels are attached by Prometheus to every series it scrapes.
var targetLabels = []string{"job", "instance"}

// productMetrics builds the catalogue: the execq_* metrics registered in the
// coordinator's and agent's sources, the standard collectors both binaries
// register (Go runtime, process, and the coordinator's database pool), and
// Prometheus's own up.
func productMetrics(t *testing.T) catalogue {
	t.Helper()
	c := catalogue{"up": set()}
	for _, dir := range []string{"../coordinator", "../agent"} {
		if err := scanSources(dir, c); err != nil {
			t.Fatalf("read metric registrations: %v", err)
		}
	}
	if len(c) < 20 {
		t.Fatalf("found only %d metrics in the sources: the scan no longer recognises how they are registered", len(c))
	}
	if err := gatherStandard(c); err != nil {
		t.Fatalf("gather the standard collectors: %v", err)
	}
	for _, labels := range c {
		for _, l := range targetLabels {
			if labels != nil {
				labels[l] = true
			}
		}
	}
	return c
}

func set(items ...string) map[string]bool {
	s := map[string]bool{}
	for _, i := range items {
		s[i] = true
	}
	return s
}

// Constructors whose first argument is a prometheus.*Opts literal and, for
// the Vec ones, whose second is the list of variable labels.
var metricConstructors = map[string]bool{
	"NewCounter": true, "NewCounterVec": true, "NewCounterFunc": true,
	"NewGauge": true, "NewGaugeVec": true, "NewGaugeFunc": true,
	"NewHistogram": true, "NewHistogramVec": true,
	"NewSummary": true, "NewSummaryVec": true,
	"NewUntypedFunc": true,
}

// scanSources reads every non-test Go file under dir for metric
// registrations: prometheus.*Opts literals (with the labels of the
// constructor they are passed to) and prometheus.NewDesc calls. Reading the
// sources rather than building the registries finds metrics whose
// collectors only exist with a database, TLS or a running agent.
func scanSources(dir string, c catalogue) error {
	fset := token.NewFileSet()
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		var scanErr error
		fail := func(n ast.Node, format string, args ...any) {
			if scanErr == nil {
				scanErr = fmt.Errorf("%s: %s", fset.Position(n.Pos()), fmt.Sprintf(format, args...))
			}
		}
		seen := map[*ast.CompositeLit]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || len(n.Args) == 0 {
					return true
				}
				switch {
				case sel.Sel.Name == "NewDesc" && isPkg(sel.X, "prometheus"):
					name, ok := stringLit(n.Args[0])
					if !ok {
						fail(n, "prometheus.NewDesc with a name that is not a string literal")
						return true
					}
					var labels map[string]bool
					if len(n.Args) > 2 {
						labels = stringList(n.Args[2])
					}
					if len(n.Args) > 3 && labels != nil {
						for _, k := range mapKeys(n.Args[3]) {
							labels[k] = true
						}
					}
					add(c, name, "", labels)
				case metricConstructors[sel.Sel.Name]:
					lit, kind := optsLit(n.Args[0])
					if lit == nil {
						return true
					}
					seen[lit] = true
					name, constLabels, err := optsName(lit)
					if err != nil {
						fail(lit, "%v", err)
						return true
					}
					labels := constLabels
					if strings.HasSuffix(sel.Sel.Name, "Vec") {
						labels = nil
						if len(n.Args) > 1 {
							if vl := stringList(n.Args[1]); vl != nil {
								labels = constLabels
								for l := range vl {
									labels[l] = true
								}
							}
						}
					}
					add(c, name, kind, labels)
				}
			case *ast.CompositeLit:
				// Options built apart from their constructor: the name is
				// known, the variable labels are not.
				lit, kind := optsLit(n)
				if lit == nil || seen[lit] {
					return true
				}
				name, _, err := optsName(lit)
				if err != nil {
					fail(lit, "%v", err)
					return true
				}
				if _, ok := c[name]; !ok {
					add(c, name, kind, nil)
				}
			}
			return true
		})
		return scanErr
	})
}

// add records name, and for histograms and summaries the series they
// expose.
func add(c catalogue, name, kind string, labels map[string]bool) {
	with := func(extra string) map[string]bool {
		if labels == nil {
			return nil
		}
		s := set(extra)
		for l := range labels {
			s[l] = true
		}
		return s
	}
	switch kind {
	case "HistogramOpts":
		c[name+"_bucket"] = with("le")
		c[name+"_sum"] = labels
		c[name+"_count"] = labels
	case "SummaryOpts":
		c[name] = with("quantile")
		c[name+"_sum"] = labels
		c[name+"_count"] = labels
	default:
		c[name] = labels
	}
}

func isPkg(x ast.Expr, name string) bool {
	id, ok := x.(*ast.Ident)
	return ok && id.Name == name
}

// optsLit returns e if it is a prometheus.XxxOpts literal (or its address),
// and Xxx+"Opts".
func optsLit(e ast.Expr) (*ast.CompositeLit, string) {
	if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
		e = u.X
	}
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil, ""
	}
	sel, ok := lit.Type.(*ast.SelectorExpr)
	if !ok || !isPkg(sel.X, "prometheus") || !strings.HasSuffix(sel.Sel.Name, "Opts") {
		return nil, ""
	}
	return lit, sel.Sel.Name
}

// optsName joins Namespace, Subsystem and Name as prometheus.BuildFQName
// does, and returns the ConstLabels' names.
func optsName(lit *ast.CompositeLit) (string, map[string]bool, error) {
	parts := map[string]string{}
	labels := set()
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, _ := kv.Key.(*ast.Ident)
		if key == nil {
			continue
		}
		switch key.Name {
		case "Namespace", "Subsystem", "Name":
			v, ok := stringLit(kv.Value)
			if !ok {
				return "", nil, fmt.Errorf("metric %s is not a string literal: make it one, or teach this scan to read it", key.Name)
			}
			parts[key.Name] = v
		case "ConstLabels":
			for _, k := range mapKeys(kv.Value) {
				labels[k] = true
			}
		}
	}
	if parts["Name"] == "" {
		return "", nil, errors.New("metric options without a Name")
	}
	var fq []string
	for _, k := range []string{"Namespace", "Subsystem", "Name"} {
		if parts[k] != "" {
			fq = append(fq, parts[k])
		}
	}
	return strings.Join(fq, "_"), labels, nil
}

func stringLit(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}

// stringList reads a []string{"a", "b"} literal (nil is an empty list);
// anything else gives nil: labels unknown.
func stringList(e ast.Expr) map[string]bool {
	if id, ok := e.(*ast.Ident); ok && id.Name == "nil" {
		return set()
	}
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	s := set()
	for _, el := range lit.Elts {
		v, ok := stringLit(el)
		if !ok {
			return nil
		}
		s[v] = true
	}
	return s
}

// mapKeys reads the string keys of a map literal such as prometheus.Labels.
func mapKeys(e ast.Expr) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var keys []string
	for _, el := range lit.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if k, ok := stringLit(kv.Key); ok {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// gatherStandard adds the families of the collectors both binaries
// register besides their own (coordinator/app and agent/cmd/execq-agent):
// the Go runtime, the process, and the coordinator's database pool
// (go_sql_*{db_name="execq"}). They are gathered from the same collectors,
// not listed by hand, so a client_golang upgrade that renames one shows here.
func gatherStandard(c catalogue) error {
	reg := prometheus.NewRegistry()
	db := sql.OpenDB(noConnector{})
	defer db.Close()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(db, "execq"),
	)
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		labels := set()
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		kind := ""
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			kind = "HistogramOpts"
		case dto.MetricType_SUMMARY:
			kind = "SummaryOpts"
		}
		add(c, mf.GetName(), kind, labels)
	}
	return nil
}

// noConnector gives DBStatsCollector a pool to read statistics from; it
// never connects, since statistics need no connection.
type noConnector struct{}

func (noConnector) Connect(context.Context) (driver.Conn, error) {
	return nil, errors.New("no database in this test")
}

func (noConnector) Driver() driver.Driver { return nil }

// TestCatalogue checks the scan against metrics known to be registered in
// each of the ways the product uses, so a scan that silently stopped
// recognising one cannot make every reference look unknown or every check
// vacuous.
func TestCatalogue(t *testing.T) {
	t.Parallel()
	c := productMetrics(t)
	for name, labels := range map[string][]string{
		"execq_http_requests_total":                      {"route", "method", "code"}, // CounterVec
		"execq_dispatch_latency_seconds_bucket":          {"le"},                      // Histogram
		"execq_exec_duration_seconds_count":              {"status"},                  // HistogramVec
		"execq_longpolls_parked":                         {},                          // GaugeFunc
		"execq_queue_depth":                              {"status"},                  // NewDesc
		"execq_tls_certificate_expiry_timestamp_seconds": {},                          // coordinator/app
		"execq_agent_commands_executed_total":            {"result"},                  // the agent
		"go_sql_in_use_connections":                      {"db_name"},                 // DBStatsCollector
		"go_goroutines":                                  {},
		"process_resident_memory_bytes":                  {},
	} {
		got, ok := c[name]
		if !ok {
			t.Errorf("%s missing from the catalogue", name)
			continue
		}
		for _, l := range append(labels, targetLabels...) {
			if !got[l] {
				t.Errorf("%s: label %s missing (have %v)", name, l, got)
			}
		}
	}
	if _, ok := c["execq_http_requests"]; ok {
		t.Error("a counter's name without _total is in the catalogue")
	}
}
