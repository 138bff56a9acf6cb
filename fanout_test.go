package ssefanout

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// sameEvent reports whether two events look the same to an EventSource.
func sameEvent(a, b Event) bool {
	return a.Type == b.Type && a.Data == b.Data && a.HasData == b.HasData && a.ID == b.ID
}

// originScript is a stream with the shapes that trip proxies up, and the
// events an EventSource reads from it.
var originScript = []struct {
	raw  string
	want []Event
}{
	{": hello, this comment is not forwarded\n\n", nil},
	{"data: first\n\n", []Event{{Data: "first", HasData: true}}},
	{"event: update\r\ndata: {\"a\":1}\r\nid: 1\r\n\r\n", []Event{{Type: "update", Data: `{"a":1}`, HasData: true, ID: "1", HasID: true}}},
	{"data: line one\ndata:line two\ndata\n\n", []Event{{Data: "line one\nline two\n", HasData: true, ID: "1"}}},
	{"data:\n\n", []Event{{Data: "", HasData: true, ID: "1"}}},
	{"id: 2\rdata:  leading space\r\r", []Event{{Data: " leading space", HasData: true, ID: "2", HasID: true}}},
	{"event: ünïcödé\ndata: 日本語 ✓\nunknown: field\n\n", []Event{{Type: "ünïcödé", Data: "日本語 ✓", HasData: true, ID: "2"}}},
	{"id: 3\n\n", []Event{{ID: "3", HasID: true}}},
	{"event: ignored-no-data\nid: 4\n\n", []Event{{Type: "ignored-no-data", ID: "4", HasID: true}}},
	{"id\ndata: cursor reset\n\n", []Event{{Data: "cursor reset", HasData: true, ID: "", HasID: true}}},
}

// sendScript writes originScript, then n numbered events, and returns
// every event a client must read.
func sendScript(c *originConn, n int) []Event {
	var want []Event
	for _, step := range originScript {
		c.send(step.raw)
		want = append(want, step.want...)
	}
	for i := 1; i <= n; i++ {
		c.send(fmt.Sprintf("id: n%d\ndata: event %d\n\n", i, i))
		want = append(want, Event{Data: fmt.Sprintf("event %d", i), HasData: true, ID: fmt.Sprintf("n%d", i), HasID: true})
	}
	return want
}

// readAll reads len(want) events from c and reports the first difference.
func readAll(t *testing.T, c *testClient, want []Event) error {
	t.Helper()
	for i, w := range want {
		got := c.nextEvent(t)
		if !sameEvent(got, w) {
			return fmt.Errorf("event %d: got %+v, want %+v", i, got, w)
		}
	}
	return nil
}

func TestFanOutToManyClientsOverOneUpstream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	const clients = 200
	var conns []*testClient
	for i := 0; i < clients; i++ {
		conns = append(conns, openClient(t, base+"/events", nil))
	}
	up := origin.nextConn(t)
	want := sendScript(up, 100)

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readAll(t, c, want); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
	if up.path != "/events" {
		t.Fatalf("upstream path %q, want /events", up.path)
	}
}

func TestConcurrentFirstClientsOpenOneUpstream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	const clients = 50
	var wg sync.WaitGroup
	opened := make(chan *testClient, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, status := dialClient(t, base+"/race", nil)
			if status == http.StatusOK {
				opened <- c
			}
		}()
	}
	wg.Wait()
	close(opened)
	if len(opened) != clients {
		t.Fatalf("%d of %d clients got a stream", len(opened), clients)
	}
	up := origin.nextConn(t)
	up.send("data: hi\n\n")
	for c := range opened {
		if ev := c.nextEvent(t); ev.Data != "hi" {
			t.Fatalf("got %+v, want data hi", ev)
		}
	}
	origin.noNewConn(t)
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestPathsAndQueriesAreSeparateStreams(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	paths := []string{"/a", "/b", "/a?room=1", "/a?room=2"}
	clients := map[string][]*testClient{}
	ups := map[string]*originConn{}
	for _, p := range paths {
		clients[p] = []*testClient{openClient(t, base+p, nil), openClient(t, base+p, nil)}
		up := origin.nextConn(t)
		ups[up.path] = up
	}
	for _, p := range paths {
		up := ups[p]
		if up == nil {
			t.Fatalf("no upstream connection for %s; have %v", p, ups)
		}
		up.send("data: for " + p + "\n\n")
	}
	for _, p := range paths {
		for _, c := range clients[p] {
			if ev := c.nextEvent(t); ev.Data != "for "+p {
				t.Fatalf("client of %s got %q", p, ev.Data)
			}
		}
	}
	origin.noNewConn(t)
}

