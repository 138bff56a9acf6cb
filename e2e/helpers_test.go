package e2e

// Helpers for the e2e tests; what the plugin's own tests share with them
// is in internal/testkit.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/sse-fanout/caddy-sse-fanout" // the module under test
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// detachedClients counts the clients that shared writers serve, over every
// stream, as the admin API's /sse_fanout/streams reports them.
func detachedClients(t testing.TB) int {
	t.Helper()
	info, err := caddy.GetModule("admin.api.sse_fanout")
	if err != nil {
		t.Fatal(err)
	}
	routes := info.New().(caddy.AdminRouter).Routes()
	rec := httptest.NewRecorder()
	if err := routes[0].Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, routes[0].Pattern, nil)); err != nil {
		t.Fatal(err)
	}
	var streams []struct {
		DetachedClients int `json:"detached_clients"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &streams); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range streams {
		n += s.DetachedClients
	}
	return n
}
