package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// decodeJSON reads exactly one JSON value of at most limit bytes into v (a
// pointer), for every route that takes a body. It refuses, with nothing
// decoded:
//   - a body labelled as anything but JSON (checkContentType), 415;
//   - invalid UTF-8, raw or as a lone surrogate escape such as \ud800,
//     duplicate keys, keys in another case than the field's tag, unknown
//     keys and trailing data, 400 malformed_json;
//   - null where it would be read as "" or 0 (see rejectNulls), 400
//     invalid_field.
//
// The decoder is encoding/json/v2's, from its mirror module
// go-json-experiment/json (the same code and API; it becomes the standard
// library's encoding/json/v2 in Go 1.27). Its defaults are the strict
// reading wanted here: encoding/json turns invalid UTF-8 into U+FFFD, keeps
// the last of two equal keys, and matches keys case-insensitively, and has
// no switch for any of the three. A hand-written pre-scan would have to
// re-implement JSON string escapes to find lone surrogates; v2 checks all of
// it in the one pass that decodes.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return jsonError(err, limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("malformed_json", "request body is empty; a JSON object is required")
	}
	if err := json.Unmarshal(body, v, json.RejectUnknownMembers(true)); err != nil {
		return jsonError(err, limit)
	}
	return rejectNulls(body, reflect.TypeOf(v).Elem())
}

// checkContentType refuses a body labelled as anything but application/json
// (with, at most, charset=utf-8): a form post or text is not read as JSON
// because it happens to parse. A body without a Content-Type is read as
// JSON — HTTP lets the recipient decide, and the body must parse anyway.
func checkContentType(r *http.Request) error {
	values := r.Header.Values("Content-Type")
	if len(values) == 0 {
		return nil
	}
	unsupported := &Error{http.StatusUnsupportedMediaType, "unsupported_media_type",
		fmt.Sprintf("request bodies must be application/json (UTF-8), got Content-Type %q", strings.Join(values, ", "))}
	if len(values) > 1 {
		return unsupported
	}
	mt, params, err := mime.ParseMediaType(values[0])
	if err != nil || mt != "application/json" {
		return unsupported
	}
	for name, value := range params {
		if name != "charset" || !strings.EqualFold(value, "utf-8") {
			return unsupported
		}
	}
	return nil
}

func jsonError(err error, limit int64) *Error {
	var tooBig *http.MaxBytesError
	var syntaxErr *jsontext.SyntacticError
	var semErr *json.SemanticError
	switch {
	case isTimeout(err):
		return errBodyTimeout
	case errors.As(err, &tooBig):
		return &Error{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", limit)}
	case errors.As(err, &semErr) && errors.Is(err, json.ErrUnknownName):
		return badRequest("malformed_json", fmt.Sprintf("request body has an unknown field at %q (names are case-sensitive)", semErr.JSONPointer))
	case errors.As(err, &syntaxErr):
		return badRequest("malformed_json", "request body is not valid JSON: "+trimJSONPrefix(err))
	case errors.As(err, &semErr):
		return badRequest("malformed_json", "request body does not fit the request: "+trimJSONPrefix(err))
	}
	return badRequest("malformed_json", "request body is not acceptable JSON: "+trimJSONPrefix(err))
}

// trimJSONPrefix drops the package name the decoder's messages start with.
func trimJSONPrefix(err error) string {
	msg := err.Error()
	for _, p := range []string{"jsontext: ", "json: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// pathUUID reads a UUID path variable in canonical form. Only the 36-character
// hyphenated form is accepted, so one command has one URL.
func pathUUID(r *http.Request, name string) (string, error) {
	raw := muxVar(r, name)
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return "", badRequest("invalid_id", fmt.Sprintf("%s %q is not a UUID", name, raw))
	}
	return id.String(), nil
}
