package ssefanout

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The regression tests of issue 10: what one client sends never reaches
// another, an origin cannot silence a stream, and no secret leaves the box.

func TestInjectedCursorIsRefusedAndNeverReachesOthers(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	for _, bad := range []string{
		"x%0Aevent:%20pwn%0Adata:%20INJECTED%0A%0A",
		"x%0Devent:%20pwn",
		"x%00y",
		"x%01y",
	} {
		if _, status := dialClient(t, base+"/s?last_event_id="+bad, nil); status != http.StatusBadRequest {
			t.Fatalf("cursor %s: status %d, want 400", bad, status)
		}
	}
	if n := origin.total.Load(); n != 0 {
		t.Fatalf("a refused cursor opened %d origin requests", n)
	}

	c := openClient(t, base+"/s", nil)
	up := origin.nextConn(t)
	if got := up.header.Get("Last-Event-ID"); got != "" {
		t.Fatalf("upstream asked with Last-Event-ID %q, want none", got)
	}
	up.send("id: 1\ndata: real\n\n")
	if ev := c.nextEvent(t); ev.Type != "" || ev.Data != "real" || ev.ID != "1" {
		t.Fatalf("second client got %+v, want the origin's event", ev)
	}
}

func TestFirstClientsCursorIsNeverPrimedToOthers(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	// The restart herd: the stream opens with its first client's cursor.
	first := openClient(t, base+"/prime", lastEventID("999999999"))
	up := origin.nextConn(t)
	if got := up.header.Get("Last-Event-ID"); got != "999999999" {
		t.Fatalf("upstream asked with Last-Event-ID %q, want the first client's", got)
	}
	// A later client is not primed with an id the origin never sent, and
	// the origin's id-less events carry no id to it.
	later := openClient(t, base+"/prime", nil)
	up.send("data: no id yet\n\n")
	for _, c := range []*testClient{first, later} {
		ev := c.nextEvent(t)
		if ev.Data != "no id yet" || ev.HasID {
			t.Fatalf("got %+v, want the id-less event with no id line", ev)
		}
	}
	up.send("id: 5\ndata: five\n\n")
	for _, c := range []*testClient{first, later} {
		if ev := c.nextEvent(t); ev.ID != "5" || ev.Data != "five" {
			t.Fatalf("got %+v, want id 5", ev)
		}
	}
	// Only now does the stream have a cursor to prime joining clients with.
	joined := openClient(t, base+"/prime", nil)
	if ev := joined.nextEvent(t); ev.ID != "5" || ev.HasData {
		t.Fatalf("joining client got %+v, want priming with id 5", ev)
	}
}

func TestOverlongCursorIsTreatedAsStaleAndNotEchoed(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tstale_event stale\n}")
	up, _ := startStream(t, origin, base+"/long", 3)

	long := strings.Repeat("9", maxCursorLen+1)
	c := openClient(t, base+"/long", lastEventID(long))
	if ev := c.nextData(t); ev.Type != "stale" || ev.Data != "" {
		t.Fatalf("first event %+v, want a stale event with no data", ev)
	}
	sendIDs(up, 4, 4)
	c.expectIDs(t, 4, 4)
	origin.noNewConn(t) // no catch-up with it either
}

func TestOriginThatReusesIDsKeepsFlowing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []string // events of the first connection
		after  []string // events of the reconnection
		want   []string // data the client sees after the reconnect
	}{
		{
			name:   "the same id on every event",
			before: []string{"id: v1\ndata: a\n\n", "id: v1\ndata: b\n\n"},
			after:  []string{"id: v1\ndata: c\n\n", "id: v1\ndata: d\n\n"},
			want:   []string{"c", "d"},
		},
		{
			name:   "counting again from 1",
			before: []string{"id: 1\ndata: a\n\n", "id: 2\ndata: b\n\n", "id: 3\ndata: c\n\n"},
			after:  []string{"id: 1\ndata: fresh 1\n\n", "id: 2\ndata: fresh 2\n\n"},
			want:   []string{"fresh 1", "fresh 2"},
		},
		{
			name:   "cycling ids",
			before: []string{"id: 0\ndata: a\n\n", "id: 1\ndata: b\n\n", "id: 0\ndata: c\n\n"},
			after:  []string{"id: 1\ndata: d\n\n", "id: 0\ndata: e\n\n"},
			want:   []string{"d", "e"},
		},
		{
			name:   "a real resend, then new events",
			before: []string{"id: 1\ndata: a\n\n", "id: 2\ndata: b\n\n", "id: 3\ndata: c\n\n"},
			after:  []string{"id: 2\ndata: b\n\n", "id: 3\ndata: c\n\n", "id: 4\ndata: d\n\n"},
			want:   []string{"d"},
		},
		{
			name:   "a resend that goes on with a reused id",
			before: []string{"id: 1\ndata: a\n\n", "id: 2\ndata: b\n\n"},
			after:  []string{"id: 2\ndata: b\n\n", "id: 2\ndata: b again\n\n"},
			want:   []string{"b again"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := newTestOrigin(t)
			base := startCaddy(t, "sse_fanout "+origin.URL())
			c := openClient(t, base+"/reuse", nil)
			up := origin.nextConn(t)
			for _, ev := range tc.before {
				up.send(ev)
				c.nextData(t)
			}
			close(up.end)
			up2 := origin.nextConn(t)
			for _, ev := range tc.after {
				up2.send(ev)
			}
			for _, want := range tc.want {
				if ev := c.nextData(t); ev.Data != want {
					t.Fatalf("got data %q, want %q", ev.Data, want)
				}
			}
		})
	}
}

