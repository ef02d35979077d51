package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/execq/execq/docs"
	"github.com/execq/execq/shared"
)

// TestOpenAPIServed: the coordinator serves docs/openapi.yaml, as JSON, to a
// user; without a token it is 401 like every /api/v1 route.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.wantError(b.do(http.MethodGet, "/api/v1/openapi.json", "", nil), http.StatusUnauthorized, "unauthenticated")
	r := b.mustJSON(b.URL, http.MethodGet, "/api/v1/openapi.json", b.Alice.Token, nil, http.StatusOK, nil)
	served, err := openapi3.NewLoader().LoadFromData(r.Body)
	if err != nil {
		t.Fatalf("the served document does not load: %v", err)
	}
	if err := served.Validate(context.Background()); err != nil {
		t.Fatalf("the served document is not valid: %v", err)
	}
	file, _ := spec()
	got, _ := json.Marshal(served)
	want, _ := json.Marshal(file)
	if string(got) != string(want) {
		t.Fatalf("the served document differs from docs/openapi.yaml")
	}
}

// TestOpenAPIMatchesWireTypes: the Go wire types and their schemas in
// docs/openapi.yaml have exactly the same fields, of compatible JSON types,
// and the schemas refuse any other field. With the exchange checks of
// specTransport, a field added on either side alone fails a test.
func TestOpenAPIMatchesWireTypes(t *testing.T) {
	doc, _ := spec()
	cases := []struct {
		schema string
		typ    reflect.Type
		// response: every field is always sent, so all are required.
		response bool
	}{
		{"CommandExecutionRecord", reflect.TypeFor[shared.CommandExecutionRecord](), true},
		{"CommandExecutionRecord", reflect.TypeFor[shared.HistoryEntry](), true},
		{"HistoryPage", reflect.TypeFor[shared.HistoryPage](), true},
		{"ContainerList", reflect.TypeFor[shared.ContainerList](), true},
		{"ContainerInfo", reflect.TypeFor[shared.ContainerInfo](), true},
		{"ErrorBody", reflect.TypeFor[shared.ErrorBody](), true},
		{"ErrorDetail", reflect.TypeFor[shared.ErrorDetail](), true},
		{"Grant", reflect.TypeFor[shared.Grant](), true},
		{"GrantList", reflect.TypeFor[shared.GrantList](), true},
		{"GrantRequest", reflect.TypeFor[shared.GrantRequest](), false},
		{"SubmitRequest", reflect.TypeFor[shared.SubmitRequest](), false},
		{"SubmitBatch", reflect.TypeFor[shared.SubmitBatch](), false},
		{"SubmitBatchItem", reflect.TypeFor[shared.SubmitBatchItem](), false},
		{"SubmitBatchResult", reflect.TypeFor[shared.SubmitBatchResult](), true},
		{"SubmitBatchRecord", reflect.TypeFor[shared.SubmitBatchRecord](), true},
		{"CancelRequest", reflect.TypeFor[shared.CancelRequest](), false},
	}
	for _, tc := range cases {
		t.Run(tc.schema+"/"+tc.typ.Name(), func(t *testing.T) {
			ref := doc.Components.Schemas[tc.schema]
			if ref == nil {
				t.Fatalf("docs/openapi.yaml has no schema %s", tc.schema)
			}
			s := ref.Value
			if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has {
				t.Errorf("schema %s must say additionalProperties: false, so a field the server adds without it fails", tc.schema)
			}
			for i, ex := range s.Examples {
				if err := s.VisitJSON(ex); err != nil {
					t.Errorf("example %d of %s does not match its schema: %v", i, tc.schema, err)
				}
			}
			fields := jsonFields(tc.typ)
			var goNames, specNames []string
			for name := range fields {
				goNames = append(goNames, name)
			}
			for name := range s.Properties {
				specNames = append(specNames, name)
			}
			sort.Strings(goNames)
			sort.Strings(specNames)
			if !slices.Equal(goNames, specNames) {
				t.Fatalf("fields differ:\n  Go %s: %v\n  schema %s: %v", tc.typ, goNames, tc.schema, specNames)
			}
			for name, ft := range fields {
				types := schemaTypes(s.Properties[name].Value)
				want, nullable := goJSONType(ft)
				if !types[want] {
					t.Errorf("%s.%s: Go %s is JSON %s, the schema allows %v", tc.schema, name, ft, want, keys(types))
				}
				if tc.response && nullable != types["null"] {
					t.Errorf("%s.%s: Go %s nullable=%v, schema nullable=%v", tc.schema, name, ft, nullable, types["null"])
				}
				if tc.response && !slices.Contains(s.Required, name) {
					t.Errorf("%s.%s: the server always sends it; the schema must require it", tc.schema, name)
				}
			}
		})
	}
	// The nine contract fields come first, in the contract's order.
	rec := reflect.TypeFor[shared.CommandExecutionRecord]()
	var first []string
	for i := range 9 {
		first = append(first, strings.Split(rec.Field(i).Tag.Get("json"), ",")[0])
	}
	contract := []string{"id", "container_id", "requested_by", "program", "args", "status", "stdout", "stderr", "created_at"}
	if !slices.Equal(first, contract) || !slices.Equal(doc.Components.Schemas["CommandExecutionRecord"].Value.Required[:9], contract) {
		t.Errorf("the record must list the nine contract fields first: Go %v", first)
	}
	// The error codes the server sends are all in the description.
	js, err := docs.OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"malformed_json", "invalid_field", "invalid_id", "invalid_stream", "invalid_wait",
		"invalid_header", "unauthenticated", "rate_limited", "overloaded", "not_found", "unknown_container", "already_finished",
		"method_not_allowed", "body_too_large", "invalid_path", "body_timeout", "busy", "unsupported_media_type", "idempotency_key_reused", "internal",
		"unavailable", "timeout"} {
		if !strings.Contains(string(js), `"`+code+`"`) {
			t.Errorf("error code %s is not in docs/openapi.yaml", code)
		}
	}
}

