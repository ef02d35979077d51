package shared

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Selector
		str  string
	}{
		{"node=host-1", Selector{"node": "host-1"}, "node=host-1"},
		{"node==host-1", Selector{"node": "host-1"}, "node=host-1"},
		{" team = db , node=host-1 ", Selector{"team": "db", "node": "host-1"}, "node=host-1,team=db"},
		{"io.execq/team=db_1.x", Selector{"io.execq/team": "db_1.x"}, "io.execq/team=db_1.x"},
		{"container=0f8fad5b-d9cb-469f-a165-70867728950e", Selector{"container": "0f8fad5b-d9cb-469f-a165-70867728950e"}, "container=0f8fad5b-d9cb-469f-a165-70867728950e"},
		{"tier=", Selector{"tier": ""}, "tier="},
		{"org.opencontainers.image.title=Web", Selector{"org.opencontainers.image.title": "Web"}, "org.opencontainers.image.title=Web"},
	} {
		got, err := ParseSelector(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got.String() != tc.str || len(got) != len(tc.want) || !got.Matches(tc.want) {
			t.Errorf("%q: got %v (%q), want %v (%q)", tc.in, got, got.String(), tc.want, tc.str)
		}
	}
}

func TestParseSelectorRefusesBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", "must not be empty"},
		{"   ", "must not be empty"},
		{"node", "want key=value"},
		{"!node", "want key=value"},
		{"node!=a", "only equality"},
		{"node in (a,b)", "want key=value"},
		{"node=a,", "requirement 2 is empty"},
		{",node=a", "requirement 1 is empty"},
		{"node=a,node=b", `key "node" is given twice`},
		{"node=a,node=a", `key "node" is given twice`},
		{"=a", "a key must not be empty"},
		{"node=a=b", "must not contain '='"},
		{"node===a", "must not contain '='"},
		{"-node=a", "the name must be"},
		{"no de=a", "the name must be"},
		{"Prefix.IO/x=a", "prefix before '/'"},
		{"a/b/c=d", "the name must be"},
		{"/x=a", "prefix before '/'"},
		{"x/=a", "the name must be"},
		{"node=-a", "value"},
		{"node=a b", "value"},
		{"node=héllo", "value"},
		{"node=a\x00", "value"},
		{"node=" + strings.Repeat("a", 64), "value"},
		{strings.Repeat("k", 64) + "=a", "the name must be"},
		{strings.Repeat("a=1,", 16) + "b=2", "at most 16 requirements"},
		{strings.Repeat("x", MaxSelectorBytes+1), "at most 4096 bytes"},
	} {
		sel, err := ParseSelector(tc.in)
		var verr *ValidationError
		if !errors.As(err, &verr) || verr.Field != "selector" {
			t.Errorf("%q: got %v, %v; want a ValidationError on selector", tc.in, sel, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %q does not say %q", tc.in, err, tc.want)
		}
	}
}

func TestValidateReportedLabels(t *testing.T) {
	t.Parallel()
	if err := ValidateReportedLabels("labels", map[string]string{"team": "db", "io.execq/tier": "", "a.b-c_d": "X.1"}); err != nil {
		t.Fatalf("valid labels: %v", err)
	}
	if err := ValidateReportedLabels("labels", nil); err != nil {
		t.Fatalf("no labels: %v", err)
	}
	many := map[string]string{}
	for i := range MaxReportedLabels + 1 {
		many[strings.Repeat("k", 1+i%60)+string(rune('a'+i/60))] = "v"
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"node": "x"}, "reserved"},
		{map[string]string{"container": "x"}, "reserved"},
		{map[string]string{"bad key": "x"}, "the name must be"},
		{map[string]string{"k": strings.Repeat("v", 64)}, "value"},
		{map[string]string{"k": "{\"json\":1}"}, "value"},
		{many, "at most 64 labels"},
	} {
		err := ValidateReportedLabels("containers[0].labels", tc.labels)
		var verr *ValidationError
		if !errors.As(err, &verr) || verr.Field != "containers[0].labels" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want a ValidationError saying %q", tc.labels, err, tc.want)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	t.Parallel()
	labels := map[string]string{"node": "h1", "team": "db", "tier": ""}
	for sel, want := range map[string]bool{
		"node=h1": true, "node=h1,team=db": true, "tier=": true,
		"node=h2": false, "node=h1,team=web": false, "zone=": false, "Node=h1": false,
	} {
		s, err := ParseSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Matches(labels); got != want {
			t.Errorf("%s matches %v: %v, want %v", sel, labels, got, want)
		}
	}
}