func TestSecretsStayOutOfLogsMetricsAndAdmin(t *testing.T) {
	const token, password = "Bearer SECRET-TOKEN-4711", "pw-0815-secret"
	origin := newTestOrigin(t)
	origin.status.Store(http.StatusBadGateway) // so the stream logs warnings
	withUser := strings.Replace(origin.URL(), "http://", "http://alice:"+password+"@", 1)

	logFile := filepath.Join(t.TempDir(), "caddy.log")
	adminPort, port := freePort(t), freePort(t)
	global := strings.Replace(testGlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	global = strings.Replace(global, "log {\n\t\tlevel "+testLogLevel, "log {\n\t\toutput file "+logFile+" {\n\t\t\troll_disabled\n\t\t}\n\t\tformat json\n\t\tlevel DEBUG", 1)
	loadCaddyfile(t, global+fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		key {http.request.header.Authorization}
		header_up Authorization {http.request.header.Authorization}
	}
}
`, port, withUser))
	t.Cleanup(func() {
		loadCaddyfile(t, testGlobalOptions())
		waitHandlersDone(t)
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	c := openClient(t, base+"/me", http.Header{"Authorization": {token}})
	eventually(t, "upstream failures", func() bool { return origin.total.Load() >= 2 })
	c.close()

	resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d/sse_fanout/streams", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(admin), `"/me`) {
		t.Fatalf("admin API does not list the stream: %s", admin)
	}

	var metrics strings.Builder
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	more, _ := reg.Gather()
	for _, mf := range append(families, more...) {
		metrics.WriteString(mf.String())
	}

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "upstream failed") {
		t.Fatalf("the log has no upstream warning to check:\n%s", logs)
	}
	for what, text := range map[string]string{"admin API": string(admin), "metrics": metrics.String(), "log": string(logs)} {
		for _, secret := range []string{"SECRET-TOKEN-4711", password, "alice"} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds %q:\n%s", what, secret, text)
			}
		}
	}
}

func TestBufferingHandlerInFrontIsNeverDetached(t *testing.T) {
	for _, tc := range []struct{ name, before string }{
		{"log_append of the response body", "log_append rbody {http.response.body}"},
		{"intercept", "intercept {\n\t\t\thandle_response {\n\t\t\t\trespond \"intercepted\"\n\t\t\t}\n\t\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := newTestOrigin(t)
			base := startCaddy(t, fmt.Sprintf("route {\n\t\t%s\n\t\tsse_fanout %s {\n\t\t\tdetach on\n\t\t}\n\t}", tc.before, origin.URL()))
			conn := rawDial(t, base, "/buffered")
			conn.SetReadDeadline(time.Now().Add(waitTimeout))
			head := make([]byte, 9)
			if _, err := io.ReadFull(conn, head); err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			if string(head) != "HTTP/1.1 " {
				t.Fatalf("the response begins %q, not with a status line", head)
			}
			if n := detachedClients(); n != 0 {
				t.Fatalf("%d clients detached behind a buffering handler", n)
			}
		})
	}
	t.Run("intercept that lets events through", func(t *testing.T) {
		origin := newTestOrigin(t)
		base := startCaddy(t, fmt.Sprintf("route {\n\t\tintercept {\n\t\t\t@err status 5xx\n\t\t\thandle_response @err {\n\t\t\t\trespond \"oops\"\n\t\t\t}\n\t\t}\n\t\tsse_fanout %s {\n\t\t\tdetach on\n\t\t}\n\t}", origin.URL()))
		rc := dialRaw(t, base, "/streamed")
		if rc.status != "HTTP/1.1 200 OK" {
			t.Fatalf("status %q", rc.status)
		}
		up := origin.nextConn(t)
		eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
		up.send("id: 1\ndata: through\n\n")
		if ev := rc.readEvent(t); ev.Data != "through" {
			t.Fatalf("got %+v", ev)
		}
	})
}

