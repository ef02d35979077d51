package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/execq/execq/docs"
)

// The public API's description (docs/openapi.yaml) and a router over it,
// loaded once for every test.
var spec = sync.OnceValues(func() (*openapi3.T, routers.Router) {
	doc, err := openapi3.NewLoader().LoadFromData(docs.OpenAPIYAML)
	if err != nil {
		panic(fmt.Sprintf("load docs/openapi.yaml: %v", err))
	}
	if err := doc.Validate(context.Background()); err != nil {
		panic(fmt.Sprintf("docs/openapi.yaml is not a valid OpenAPI document: %v", err))
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		panic(fmt.Sprintf("route docs/openapi.yaml: %v", err))
	}
	return doc, router
})

// specTransport holds every exchange of the public API to docs/openapi.yaml,
// so the server and its description cannot drift:
//   - a request the description refuses must be refused by the server (4xx):
//     otherwise the description is stricter than the server;
//   - every answer must be one the description lists for that operation and
//     status, its JSON body matching the schema (additionalProperties: false,
//     so a field the server adds without the description fails), its declared
//     headers present. Byte answers (/output, also while following) are
//     checked by status and headers: their body is the command's bytes;
//   - a path or method the description does not list must get the JSON 404
//     or 405.
//
// The agent protocol (/agent/v1) is not in the public description and passes
// unchecked. A violation fails the test that made the request.
type specTransport struct {
	next http.RoundTripper

	mu   sync.Mutex
	t    testing.TB
	done bool // the test is ending: nothing may be reported any more
}

// specChecked wraps next so every exchange is checked against the
// description, reporting to t.
func specChecked(t testing.TB, next http.RoundTripper) http.RoundTripper {
	st := &specTransport{next: next, t: t}
	t.Cleanup(func() {
		st.mu.Lock()
		st.done = true
		st.mu.Unlock()
	})
	return st
}

func (st *specTransport) report(req *http.Request, format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.done {
		return
	}
	st.t.Errorf("OpenAPI (docs/openapi.yaml): %s %s: %s", req.Method, req.URL.RequestURI(), fmt.Sprintf(format, args...))
}

func (st *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/agent/") {
		return st.next.RoundTrip(req)
	}
	// The request body is checked from a copy (GetBody), so the request
	// goes out exactly as the test made it. A body without GetBody is
	// streamed by the test (a slow body, say) and is not checked.
	var body []byte
	hasBody := req.Body != nil && req.Body != http.NoBody
	checkBody := !hasBody
	if hasBody && req.GetBody != nil {
		rc, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		body, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		checkBody = true
	}
	_, router := spec()
	probe := req.Clone(context.Background())
	probe.Body = io.NopCloser(bytes.NewReader(body))
	if hasBody && len(probe.Header.Values("Content-Type")) == 0 {
		// The server reads a body without a Content-Type as JSON, as the
		// description says; the validator needs it named.
		probe.Header.Set("Content-Type", "application/json")
	}
	route, pathParams, routeErr := router.FindRoute(probe)
	var input *openapi3filter.RequestValidationInput
	var reqErr error
	if routeErr == nil {
		input = &openapi3filter.RequestValidationInput{
			Request: probe, PathParams: pathParams, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: bearerPresent, MultiError: true,
				ExcludeRequestBody: !checkBody},
		}
		reqErr = openapi3filter.ValidateRequest(context.Background(), input)
	}

	resp, err := st.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	isJSON := jsonType(resp.Header.Get("Content-Type"))
	if routeErr != nil {
		if !isJSON {
			st.report(req, "the description lists no such operation (%v): the answer must be the JSON error envelope, got %d with Content-Type %q",
				routeErr, resp.StatusCode, resp.Header.Get("Content-Type"))
			return resp, nil
		}
		resp.Body = checkedBody(resp.Body, func(b []byte) { st.checkNoRoute(req, resp, b, routeErr) })
		return resp, nil
	}
	if reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
		st.report(req, "the description refuses this request but the server answered %d:\n%v", resp.StatusCode, reqErr)
	}
	if resp.StatusCode == 499 {
		return resp, nil // client_closed: written to nobody
	}
	// Status and headers now; a JSON body once the caller has read it all
	// (so a test that reads slowly, or not at all, still does), and bytes
	// (/output, also while following) not at all: they are the command's.
	validate := func(body []byte, withBody bool) error {
		out := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: input,
			Status:                 resp.StatusCode,
			Header:                 resp.Header,
			Options: &openapi3filter.Options{
				IncludeResponseStatus: true,
				MultiError:            true,
				ExcludeResponseBody:   !withBody,
			},
		}
		out.SetBodyBytes(body)
		return openapi3filter.ValidateResponse(context.Background(), out)
	}
	if err := validate(nil, false); err != nil {
		st.report(req, "the answer %d does not match the description:\n%v", resp.StatusCode, err)
		return resp, nil
	}
	if !isJSON {
		st.exercised(route, resp.StatusCode)
		return resp, nil
	}
	resp.Body = checkedBody(resp.Body, func(b []byte) {
		if err := validate(b, true); err != nil {
			st.report(req, "the answer %d does not match the description:\n%v\nbody: %.512s", resp.StatusCode, err, b)
			return
		}
		st.exercised(route, resp.StatusCode)
	})
	return resp, nil
}

