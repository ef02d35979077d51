package e2e_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

// TestAnnotationsBecomeLabels: a real runc container's OCI annotations
// reach GET /api/v1/containers as labels through the real agent (those
// that are not valid labels left out, the reserved ones set by the
// coordinator), and a grant on one of them lets a user run a command there
// and nowhere else.
func TestAnnotationsBecomeLabels(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	labelled := runctest.Start(t, runctest.Options{Root: s.runcRoot, Annotations: map[string]string{
		"team":             "db",
		"io.execq/tier":    "web",
		"node":             "forged",      // reserved: the coordinator's
		"not a key":        "x",           // invalid key: left out
		"org.example.json": `{"a":[1,2]}`, // invalid value: left out
	}})
	plain := s.container()
	s.startAgent()
	s.waitReported(labelled, plain)

	var list shared.ContainerList
	if code := s.do("GET", "/api/v1/containers", s.userToken, nil, &list); code != http.StatusOK {
		t.Fatalf("list containers: %d", code)
	}
	want := map[string]string{"team": "db", "io.execq/tier": "web", "node": "e2e-node", "container": labelled.ID}
	found := false
	for _, c := range list.Containers {
		if c.ID != labelled.ID {
			continue
		}
		found = true
		if len(c.Labels) != len(want) {
			t.Fatalf("labels %v, want %v", c.Labels, want)
		}
		for k, v := range want {
			if c.Labels[k] != v {
				t.Fatalf("labels %v, want %v", c.Labels, want)
			}
		}
	}

	if !found {
		t.Fatalf("the labelled container is not listed: %+v", list.Containers)
	}

	// A user granted team=db sees and uses only the labelled container.
	var dba struct{ Token string }
	s.admin(&dba, "users", "create", "--name", "dba")
	var grant shared.Grant
	s.admin(&grant, "grants", "add", "--user", "dba", "--selector", "team=db")
	var mine shared.ContainerList
	if code := s.do("GET", "/api/v1/containers", dba.Token, nil, &mine); code != http.StatusOK || len(mine.Containers) != 1 || mine.Containers[0].ID != labelled.ID {
		t.Fatalf("dba lists %d %+v, want only %s", code, mine.Containers, labelled.ID)
	}
	if code := s.do("POST", "/api/v1/containers/"+plain.ID+"/commands", dba.Token, shared.SubmitRequest{Program: "true"}, nil); code != http.StatusNotFound {
		t.Fatalf("dba submits to the unlabelled container: %d, want 404", code)
	}
	var rec shared.CommandExecutionRecord
	if code := s.do("POST", "/api/v1/containers/"+labelled.ID+"/commands?wait=30s", dba.Token,
		shared.SubmitRequest{Program: "echo", Args: []string{"hi"}}, &rec); code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("dba submits to the labelled container: %d", code)
	}
	deadline := time.Now().Add(time.Minute)
	for !rec.Status.Terminal() && time.Now().Before(deadline) {
		s.do("GET", "/api/v1/commands/"+rec.ID+"?wait=5s", dba.Token, nil, &rec)
	}
	if rec.Status != shared.StatusSucceeded || rec.Stdout != "hi\n" {
		t.Fatalf("dba's command: %+v", rec)
	}
}
