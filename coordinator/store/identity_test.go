package store

import (
	"errors"
	"strings"
	"testing"
)

func TestIdentities(t *testing.T) {
	t.Parallel()
	f := setup(t)
	u, utok, err := f.st.CreateUser(f.ctx, "ops", true)
	if err != nil {
		t.Fatal(err)
	}
	n, ntok, err := f.st.CreateNode(f.ctx, "host-1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.st.UserByToken(f.ctx, utok); err != nil || got != u {
		t.Errorf("user by token: %+v %v, want %+v", got, err, u)
	}
	if got, err := f.st.NodeByToken(f.ctx, ntok); err != nil || got != n {
		t.Errorf("node by token: %+v %v, want %+v", got, err, n)
	}
	// Each kind of token authenticates only its own kind.
	if _, err := f.st.UserByToken(f.ctx, ntok); !errors.Is(err, ErrNotFound) {
		t.Errorf("node token as a user: %v, want ErrNotFound", err)
	}
	if _, err := f.st.NodeByToken(f.ctx, utok); !errors.Is(err, ErrNotFound) {
		t.Errorf("user token as a node: %v, want ErrNotFound", err)
	}
	// Only the hash is stored.
	var stored int
	if err := f.st.db.GetContext(f.ctx, &stored, `SELECT count(*) FROM users WHERE position(convert_to($1, 'UTF8') IN token_hash) > 0`, utok); err != nil || stored != 0 {
		t.Errorf("token found in the users table (%v)", err)
	}
	if _, _, err := f.st.CreateUser(f.ctx, "ops", false); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate user name: %v, want ErrConflict", err)
	}
	if _, _, err := f.st.CreateNode(f.ctx, "host-1"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host-1") {
		t.Errorf("duplicate node name: %v, want ErrConflict naming it", err)
	}
}