func TestReloadDuringCatchUpEndsTheClient(t *testing.T) {
	origin := newTestOrigin(t)
	site := func(heartbeat string) string {
		return "sse_fanout " + origin.URL() + " {\n\tbuffer 4\n\tclient_queue 5\n\theartbeat " + heartbeat + "\n}"
	}
	port := freePort(t)
	sites := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, site(heartbeat))
	}
	startCaddyfile(t, sites("15s"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	up, _ := startStream(t, origin, base+"/cu", 10)

	c := openClient(t, base+"/cu", lastEventID("3"))
	catchUp := origin.nextConn(t)
	sendIDs(catchUp, 4, 5) // the catch-up has not met the shared stream yet
	c.expectIDs(t, 4, 5)

	loadCaddyfile(t, testGlobalOptions()+sites("20s"))
	catchUp.waitClosed(t)
	sendIDs(up, 11, 11)
	// The client is ended, to resume with its cursor, never placed at the
	// live head with 6 to 10 missing.
	select {
	case ev := <-c.events:
		t.Fatalf("after the reload the catching-up client got %+v, want its stream ended", ev)
	case <-c.ended:
	case <-time.After(waitTimeout):
		t.Fatal("the catching-up client was not ended")
	}
}

func TestUnloadDuringCatchUpDoesNotHang(t *testing.T) {
	origin := newTestOrigin(t)
	other := newTestOrigin(t)
	port := freePort(t)
	site := func(upstream string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\tbuffer 4\n\t\tclient_queue 5\n\t}\n}\n", port, upstream)
	}
	startCaddyfile(t, site(origin.URL()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	startStream(t, origin, base+"/cu", 10)
	c := openClient(t, base+"/cu", lastEventID("3"))
	catchUp := origin.nextConn(t)
	sendIDs(catchUp, 4, 4)
	c.expectIDs(t, 4, 4)

	// A new upstream: the old registry is destructed with a catch-up on.
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		loadCaddyfile(t, testGlobalOptions()+site(other.URL()))
	}()
	select {
	case <-loaded:
	case <-time.After(waitTimeout):
		t.Fatal("the reload hangs")
	}
	c.waitEnded(t)
}

func TestCatchUpsAreBounded(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 4\n\tclient_queue 5\n\tmax_catch_ups 3\n\tstale_event stale\n}")
	up, _ := startStream(t, origin, base+"/bogus", 5)

	var cs []*testClient
	for i := 0; i < 20; i++ {
		cs = append(cs, openClient(t, base+"/bogus", lastEventID("bogus-"+strconv.Itoa(i))))
	}
	eventually(t, "17 refused catch-ups", func() bool { return counterValue(t, origin.URL(), "catch_ups_refused") == 17 })
	if n := origin.total.Load(); n != 1+3 {
		t.Fatalf("origin saw %d requests, want 1 + max_catch_ups", n)
	}
	for i := 0; i < 3; i++ {
		close(origin.nextConn(t).end) // the origin cannot resume these
	}
	for _, c := range cs {
		if ev := c.nextData(t); ev.Type != "stale" {
			t.Fatalf("got %+v, want the stale event", ev)
		}
	}
	sendIDs(up, 6, 6) // the stream still flows, to every client
	for _, c := range cs {
		c.expectIDs(t, 6, 6)
	}
}

func TestIdleStreamGivesWayUnderMaxStreams(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_streams 1\n\tidle_close 1m\n}")
	junk := openClient(t, base+"/s?junk=1", nil)
	up := origin.nextConn(t)
	junk.close()
	eventually(t, "the junk client to leave", func() bool { return counterValue(t, origin.URL(), "clients") == 0 })

	c, status := dialClient(t, base+"/s?real=1", nil)
	if status != http.StatusOK {
		t.Fatalf("a new stream got %d while the only other one is idle", status)
	}
	up.waitClosed(t) // the idle one gave way
	origin.nextConn(t).send("id: 1\ndata: real\n\n")
	if ev := c.nextData(t); ev.Data != "real" {
		t.Fatalf("got %+v", ev)
	}
}