func TestUpstreamURLKeepsBasePath(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+"/origin/")
	openClient(t, base+"/feed/x%2Fy?q=a+b&r=1", nil)
	up := origin.nextConn(t)
	if want := "/origin/feed/x%2Fy?q=a+b&r=1"; up.path != want {
		t.Fatalf("upstream request URI %q, want %q", up.path, want)
	}
}

func TestHeartbeatOnSilentStream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms\n}")
	c := openClient(t, base+"/quiet", nil)
	origin.nextConn(t)
	for i := 0; i < 3; i++ {
		c.waitKeepalive(t)
	}
	select {
	case ev := <-c.events:
		t.Fatalf("a keepalive must not be an event, got %+v", ev)
	default:
	}
}

func TestRetryIsInjectedAndRewritten(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 2500ms\n}")
	c := openClient(t, base+"/r", nil)
	first := c.nextBlock(t)
	if !first.HasRetry || first.Retry != 2500 || first.HasData {
		t.Fatalf("first block %+v, want retry 2500 alone", first)
	}
	up := origin.nextConn(t)
	up.send("retry: 10000\ndata: one\n\n")
	up.send("retry: 9000\n\n")
	up.send("data: two\n\n")
	for _, want := range []string{"one", "two"} {
		ev := c.nextBlock(t)
		if ev.HasRetry {
			t.Fatalf("origin retry leaked through: %+v", ev)
		}
		if ev.Data != want {
			t.Fatalf("got %+v, want data %q", ev, want)
		}
	}
}

func TestOriginRetryPassesThroughWhenUnset(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	early := openClient(t, base+"/r", nil)
	up := origin.nextConn(t)
	up.send("retry: 7000\n\n")
	if ev := early.nextBlock(t); !ev.HasRetry || ev.Retry != 7000 {
		t.Fatalf("got %+v, want retry 7000", ev)
	}
	up.send("data: after\n\n")
	if ev := early.nextEvent(t); ev.Data != "after" {
		t.Fatalf("got %+v", ev)
	}
	late := openClient(t, base+"/r", nil)
	if ev := late.nextBlock(t); !ev.HasRetry || ev.Retry != 7000 {
		t.Fatalf("late joiner got %+v first, want retry 7000", ev)
	}
}

func TestUpstreamClosesAfterIdleClose(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tidle_close 50ms\n}")
	c := openClient(t, base+"/idle", nil)
	up := origin.nextConn(t)
	c.close()
	up.waitClosed(t)

	// The next client opens a fresh upstream connection.
	openClient(t, base+"/idle", nil)
	origin.nextConn(t)
}

func TestUpstreamStaysWarmWithinIdleClose(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tidle_close 1m\n}")
	first := openClient(t, base+"/warm", nil)
	up := origin.nextConn(t)
	first.close()
	second := openClient(t, base+"/warm", nil)
	up.send("data: still here\n\n")
	if ev := second.nextEvent(t); ev.Data != "still here" {
		t.Fatalf("got %+v", ev)
	}
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestClientIsAnsweredWhileOriginIsDown(t *testing.T) {
	origin := newTestOrigin(t)
	origin.status.Store(http.StatusInternalServerError)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms\n}")
	c := openClient(t, base+"/down", nil) // answered although the origin fails
	c.waitKeepalive(t)
	origin.status.Store(0)
	up := origin.nextConn(t) // the hub retried on its own
	up.send("data: back\n\n")
	if ev := c.nextEvent(t); ev.Data != "back" {
		t.Fatalf("got %+v", ev)
	}
}

