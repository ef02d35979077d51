package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/execq/execq/shared"
)

// rejectNulls walks the JSON document data against the Go type t it was
// decoded into, and returns a *shared.ValidationError naming the first JSON
// null that landed where null has no meaning. The decoder reads null into
// a string, a number, a bool or a struct as its zero value, so
// {"args":["a",null]} would become ["a",""] and {"attempt":null} attempt 0:
// input silently rewritten instead of refused.
//
// null stays allowed where Go itself has a "nothing": a pointer (absent, as
// exit_code), and a whole slice or map (empty: Go clients send a nil slice
// as null). Keys are matched to fields exactly, as the decoder matches them
// (decodeJSON). data must be valid JSON the decoder accepted; unknown keys
// are skipped (the decoder refuses them anyway).
func rejectNulls(data []byte, t reflect.Type) error {
	if !hasNull(data) {
		return nil // the common case, found without tokenising 8 MiB of base64
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return walkNulls(dec, t, "")
}

// hasNull reports whether the valid JSON document data holds a null
// literal. Outside strings the only token starting with 'n' is null, so it
// is enough to skip strings, which IndexByte does fast.
func hasNull(data []byte) bool {
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case 'n':
			return true
		case '"':
			for { // to the closing quote: one not preceded by an odd run of backslashes
				j := bytes.IndexByte(data[i+1:], '"')
				if j < 0 {
					return false
				}
				i += 1 + j
				k := i - 1
				for data[k] == '\\' { // stops at the opening quote at the latest
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		}
	}
	return false
}

// walkNulls reads one value from dec. t nil means any value is accepted.
func walkNulls(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("re-read request body: %w", err)
	}
	if tok == nil {
		if t == nil || nullable(t) {
			return nil
		}
		field := path
		if field == "" {
			field = "request body"
		}
		return &shared.ValidationError{Field: field, Message: "must not be null"}
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && t.Kind() == reflect.Interface {
		t = nil
	}
	switch tok {
	case json.Delim('{'):
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return fmt.Errorf("re-read request body: %w", err)
			}
			name, _ := key.(string)
			var ft reflect.Type
			fpath := join(path, name)
			switch {
			case t == nil:
			case t.Kind() == reflect.Struct:
				ft = fieldType(t, name)
			case t.Kind() == reflect.Map:
				ft = t.Elem()
			}
			if err := walkNulls(dec, ft, fpath); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case json.Delim('['):
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkNulls(dec, et, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	}
	if err != nil {
		return fmt.Errorf("re-read request body: %w", err)
	}
	return nil
}

// nullable reports whether JSON null means something for a value of type t.
func nullable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Slice, reflect.Map:
		return true
	}
	return false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldType finds the type of the field the decoder fills from key: the
// field whose JSON name is exactly key (decodeJSON matches names
// case-sensitively). Fields of embedded structs without a tag are promoted,
// as in encoding/json. It returns nil for an unknown key.
func fieldType(t reflect.Type, key string) reflect.Type {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if ft := fieldType(et, key); ft != nil {
					return ft
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f.Type
		}
	}
	return nil
}
