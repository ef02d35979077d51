// Package docs carries the documents the binaries serve: the OpenAPI
// description of the coordinator's public API (openapi.yaml), embedded so the
// coordinator serves the very file the repository documents and the tests
// check the server against.
package docs
