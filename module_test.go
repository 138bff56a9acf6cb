package ssefanout

// The module and its request handling as a whole.

import (
	"net/http"
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
