package docs

import (
	"encoding/json"
	"testing"
)

func TestOpenAPIJSON(t *testing.T) {
	js, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Paths["/api/v1/commands/{id}"]["get"] == nil {
		t.Fatalf("converted document lost its content: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
}
