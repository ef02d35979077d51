package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"

	"github.com/google/uuid"
)

// decodeJSON reads exactly one JSON value of at most limit bytes into v (a
// pointer), refusing unknown fields and trailing data so typos fail loudly,
// and null where it would be read as "" or 0 (see rejectNulls).
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return jsonError(err, limit)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, limit)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return badRequest("malformed_json", "request body must hold a single JSON object")
	}
	return rejectNulls(body, reflect.TypeOf(v).Elem())
}

func jsonError(err error, limit int64) *Error {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case isTimeout(err):
		return errBodyTimeout
	case errors.As(err, &tooBig):
		return &Error{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", limit)}
	case errors.Is(err, io.EOF):
		return badRequest("malformed_json", "request body is empty; a JSON object is required")
	case errors.As(err, &typeErr):
		return badRequest("malformed_json", fmt.Sprintf("field %q must be of JSON type %s", typeErr.Field, typeErr.Type))
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed_json", "request body is not valid JSON: "+err.Error())
	}
	return badRequest("malformed_json", "request body is not acceptable JSON: "+err.Error())
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
