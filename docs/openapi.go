package docs

import (
	_ "embed"
	"encoding/json"
	"fmt"

	yaml "go.yaml.in/yaml/v4"
)

// OpenAPIYAML is docs/openapi.yaml as written.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte

// OpenAPIJSON converts OpenAPIYAML to JSON. The document keeps every map key
// a string (status codes are quoted), so it maps onto JSON objects as is.
func OpenAPIJSON() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(OpenAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("parse docs/openapi.yaml: %w", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("convert docs/openapi.yaml to JSON: %w", err)
	}
	return js, nil
}