func TestUpstreamRequestHeaders(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\theader_up X-Api-Key secret\n\theader_up X-Multi a\n\theader_up X-Multi b\n}")
	openClient(t, base+"/h", http.Header{
		"Cookie":        {"session=alice"},
		"Authorization": {"Bearer alice"},
	})
	up := origin.nextConn(t)
	checks := map[string]string{
		"Accept":        "text/event-stream",
		"Cache-Control": "no-cache",
		"X-Api-Key":     "secret",
		"X-Multi":       "a,b",
		"Cookie":        "",
		"Authorization": "",
	}
	for name, want := range checks {
		if got := strings.Join(up.header.Values(name), ","); got != want {
			t.Errorf("upstream header %s = %q, want %q", name, got, want)
		}
	}
}

func TestResponseHeaders(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	c := openClient(t, base+"/rh", nil)
	if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := c.resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestNonGETGoesToNextHandler(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+"\n\trespond \"next handler\" 202")
	resp, err := httpClient.Post(base+"/events", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST status %d, want 202 from the next handler", resp.StatusCode)
	}
	if n := origin.total.Load(); n != 0 {
		t.Fatalf("origin saw %d requests, want 0", n)
	}
}

func TestMaxClientsAnswers503WithRetryAfter(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_clients 2\n}")
	openClient(t, base+"/full", nil)
	openClient(t, base+"/full", nil)
	req, _ := http.NewRequest(http.MethodGet, base+"/full", nil)
	resp, err := httpClient.Do(req)
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
	openClient(t, base+"/other", nil) // the limit is per stream
}

func TestOversizeEventBreaksUpstreamNotClients(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_event_size 1KiB\n}")
	c := openClient(t, base+"/big", nil)
	up := origin.nextConn(t)
	up.send("data: small\n\n")
	up.send("data: " + strings.Repeat("x", 2048) + "\n\n")
	if ev := c.nextEvent(t); ev.Data != "small" {
		t.Fatalf("got %+v", ev)
	}
	up.waitClosed(t)
	again := origin.nextConn(t) // reconnected after a backoff
	again.send("data: after\n\n")
	if ev := c.nextEvent(t); ev.Data != "after" {
		t.Fatalf("got %+v, want the event after the reconnect", ev)
	}
}

func TestSlowClientIsCutOthersKeepGoing(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 4
	s := newStream(newRegistry(cfg, 0, "test"), streamRequest{key: "/s", label: "/s", upstreamURL: "http://127.0.0.1:1/s"})
	slow := newClient(s)
	fast := newClient(s)
	s.clients[slow] = struct{}{}
	s.clients[fast] = struct{}{}

	// The slow client's writer never runs; the fast one takes every frame
	// as soon as it is published.
	for i := 1; i <= 10; i++ {
		publishTo(s, &Event{Data: fmt.Sprint(i), HasData: true})
		frames, ok := s.framesAfter(nil, fast.cursor.Load())
		if !ok || len(frames) != 1 || string(frames[0].bytes) != fmt.Sprintf("data: %d\n\n", i) {
			t.Fatalf("fast client, event %d: got %d frames (ok=%v)", i, len(frames), ok)
		}
		fast.cursor.Store(frames[0].seq)
	}
	select {
	case <-slow.done:
		if slow.cause != errSlowClient {
			t.Fatalf("slow client cut with %v", slow.cause)
		}
	default:
		t.Fatal("a client 10 events behind with client_queue 4 was not cut")
	}
	select {
	case <-fast.done:
		t.Fatalf("fast client cut: %v", fast.cause)
	default:
	}
	if _, ok := s.clients[slow]; ok {
		t.Fatal("cut client still registered")
	}
}

// testSettings returns defaults as Provision would resolve them.
func testSettings() *settings {
	h := &Handler{logger: zap.NewNop()}
	return h.settings()
}

func TestOwnDeadlinesOnlyWithoutCaddysIdleWriter(t *testing.T) {
	plain := httptest.NewRecorder()
	if !ownDeadlines(plain) {
		t.Error("a plain writer needs deadlines of our own")
	}
	idle := &caddyhttp.IdleTimeoutWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: plain}}
	wrapped := &caddyhttp.ResponseWriterWrapper{ResponseWriter: idle}
	if ownDeadlines(wrapped) {
		t.Error("Caddy's write_idle_timeout writer already bounds every write")
	}
}
