package ssefanout

// The checks on config values.

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestValidateRejectsBadUpstreams(t *testing.T) {
	for _, tc := range []struct{ upstream, want string }{
		{"", "upstream is required"},
		{"ftp://o", "scheme must be http or https"},
		{"localhost:9000", "scheme must be http or https"},
		{"http://", "no host"},
		{"http://o/?a=1", "no query"},
		{"ftp://alice:pw-secret@o", "scheme must be http or https"},
		{"http://alice:pw-secret@o/%zz", "parsing upstream"},
	} {
		t.Run(tc.upstream, func(t *testing.T) {
			err := provision(t, Handler{Upstream: tc.upstream})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw-secret") || strings.Contains(err.Error(), "alice") {
				t.Fatalf("the error shows the upstream's userinfo: %v", err)
			}
		})
	}
}

// TestHugeBuffersAreRefused: in a JSON config, as in the Caddyfile
// (caddyfile_test.go), a buffer or client_queue past maxQueue is refused.
func TestHugeBuffersAreRefused(t *testing.T) {
	huge, over := 100000000000, 2000000
	for _, tc := range []struct {
		name string
		h    Handler
	}{
		{"buffer", Handler{Buffer: &huge}},
		{"client_queue", Handler{ClientQueue: huge}},
		{"buffer", Handler{Buffer: &over}},
	} {
		if err := provisionErr(t, tc.h); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Fatalf("%s: got %v, want an error naming it", tc.name, err)
		}
	}
}

// TestHeaderUpPlaceholderNeedsKey: in a JSON config, as in the Caddyfile,
// a per-request placeholder in header_up that the key lacks is refused.
func TestHeaderUpPlaceholderNeedsKey(t *testing.T) {
	h := Handler{HeaderUp: http.Header{"Authorization": {"{http.request.header.Authorization}"}}}
	if err := provisionErr(t, h); err == nil || !strings.Contains(err.Error(), "must be part of the key") {
		t.Fatalf("unsafe config: got %v, want the header_up/key error", err)
	}
	h.Key = "{path} {http.request.header.Authorization}"
	if err := provisionErr(t, h); err != nil {
		t.Fatalf("with the placeholder in the key: %v", err)
	}
}

// provisionErr provisions and validates h, a JSON config, with its
// upstream set to a closed port, and reports the error.
func provisionErr(t *testing.T, h Handler) error {
	t.Helper()
	h.Upstream = "http://127.0.0.1:1"
	return provision(t, h)
}

// provision provisions and validates h, a JSON config, as Caddy would,
// cleans it up, and reports the error.
func provision(t *testing.T, h Handler) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	h.Cleanup()
	return err
}

func mustConfig(t *testing.T, raw []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// TestPageOptionsAreCheckedInJSON: the checks on rewind, filter_param,
// cors, stale_event and upstream_backoff hold for a JSON config too, not only in the Caddyfile parser.
func TestPageOptionsAreCheckedInJSON(t *testing.T) {
	ten := 10
	for _, tc := range []struct {
		name string
		h    Handler
		want string
	}{
		{"negative rewind", Handler{Rewind: -1}, "rewind must not be negative"},
		{"rewind past buffer", Handler{Buffer: &ten, Rewind: 11}, "rewind must be at most buffer (10)"},
		{"filter_param with =", Handler{FilterParam: "a=b"}, `filter_param "a=b"`},
		{"filter_param last_event_id", Handler{FilterParam: "last_event_id"}, "carries the cursor"},
		{"stale_event with a line end", Handler{StaleEvent: "stale\ndata: x"}, "an event type cannot hold a line end"},
		{"cors not an origin", Handler{CORS: []string{"app.example"}}, "bad cors origin 'app.example'"},
		{"upstream_backoff floor too low", Handler{UpstreamBackoffFloor: caddy.Duration(100 * time.Millisecond)}, "upstream_backoff floor must be at least 250ms, got 100ms"},
		{"upstream_backoff negative floor", Handler{UpstreamBackoffFloor: -1}, "upstream_backoff floor must be at least 250ms"},
		{"upstream_backoff cap under floor", Handler{UpstreamBackoffFloor: caddy.Duration(5 * time.Second), UpstreamBackoffCap: caddy.Duration(time.Second)}, "upstream_backoff cap (1s) must be at least its floor (5s)"},
		{"upstream_backoff cap under the default floor", Handler{UpstreamBackoffCap: caddy.Duration(500 * time.Millisecond)}, "upstream_backoff cap (500ms) must be at least its floor (1s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := provisionErr(t, tc.h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateRejectsUnknownEncodings(t *testing.T) {
	for _, tc := range []struct {
		compress []string
		want     string
	}{
		{[]string{"gzip", "br"}, `compress: unknown encoding "br"`},
		{[]string{"zstd", "zstd"}, "compress: zstd is listed twice"},
	} {
		h := &Handler{Upstream: "http://o", Compress: tc.compress}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("compress %q: got %v, want an error containing %q", tc.compress, err, tc.want)
		}
	}
}

// TestSharedSettingsAreChosenOverEveryHandler: what a shared stream has one
// of is chosen over the handlers that share it, the same whatever order
// they come in; what is a client's own is not chosen at all.
func TestSharedSettingsAreChosenOverEveryHandler(t *testing.T) {
	a := &settings{heartbeat: 20 * time.Second, idleClose: 10 * time.Second, upstreamWait: 45 * time.Second, retry: 2000, maxClients: 1}
	b := &settings{heartbeat: 15 * time.Second, idleClose: -1, upstreamWait: -1, retry: -1}
	c := &settings{heartbeat: -1, idleClose: 30 * time.Second, upstreamWait: 60 * time.Second, retry: 5000}
	for _, tc := range []struct {
		name  string
		users []*settings
		want  settings
	}{
		{"one", []*settings{a}, *a},
		{"a and b", []*settings{a, b}, settings{heartbeat: 15 * time.Second, idleClose: 10 * time.Second, upstreamWait: -1, retry: -1}},
		{"a and c", []*settings{a, c}, settings{heartbeat: 20 * time.Second, idleClose: 30 * time.Second, upstreamWait: 60 * time.Second, retry: 5000}},
		{"all", []*settings{a, b, c}, settings{heartbeat: 15 * time.Second, idleClose: 30 * time.Second, upstreamWait: -1, retry: -1}},
		{"heartbeats off", []*settings{c, {heartbeat: -1, idleClose: 5 * time.Second, upstreamWait: 45 * time.Second}}, settings{heartbeat: -1, idleClose: 30 * time.Second, upstreamWait: 60 * time.Second, retry: 5000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // map order differs between runs
				users := make(map[<-chan struct{}]*settings)
				for _, cfg := range tc.users {
					users[make(chan struct{})] = cfg
				}
				got := sharedSettings(users)
				if got.heartbeat != tc.want.heartbeat || got.idleClose != tc.want.idleClose || got.upstreamWait != tc.want.upstreamWait || got.retry != tc.want.retry {
					t.Fatalf("heartbeat %v, idle_close %v, upstream_timeout %v, retry %d; want %v, %v, %v, %d",
						got.heartbeat, got.idleClose, got.upstreamWait, got.retry, tc.want.heartbeat, tc.want.idleClose, tc.want.upstreamWait, tc.want.retry)
				}
				for _, cfg := range tc.users {
					if got == cfg {
						t.Fatal("the shared settings are a handler's own")
					}
				}
			}
		})
	}
}
