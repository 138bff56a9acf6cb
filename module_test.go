package ssefanout

// The module and its request handling as a whole.

import (
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestModuleIsRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.handlers.sse_fanout")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(*Handler); !ok {
		t.Fatalf("module New returns %T", info.New())
	}
}

func TestResponseHeaders(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	c := testkit.OpenClient(t, base+"/rh", nil)
	if ct := c.Resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := c.Resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestNonGETGoesToNextHandler(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+"\n\trespond \"next handler\" 202")
	resp, err := testkit.HTTPClient.Post(base+"/events", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST status %d, want 202 from the next handler", resp.StatusCode)
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("origin saw %d requests, want 0", n)
	}
}

func TestMaxClientsAnswers503WithRetryAfter(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_clients 2\n}")
	testkit.OpenClient(t, base+"/full", nil)
	testkit.OpenClient(t, base+"/full", nil)
	req, _ := http.NewRequest(http.MethodGet, base+"/full", nil)
	resp, err := testkit.HTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third client: status %d, want 503", resp.StatusCode)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	testkit.OpenClient(t, base+"/other", nil) // the limit is per stream
}

// TestClientOfALiveStreamIsAnsweredWhileOriginIsDown: once a stream has
// been live, a client that joins while its origin is down is answered with
// the stream, and gets keepalives until the origin is back. (A stream that
// has never been live answers with the origin's refusal instead:
// TestNeverLiveStreamAnswersWithTheOriginsRefusal.)
func TestClientOfALiveStreamIsAnsweredWhileOriginIsDown(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms\n}")
	first := testkit.OpenClient(t, base+"/down", nil)
	before := origin.NextConn(t)
	before.Send("data: before\n\n")
	if ev := first.NextEvent(t); ev.Data != "before" {
		t.Fatalf("got %+v", ev)
	}
	origin.Status.Store(http.StatusInternalServerError)
	close(before.End)
	testkit.Eventually(t, "the origin to fail", func() bool { return counterValue(t, origin.URL(), "upstream_errors") >= 1 })
	c := testkit.OpenClient(t, base+"/down", nil) // answered although the origin fails
	c.WaitKeepalive(t)
	origin.Status.Store(0)
	up := origin.NextConn(t) // the hub retried on its own
	up.Send("data: back\n\n")
	if ev := c.NextEvent(t); ev.Data != "back" {
		t.Fatalf("got %+v", ev)
	}
}

// caddySide are the files of the package that meet Caddy: the module and
// its config, the Caddyfile, the request mapping, ServeHTTP and what it
// asks of Caddy's writer chain, the admin API. Every other file is the
// hub (the stream and its fan-out, the ring, clients, writers, upstream,
// catch-ups, compression, heartbeat), which imports nothing of Caddy.
var caddySide = []string{"module.go", "config.go", "caddyfile.go", "request.go", "serve.go", "admin.go"}

// TestHubImportsNothingOfCaddy holds the line between the hub and the
// Caddy side (caddySide): no other file of the package imports a Caddy
// package, so the hub could be driven without Caddy.
func TestHubImportsNothingOfCaddy(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	hub := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || slices.Contains(caddySide, name) {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		hub++
		for _, imp := range f.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); strings.HasPrefix(path, "github.com/caddyserver/") {
				t.Errorf("%s, a file of the hub, imports %s: what meets Caddy belongs to %v", name, path, caddySide)
			}
		}
	}
	for _, name := range caddySide {
		if _, err := os.Stat(name); err != nil {
			t.Errorf("caddySide names %s: %v", name, err)
		}
	}
	if hub < 10 {
		t.Errorf("only %d files of the hub found", hub)
	}
}
