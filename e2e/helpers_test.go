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

// streamStatus is what the admin API's /sse_fanout/streams reports of a
// stream, as far as the tests read it.
type streamStatus struct {
	Key             string `json:"key"`
	DetachedClients int    `json:"detached_clients"`
	UpstreamState   string `json:"upstream_state"`
	UpstreamError   string `json:"upstream_error"`
}

// streamStatuses returns every stream's status, as the admin API's
// /sse_fanout/streams reports it.
func streamStatuses(t testing.TB) []streamStatus {
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
	var streams []streamStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &streams); err != nil {
		t.Fatal(err)
	}
	return streams
}

// detachedClients counts the clients that shared writers serve, over every
// stream, as the admin API's /sse_fanout/streams reports them.
func detachedClients(t testing.TB) int {
	t.Helper()
	n := 0
	for _, s := range streamStatuses(t) {
		n += s.DetachedClients
	}
	return n
}