// jsonFields maps a struct's JSON names to their Go types, embedded structs
// flattened as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name := strings.Split(tag, ",")[0]
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// goJSONType is the JSON type a Go type is sent as, and whether it can be
// null.
func goJSONType(t reflect.Type) (string, bool) {
	nullable := false
	if t.Kind() == reflect.Pointer {
		t, nullable = t.Elem(), true
	}
	switch t {
	case reflect.TypeFor[time.Time]():
		return "string", nullable
	case reflect.TypeFor[shared.Seconds]():
		return "integer", nullable
	case reflect.TypeFor[shared.IdempotencyKey]():
		return "string", nullable
	}
	switch t.Kind() {
	case reflect.String:
		return "string", nullable
	case reflect.Bool:
		return "boolean", nullable
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "integer", nullable
	case reflect.Slice:
		return "array", nullable
	case reflect.Struct, reflect.Map:
		return "object", nullable
	}
	return "unknown " + t.String(), nullable
}

// schemaTypes is the set of JSON types a schema allows (through oneOf and
// allOf too).
func schemaTypes(s *openapi3.Schema) map[string]bool {
	out := map[string]bool{}
	for _, typ := range s.Type.Slice() {
		out[typ] = true
	}
	for _, sub := range append(slices.Clone(s.OneOf), s.AllOf...) {
		for typ := range schemaTypes(sub.Value) {
			out[typ] = true
		}
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// recordingTB keeps what specTransport reports instead of failing.
type recordingTB struct {
	testing.TB
	reports []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.reports = append(r.reports, fmt.Sprintf(format, args...))
}

// TestSpecTransportCatchesDrift: the exchange checks fail a test for a
// server that drifts from the description: a field the description does
// not have, an undocumented status, an error code not listed for it, and a
// request the description refuses but the server accepts, a declared
// header missing.
func TestSpecTransportCatchesDrift(t *testing.T) {
	rec := shared.CommandExecutionRecord{ID: "a1b2c3d4-0000-0000-0000-000000000001", ContainerID: "f47ac10b-58cc-4372-a567-0e02b2c3d479",
		RequestedBy: "d290f1ee-6c54-4b01-90e6-d701748f0851", Program: "true", Args: []string{}, Status: shared.StatusQueued,
		CreatedAt: time.Date(2025, 6, 15, 12, 5, 0, 0, time.UTC)}
	good, _ := json.Marshal(rec)
	var extra map[string]any
	_ = json.Unmarshal(good, &extra)
	extra["priority"] = 1
	withExtra, _ := json.Marshal(extra)
	cases := []struct {
		name, method, path, body string
		status                   int
		answer                   []byte
		want                     string // "" means no report
	}{
		{"conforming", "GET", "/api/v1/commands/" + rec.ID, "", 200, good, ""},
		{"field not described", "GET", "/api/v1/commands/" + rec.ID, "", 200, withExtra, "priority"},
		{"status not described", "GET", "/api/v1/commands/" + rec.ID, "", 418, []byte(`{"error":{"code":"teapot","message":"m"}}`), "418"},
		{"code not listed", "GET", "/api/v1/commands/" + rec.ID, "", 404, []byte(`{"error":{"code":"gone","message":"m"}}`), "gone"},
		{"refused request accepted", "POST", "/api/v1/containers/" + rec.ContainerID + "/commands", `{"program":""}`, 202, good, "refuses this request"},
		{"declared header missing", "POST", "/api/v1/containers/" + rec.ContainerID + "/commands", `{"program":"true"}`, 202, good, "Location"},
		{"unlisted route", "GET", "/api/v1/nodes", "", 200, []byte(`{}`), "no such operation"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.answer)
			}))
			defer srv.Close()
			rtb := &recordingTB{TB: t}
			client := &http.Client{Transport: specChecked(rtb, http.DefaultTransport)}
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer x")
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != string(tc.answer) {
				t.Fatalf("the caller got %q, want the answer unchanged %q", body, tc.answer)
			}
			got := strings.Join(rtb.reports, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Fatalf("want no report, got:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Fatalf("want a report naming %q, got:\n%s", tc.want, got)
			}
		})
	}
}

// TestOpenAPIDotSegmentPaths: a path with "." or ".." segments is answered
// as the description says (400 invalid_path), on a listed route or not.
func TestOpenAPIDotSegmentPaths(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/api/v1/commands/..", "/api/v1/./containers", "/api/v1/nope/../containers"} {
		b.wantError(b.do(http.MethodGet, path, b.Alice.Token, nil), http.StatusBadRequest, "invalid_path")
	}
}