// exercised notes a checked success answer of route's operation.
func (st *specTransport) exercised(route *routers.Route, status int) {
	if status < 300 {
		exercised.Store(route.Operation.OperationID, true)
	}
}

// maxCheckedBody bounds the JSON answer kept for checking: a test of a
// record of many MiB measures the memory its reading costs, and checks
// that record itself.
const maxCheckedBody = 4 << 20

// checkedBody hands the caller body's bytes as they come and calls check
// with all of them when the caller reaches the end, unless they passed
// maxCheckedBody (or the caller stopped before the end).
func checkedBody(body io.ReadCloser, check func([]byte)) io.ReadCloser {
	return &teeBody{body: body, check: check}
}

type teeBody struct {
	body  io.ReadCloser
	check func([]byte)
	buf   bytes.Buffer
	over  bool
	done  bool
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if !b.over {
		if b.buf.Len()+n > maxCheckedBody {
			b.over = true
			b.buf = bytes.Buffer{}
		} else {
			b.buf.Write(p[:n])
		}
	}
	if errors.Is(err, io.EOF) && !b.done {
		b.done = true
		if !b.over {
			b.check(b.buf.Bytes())
		}
	}
	return n, err
}

func (b *teeBody) Close() error { return b.body.Close() }

// exercised holds the operations some test got a checked success answer
// from.
var exercised sync.Map

// TestMain runs the tests, then, when the whole package ran and passed,
// fails if some operation of the description never answered a test with a
// success that was checked against it: the description must not hold
// routes nothing holds to it.
func TestMain(m *testing.M) {
	code := m.Run()
	partial := false // some tests only, or none (-list)
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			partial = true
		}
	}
	if code != 0 || partial {
		os.Exit(code)
	}
	doc, _ := spec()
	var missing []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if _, ok := exercised.Load(op.OperationID); !ok {
				missing = append(missing, method+" "+path)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		fmt.Fprintf(os.Stderr, "FAIL: no test got a checked success answer from these operations of docs/openapi.yaml:\n  %s\n", strings.Join(missing, "\n  "))
		os.Exit(1)
	}
	os.Exit(code)
}

// checkNoRoute checks the answer to a path or method the description does
// not list: the JSON 404 or 405 envelope, or 400 invalid_path for a path
// with dot segments.
func (st *specTransport) checkNoRoute(req *http.Request, resp *http.Response, body []byte, routeErr error) {
	doc, _ := spec()
	var status string
	switch {
	case errors.Is(routeErr, routers.ErrMethodNotAllowed):
		status = "405"
	case errors.Is(routeErr, routers.ErrPathNotFound):
		status = "404"
	default:
		st.report(req, "no route: %v", routeErr)
		return
	}
	schema := doc.Components.Responses["NoRoute"].Value.Content.Get("application/json").Schema.Value
	v, err := decodeAny(body)
	if err == nil {
		err = schema.VisitJSON(v, openapi3.MultiErrors())
	}
	// A dot-segment path is refused (400 invalid_path) before any routing.
	pathRefused := resp.StatusCode == http.StatusBadRequest && err == nil && v.(map[string]any)["error"].(map[string]any)["code"] == "invalid_path"
	if got := fmt.Sprint(resp.StatusCode); got != status && !pathRefused {
		st.report(req, "the description lists no such operation (%v), so the answer must be %s, got %s: %.512s", routeErr, status, got, body)
		return
	}
	if err != nil {
		st.report(req, "the %s answer does not match the error envelope: %v\nbody: %.512s", status, err, body)
	}
}

// bearerPresent is the description's security check: the request carries
// a bearer token (the server decides whether it is valid).
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, tok, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return errors.New("no bearer token")
	}
	return nil
}

func jsonType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

func decodeAny(b []byte) (any, error) {
	var v any
	err := json.Unmarshal(b, &v)
	return v, err
}
