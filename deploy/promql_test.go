package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// selector is one vector selector found in a PromQL expression: the metric
// name and the label names its matchers use.
type selector struct {
	Metric string
	Labels []string
}

// grafanaVar matches Grafana's variables: $name, ${name} and ${name:format}.
var grafanaVar = regexp.MustCompile(`\$(\{[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?\}|[A-Za-z0-9_]+)`)

// grafanaToPromQL replaces a dashboard query's Grafana variables so that
// Prometheus can parse it: interval variables become a duration, others
// (used inside label matcher strings, e.g. node=~"$node") a plain word.
func grafanaToPromQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		switch strings.Trim(v, "${}") {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "x"
	})
}

// Words that are part of PromQL's syntax, never metric names. Aggregations
// are here rather than recognised by a following "(", since "sum by (x) (…)"
// puts the grouping first.
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// Modifiers followed by a parenthesised list of label names.
var labelListWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlSelectors lists the vector selectors of a PromQL expression. It is
// a tokenizer, not a parser (promtool judges whether the expression is
// valid): it knows strings, label lists, matchers and ranges well enough to
// tell metric names from function names, keywords and label names.
func promqlSelectors(expr string) ([]selector, error) {
	toks, err := promqlTokens(expr)
	if err != nil {
		return nil, err
	}
	var out []selector
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		next := func() string {
			if i+1 < len(toks) {
				return toks[i+1]
			}
			return ""
		}
		switch {
		case tok == "[":
			// A range or subquery: durations only.
			for i < len(toks) && toks[i] != "]" {
				i++
			}
		case tok == "{":
			// A selector without a name before its matchers.
			s, end, err := matchers(toks, i)
			if err != nil {
				return nil, err
			}
			i = end
			name := ""
			for _, m := range s {
				if m[0] == "__name__" {
					name = m[1]
				}
			}
			if name == "" {
				return nil, fmt.Errorf("a selector without a metric name in %q", expr)
			}
			out = append(out, selector{Metric: name, Labels: labelNames(s)})
		case !isIdent(tok):
		case labelListWords[strings.ToLower(tok)] && next() == "(":
			for i < len(toks) && toks[i] != ")" {
				i++
			}
		case labelListWords[strings.ToLower(tok)], promqlWords[strings.ToLower(tok)]:
		case next() == "(":
			// A function call.
		default:
			sel := selector{Metric: tok}
			if next() == "{" {
				s, end, err := matchers(toks, i+1)
				if err != nil {
					return nil, err
				}
				i = end
				sel.Labels = labelNames(s)
			}
			out = append(out, sel)
		}
	}
	return out, nil
}

// matchers reads the matchers of a selector whose "{" is toks[open]; it
// returns [label, value] pairs (value only for "=") and the index of "}".
func matchers(toks []string, open int) ([][2]string, int, error) {
	var out [][2]string
	i := open + 1
	for ; i < len(toks) && toks[i] != "}"; i++ {
		if toks[i] == "," {
			continue
		}
		if i+2 >= len(toks) || !isIdent(toks[i]) || !isString(toks[i+2]) {
			return nil, 0, fmt.Errorf("cannot read the matchers at %q", strings.Join(toks[i:], " "))
		}
		m := [2]string{toks[i]}
		if toks[i+1] == "=" {
			m[1] = strings.Trim(toks[i+2], "\"'`")
		}
		out = append(out, m)
		i += 2
	}
	if i == len(toks) {
		return nil, 0, fmt.Errorf("unclosed matchers")
	}
	return out, i, nil
}

func labelNames(ms [][2]string) []string {
	var out []string
	for _, m := range ms {
		if m[0] != "__name__" {
			out = append(out, m[0])
		}
	}
	return out
}

var (
	identRE = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*`)
	// Numbers and durations (1e3, 0x1f, 5m, 1h30m) are one token.
	numberRE = regexp.MustCompile(`^[0-9.][0-9A-Za-z.]*`)
	opRE     = regexp.MustCompile(`^(=~|!~|!=|==|<=|>=|[-+*/%^<>=!@(){}\[\],:])`)
)

func isIdent(tok string) bool  { return identRE.MatchString(tok) }
func isString(tok string) bool { return tok != "" && strings.ContainsRune("\"'`", rune(tok[0])) }

func promqlTokens(expr string) ([]string, error) {
	var toks []string
	for s := expr; s != ""; {
		switch c := s[0]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			s = s[1:]
		case c == '#':
			// A comment runs to the end of the line.
			if nl := strings.IndexByte(s, '\n'); nl >= 0 {
				s = s[nl:]
			} else {
				s = ""
			}
		case c == '"' || c == '\'' || c == '`':
			end := 1
			for end < len(s) && s[end] != c {
				if s[end] == '\\' && c != '`' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			toks = append(toks, s[:end+1])
			s = s[end+1:]
		default:
			var m string
			for _, re := range []*regexp.Regexp{identRE, numberRE, opRE} {
				if m = re.FindString(s); m != "" {
					break
				}
			}
			if m == "" {
				return nil, fmt.Errorf("unexpected %q in %q", s[:1], expr)
			}
			toks = append(toks, m)
			s = s[len(m):]
		}
	}
	return toks, nil
}

// TestPromQLSelectors checks the tokenizer the other tests rely on: if it
// took a function or a label for a metric, or missed a metric, their checks
// would prove nothing.
func TestPromQLSelectors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want string
	}{
		{`up{job="execq-coordinator"} == 0`, `up{job}`},
		{`sum by (le) (increase(execq_dispatch_latency_seconds_bucket[5m]))`, `execq_dispatch_latency_seconds_bucket{}`},
		{`histogram_quantile(0.95, sum by (le, status) (rate(execq_exec_duration_seconds_bucket[5m:1m])))`, `execq_exec_duration_seconds_bucket{}`},
		{`sum by (end_reason) (rate(a_total{status="failed", end_reason=~"x|y"}[10m])) / ignoring (end_reason) group_left () sum(rate(a_total[10m])) > 0.1 and on () sum(increase(a_total[10m])) >= 20`,
			`a_total{status,end_reason} a_total{} a_total{}`},
		{`(max by (node) (n_up) == 0) and on (node) (max by (node) (q{status="queued"}) > 0)`, `n_up{} q{status}`},
		{`count(max by (node) (n_up{node=~"x"}) == 0) or vector(0)`, `n_up{node}`},
		{`absent(up{job="j"} == 1)`, `up{job}`},
		{`m - time() < 14 * 86400`, `m{}`},
		{`{__name__="m", label_with_comma="a,}b"} offset 1h`, `m{label_with_comma}`},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, `m{}`},
		{`rate(m[1h30m] @ end())`, `m{}`},
	} {
		sels, err := promqlSelectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, s := range sels {
			got = append(got, s.Metric+"{"+strings.Join(s.Labels, ",")+"}")
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.expr, strings.Join(got, " "), tc.want)
		}
	}
	if _, err := promqlSelectors(`m{job=}`); err == nil {
		t.Error("a matcher without a value was accepted")
	}
	if got := grafanaToPromQL(`rate(m{node=~"$node", x="${x:regex}"}[$__rate_interval])`); got != `rate(m{node=~"x", x="x"}[5m])` {
		t.Errorf("grafanaToPromQL: %s", got)
	}
}