func TestFailedReloadLeavesTheRunningSettings(t *testing.T) {
	origin := newTestOrigin(t)
	port := freePort(t)
	site := func(extra string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout /a* %s {\n\t\t%s\n\t}\n\tsse_fanout /b* %s\n}\n", port, origin.URL(), extra, origin.URL())
	}
	startCaddyfile(t, site("max_clients 0"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	// The new config provisions the first handler, then fails.
	bad := strings.Replace(site("max_clients 1"), "sse_fanout /b* "+origin.URL(), "sse_fanout /b* ftp://nowhere", 1)
	cfg := adaptCaddyfile(t, testGlobalOptions()+bad)
	if err := loadJSON(cfg); err == nil {
		t.Fatal("the bad config loaded")
	}
	openClient(t, base+"/a", nil)
	if _, status := dialClient(t, base+"/a", nil); status != http.StatusOK {
		t.Fatalf("second client: status %d; the failed config's max_clients 1 applies", status)
	}
}

func TestRedirectsLeavingTheOriginAreRefused(t *testing.T) {
	var elsewhere sync.Map
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Store(r.Header.Get("X-Secret"), true)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: from elsewhere\n\n")
	}))
	t.Cleanup(other.Close)
	origin := newTestOrigin(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			http.Redirect(w, r, origin.URL()+"/moved", http.StatusFound)
			return
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(redirect.Close)
	// Same host: the redirect server and the origin share 127.0.0.1 but not
	// a port, so both count as other origins.
	base := startCaddy(t, "sse_fanout "+redirect.URL+" {\n\theader_up X-Secret s3cret\n}")
	c := openClient(t, base+"/away", nil)
	eventually(t, "the upstream error", func() bool { return counterValue(t, redirect.URL, "upstream_errors") >= 1 })
	c.close()
	if _, ok := elsewhere.Load("s3cret"); ok {
		t.Fatal("header_up was sent to another origin through a redirect")
	}
	found := false
	elsewhere.Range(func(any, any) bool { found = true; return false })
	if found {
		t.Fatal("a redirect to another origin was followed")
	}
}

func TestKeyPartsCannotMerge(t *testing.T) {
	for _, key := range []string{
		"{http.request.header.A}{http.request.header.B}",
		"{http.request.header.A} {http.request.header.B}", // several tokens: one template
	} {
		t.Run(key, func(t *testing.T) {
			origin := newTestOrigin(t)
			base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey "+key+"\n}")
			openClient(t, base+"/k", http.Header{"A": {"ab"}, "B": {"c"}})
			origin.nextConn(t)
			openClient(t, base+"/k", http.Header{"A": {"a"}, "B": {"bc"}})
			origin.nextConn(t) // a stream of its own
			openClient(t, base+"/k", http.Header{"A": {"a b"}})
			origin.nextConn(t)
			openClient(t, base+"/k", http.Header{"A": {"a"}, "B": {"b"}})
			origin.nextConn(t)
			openClient(t, base+"/k", http.Header{"A": {"ab"}, "B": {"c"}})
			origin.noNewConn(t) // the same parts: the first stream
		})
	}
}

func TestNoClientAttachesToAClosedStream(t *testing.T) {
	s := newStream(newRegistry(testSettings(), 0, "test"), streamRequest{key: "/c", label: "/c", upstreamURL: "http://127.0.0.1:1/c"})
	c := newClient(s)
	s.close(errStreamClosed)
	s.mu.Lock()
	s.clients[c] = struct{}{} // as a join racing the close would have it
	s.mu.Unlock()
	if s.attach(c, &detachedConn{}) {
		t.Fatal("a client attached to a closed stream, where no shared writer would end it")
	}
}

func TestEncodedCursorParameterIsStillACursor(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	up, _ := startStream(t, origin, base+"/enc", 5)
	c := openClient(t, base+"/enc?last%5Fevent%5Fid=3", nil)
	c.expectIDs(t, 4, 5)
	sendIDs(up, 6, 6)
	c.expectIDs(t, 6, 6)
	origin.noNewConn(t)
}

func TestHugeBuffersAreRefused(t *testing.T) {
	for _, sub := range []string{"buffer 100000000000", "client_queue 100000000000", "buffer 2000000"} {
		cfg := adaptCaddyfile(t, testGlobalOptions()+"http://127.0.0.1:1 {\n\tsse_fanout http://127.0.0.1:2 {\n\t\t"+sub+"\n\t}\n}\n")
		err := loadJSON(cfg)
		if err == nil {
			t.Fatalf("%s: the config loaded", sub)
		}
		if !strings.Contains(err.Error(), strings.Fields(sub)[0]) {
			t.Fatalf("%s: error %v does not name the subdirective", sub, err)
		}
	}
}
