package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/api"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// grants runs `grants add|list|revoke`: the same operations as the admin
// API's /api/v1/grants, straight on the database, for bootstrapping and
// scripts.
func grants(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return errors.New(`"grants" needs a command: add, list or revoke`)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintln(os.Stdout, usage)
		return flag.ErrHelp
	}
	var (
		url, user, selector, id string
		f                       = newFlags("grants "+args[0], "[flags]")
	)
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	switch args[0] {
	case "add":
		f.Synopsis = "execq-coordinator grants add --user NAME --selector KEY=VALUE[,KEY=VALUE...]"
		f.String(&user, "user", "", "name of the user to grant to")
		f.String(&selector, "selector", "", `containers to grant, e.g. "node=host-1" or "node=host-1,team=db" (all must match; keys node and container are the node's name and the container's ID)`)
	case "list":
	case "revoke":
		f.Synopsis = "execq-coordinator grants revoke --id GRANT_ID"
		f.String(&id, "id", "", "grant_id to revoke")
	default:
		fmt.Fprintln(os.Stderr, usage)
		return fmt.Errorf(`unknown command "grants %s": want add, list or revoke`, args[0])
	}
	if err := parse(f, args[1:]); err != nil {
		return err
	}
	// Check what can be checked before touching the database.
	var sel shared.Selector
	switch args[0] {
	case "add":
		if user == "" {
			return errors.New("--user is required")
		}
		var err error
		if sel, err = shared.ParseSelector(selector); err != nil {
			return fmt.Errorf("--selector: %w", err)
		}
	case "revoke":
		if u, err := uuid.Parse(id); err != nil || len(id) != 36 {
			return fmt.Errorf("--id %q is not a grant ID (a UUID)", id)
		} else {
			id = u.String()
		}
	}
	st, err := openStore(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	switch args[0] {
	case "add":
		g, _, err := st.CreateGrant(ctx, user, sel)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("--user: there is no user named %q", user)
		}
		if err != nil {
			return err
		}
		return out.Encode(api.GrantJSON(g))
	case "list":
		gs, err := st.ListGrants(ctx)
		if err != nil {
			return err
		}
		list := shared.GrantList{Grants: make([]shared.Grant, len(gs))}
		for i, g := range gs {
			list.Grants[i] = api.GrantJSON(g)
		}
		return out.Encode(list)
	default: // revoke
		g, err := st.RevokeGrant(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("--id: there is no grant %s", id)
		}
		if err != nil {
			return err
		}
		return out.Encode(api.GrantJSON(g))
	}
}
