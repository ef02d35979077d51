package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v4"
)

const (
	dashboardFile  = "grafana/execq-dashboard.json"
	rulesFile      = "prometheus/execq-alerts.yml"
	rulesTestFile  = "prometheus/execq-alerts_test.yml"
	datasourceUID  = "${datasource}"
	nodeVariableQL = "label_values(execq_node_queue_depth, node)"
)

// promtool returns the path of Debian's promtool (package prometheus),
// failing the test when there is none: these checks are the point of the
// package, and .ci/run installs it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found in PATH (apt-get install prometheus): %v", err)
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAlertRules: promtool accepts the rules and its unit tests pass.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	runPromtool(t, ".", "check", "rules", rulesFile)
	runPromtool(t, filepath.Dir(rulesTestFile), "test", "rules", filepath.Base(rulesTestFile))
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertRulesContent: every alert is routable and explains itself, names
// only metrics and labels the product exports, and has a promtool test
// where it fires and one where it stays silent.
func TestAlertRulesContent(t *testing.T) {
	t.Parallel()
	var rules ruleFile
	readYAML(t, rulesFile, &rules)
	var tests struct {
		Tests []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, c := range tc.Cases {
			if len(c.Exp) > 0 {
				fires[c.Alert] = true
			} else {
				silent[c.Alert] = true
			}
		}
	}

	c := productMetrics(t)
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test case where it fires", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: no promtool test case where it stays silent", r.Alert)
			}
			checkMetrics(t, c, r.Alert, r.Expr)
		}
	}
	if alerts == 0 {
		t.Fatalf("%s: no alerts read", rulesFile)
	}
}

// checkMetrics fails the test for each metric, or matcher label, in expr
// that the product does not export.
func checkMetrics(t *testing.T, c catalogue, where, expr string) {
	t.Helper()
	sels, err := promqlSelectors(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(sels) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, s := range sels {
		labels, ok := c[s.Metric]
		if !ok {
			t.Errorf("%s: metric %s is not exported by the coordinator or the agent", where, s.Metric)
			continue
		}
		for _, l := range s.Labels {
			if labels != nil && !labels[l] {
				t.Errorf("%s: %s has no label %q (it has %v)", where, s.Metric, l, slices.Sorted(maps.Keys(labels)))
			}
		}
	}
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Panels     []panel     `json:"panels"` // a collapsed row's
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Format     string      `json:"format"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// query is one PromQL expression of the dashboard and where it is.
type query struct{ where, expr string }

func readDashboard(t *testing.T) (dashboard, []query) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var qs []query
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("%s: id %d also used by %s", where, p.ID, prev)
			}
			ids[p.ID] = where
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			if p.Datasource == nil || p.Datasource.UID != datasourceUID {
				t.Errorf("%s: datasource %+v, want the %s variable", where, p.Datasource, datasourceUID)
			}
			for _, tg := range p.Targets {
				w := where + " query " + tg.RefID
				if tg.Datasource == nil || tg.Datasource.UID != datasourceUID {
					t.Errorf("%s: datasource %+v, want the %s variable", w, tg.Datasource, datasourceUID)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: empty expression", w)
					continue
				}
				if p.Type == "heatmap" && (tg.Format != "heatmap" || !strings.Contains(tg.Expr, "_bucket")) {
					t.Errorf("%s: a heatmap wants histogram buckets in heatmap format, got %q format %q", w, tg.Expr, tg.Format)
				}
				qs = append(qs, query{w, tg.Expr})
			}
		}
	}
	walk(d.Panels)

	var haveDS, haveNode bool
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			haveDS = haveDS || v.Name == strings.Trim(datasourceUID, "${}")
		case "query":
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				// Older dashboards store the query as a plain string.
				_ = json.Unmarshal(v.Query, &q.Query)
			}
			if v.Datasource == nil || v.Datasource.UID != datasourceUID {
				t.Errorf("variable %s: datasource %+v, want the %s variable", v.Name, v.Datasource, datasourceUID)
			}
			m := labelValues.FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
				continue
			}
			haveNode = haveNode || (v.Name == "node" && q.Query == nodeVariableQL)
			// The label must be one the selector's metric has: check it
			// as a matcher.
			qs = append(qs, query{"variable " + v.Name, m[1]},
				query{"variable " + v.Name + " label", fmt.Sprintf(`%s{%s=""}`, m[1], m[2])})
		}
	}
	if !haveDS {
		t.Errorf("no datasource variable named %s", strings.Trim(datasourceUID, "${}"))
	}
	if !haveNode {
		t.Errorf("no node variable from %s", nodeVariableQL)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed for a stable import", d.UID, d.Title)
	}
	if len(qs) < 20 {
		t.Fatalf("only %d queries read from %s", len(qs), dashboardFile)
	}
	return d, qs
}

// TestDashboard: every query of the dashboard is valid PromQL once Grafana's
// variables are substituted — promtool judges, through a recording rule per
// query — and names only metrics and labels the product exports.
func TestDashboard(t *testing.T) {
	t.Parallel()
	_, qs := readDashboard(t)
	c := productMetrics(t)

	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range qs {
		expr := grafanaToPromQL(q.expr)
		if strings.Contains(expr, "$") {
			t.Errorf("%s: a Grafana variable left in %q", q.where, expr)
		}
		checkMetrics(t, c, q.where, expr)
		// The record name says which query promtool complains about.
		name := regexp.MustCompile(`[^a-zA-Z0-9_]+`).ReplaceAllString(q.where, "_")
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:q%d:%s", i, strings.Trim(name, "_")), Expr: expr})
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, ".", "check", "rules", path)
}
