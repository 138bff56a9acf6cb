package ssefanout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counterValue reads the named metric of an upstream.
func counterValue(t *testing.T, upstream string, name string) float64 {
	t.Helper()
	m := newUpstreamMetrics(upstream)
	collector, ok := map[string]prometheus.Collector{
		"clients":           m.clients,
		"streams":           m.streams,
		"events_received":   m.eventsReceived,
		"events_sent":       m.eventsSent,
		"slow_client_drops": m.slowClientDrops,
		"upstream_connects": m.upstreamConnects,
		"upstream_errors":   m.upstreamErrors,
		"replay_hits":       m.replayHits,
		"replay_misses":     m.replayMisses,
		"catch_ups":         m.catchUps,
		"catch_ups_refused": m.catchUpsRefused,
		"refused_full":      m.refusedFull,
		"refused_streams":   m.refusedStreams,
	}[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return testutil.ToFloat64(collector)
}

// stalledClient sends a GET for path and never reads the answer, with a
// receive buffer as small as the kernel allows.
func stalledClient(t *testing.T, base, path string) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(1024); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr)
}

func TestStalledClientIsCutOthersGetEverything(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tclient_queue 8\n}")
	var others []*testClient
	for i := 0; i < 50; i++ {
		others = append(others, openClient(t, base+"/stall", nil))
	}
	up := origin.nextConn(t)
	stalledClient(t, base, "/stall")
	eventually(t, "the stalled client to join", func() bool {
		return counterValue(t, origin.URL(), "clients") == 51
	})

	// Large events until the stalled socket's buffers are full and the
	// client falls client_queue events behind.
	payload := strings.Repeat("x", 16<<10)
	sent := 0
	for counterValue(t, origin.URL(), "slow_client_drops") == 0 {
		if sent >= 2000 {
			t.Fatal("the stalled client was never cut")
		}
		for i := 0; i < 4; i++ {
			sent++
			up.send(fmt.Sprintf("id: %d\ndata: %s\n\n", sent, payload))
		}
		for _, c := range others { // the others keep up all along
			for i := sent - 3; i <= sent; i++ {
				if ev := c.nextData(t); ev.ID != strconv.Itoa(i) {
					t.Fatalf("a reading client got id %s, want %d", ev.ID, i)
				}
			}
		}
	}
	if n := counterValue(t, origin.URL(), "slow_client_drops"); n != 1 {
		t.Fatalf("%v clients cut, want only the stalled one", n)
	}
	up.send("id: last\ndata: after the cut\n\n")
	for _, c := range others {
		if ev := c.nextData(t); ev.Data != "after the cut" {
			t.Fatalf("got %q", ev.Data)
		}
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

func TestConnectDisconnectCyclesLeakNothing(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	keeper := openClient(t, base+"/cycle", nil) // keeps the stream open
	up := origin.nextConn(t)
	up.send("id: 1\ndata: x\n\n")
	keeper.nextData(t)

	// One cycle first, so that lazily started machinery is in the baseline.
	first := openClient(t, base+"/cycle", nil)
	first.nextEvent(t)
	first.close()
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	for i := 0; i < 2000; i++ {
		c := openClient(t, base+"/cycle", nil)
		c.nextEvent(t) // the cursor priming: the client is served
		c.close()
	}
	eventually(t, "goroutines, fds and the clients gauge to come back", func() bool {
		return runtime.NumGoroutine() <= goroutines+2 && openFDs(t) <= fds+2 &&
			counterValue(t, origin.URL(), "clients") == 1
	})
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestBrokenOrigins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		options string
		break_  func(t *testing.T, o *testOrigin, up *originConn)
	}{
		{"non-200", "", func(t *testing.T, o *testOrigin, up *originConn) {
			o.status.Store(http.StatusBadGateway)
			close(up.end)
		}},
		{"wrong content type", "", func(t *testing.T, o *testOrigin, up *originConn) {
			o.contentType.Store("text/html")
			close(up.end)
		}},
		{"line that never ends", "\n\tmax_event_size 64KiB", func(t *testing.T, o *testOrigin, up *originConn) {
			chunk := strings.Repeat("y", 1<<20)
			for i := 0; i < 16; i++ {
				up.send(chunk)
			}
		}},
		{"event over the size limit", "\n\tmax_event_size 64KiB", func(t *testing.T, o *testOrigin, up *originConn) {
			up.send("data: " + strings.Repeat("z", 100<<10) + "\n\n")
		}},
		{"silent connection", "\n\tupstream_timeout 200ms", func(t *testing.T, o *testOrigin, up *originConn) {
			// nothing: the connection just hangs
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := newTestOrigin(t)
			base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms"+tc.options+"\n}")
			c := openClient(t, base+"/broken", nil)
			up := origin.nextConn(t)
			up.send("id: 1\ndata: before\n\n")
			if ev := c.nextData(t); ev.Data != "before" {
				t.Fatalf("got %+v", ev)
			}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			requests := origin.total.Load()

			tc.break_(t, origin, up)
			up.waitClosed(t)
			eventually(t, "the proxy to retry the origin", func() bool { return origin.total.Load() > requests })

			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 24<<20 {
				t.Errorf("allocated %d MiB while the origin misbehaved", grew>>20)
			}
			c.waitKeepalive(t) // the client is still connected and served

			origin.status.Store(0)
			origin.contentType.Store("")
			again := origin.nextConn(t)
			if got := again.header.Get("Last-Event-ID"); got != "1" {
				t.Errorf("resumed with Last-Event-ID %q, want 1", got)
			}
			again.send("id: 2\ndata: after\n\n")
			if ev := c.nextData(t); ev.Data != "after" {
				t.Fatalf("got %+v", ev)
			}
			// A backoff, not a hot loop: a handful of attempts at most.
			if n := origin.total.Load() - requests; n > 6 {
				t.Errorf("%d upstream requests while broken, want a few", n)
			}
		})
	}
}

func TestConnectFailureKeepsClients(t *testing.T) {
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	base := startCaddy(t, "sse_fanout "+dead+" {\n\theartbeat 50ms\n}")
	c := openClient(t, base+"/nowhere", nil)
	c.waitKeepalive(t)
	c.waitKeepalive(t)
	eventually(t, "an upstream error to be counted", func() bool {
		return counterValue(t, dead, "upstream_errors") >= 1
	})
}

func TestMaxStreams(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_streams 2\n}")
	openClient(t, base+"/a", nil)
	openClient(t, base+"/b", nil)
	openClient(t, base+"/a", nil) // an open stream takes more clients
	_, status := dialClient(t, base+"/c", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("third stream: status %d, want 503", status)
	}
	if n := counterValue(t, origin.URL(), "refused_streams"); n != 1 {
		t.Fatalf("refused_streams %v, want 1", n)
	}
}

func TestKeyIgnoreQuery(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey_ignore_query _ t\n}")
	a := openClient(t, base+"/k?room=1&_=123", nil)
	b := openClient(t, base+"/k?t=9&room=1&_=456", nil)
	up := origin.nextConn(t)
	if up.path != "/k?room=1" {
		t.Fatalf("upstream request %q, want /k?room=1", up.path)
	}
	up.send("data: shared\n\n")
	for _, c := range []*testClient{a, b} {
		if ev := c.nextData(t); ev.Data != "shared" {
			t.Fatalf("got %+v", ev)
		}
	}
	origin.noNewConn(t)
}

func TestRetryJitterSpreadsRetries(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 1s\n\tretry_jitter 50\n}")
	seen := map[int64]bool{}
	for i := 0; i < 20; i++ {
		c := openClient(t, base+"/j", nil)
		ev := c.nextBlock(t)
		if !ev.HasRetry || ev.Retry < 500 || ev.Retry > 1500 {
			t.Fatalf("retry %+v, want 500..1500", ev)
		}
		seen[ev.Retry] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 clients all got the same retry %v", seen)
	}
}

func TestRetryWithoutJitterIsExact(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tretry 2500ms\n}")
	for i := 0; i < 5; i++ {
		if ev := openClient(t, base+"/e", nil).nextBlock(t); ev.Retry != 2500 {
			t.Fatalf("retry %d, want exactly 2500", ev.Retry)
		}
	}
}

func TestHeaderUpPlaceholderNeedsKey(t *testing.T) {
	origin := newTestOrigin(t)
	unsafe := testGlobalOptions() + "http://127.0.0.1:1 {\n\tsse_fanout " + origin.URL() +
		" {\n\t\theader_up Authorization {http.request.header.Authorization}\n\t}\n}\n"
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(unsafe), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Validate(mustConfig(t, cfg))
	if err == nil || !strings.Contains(err.Error(), "must be part of the key") {
		t.Fatalf("unsafe config: got %v, want the header_up/key error", err)
	}
}

func mustConfig(t *testing.T, raw []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

func TestPerUserStreams(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tkey {http.request.header.Authorization}\n\theader_up Authorization {http.request.header.Authorization}\n}")
	alice := openClient(t, base+"/me", http.Header{"Authorization": {"Bearer alice"}})
	upAlice := origin.nextConn(t)
	bob := openClient(t, base+"/me", http.Header{"Authorization": {"Bearer bob"}})
	upBob := origin.nextConn(t)
	alice2 := openClient(t, base+"/me", http.Header{"Authorization": {"Bearer alice"}})
	origin.noNewConn(t)
	if got := upAlice.header.Get("Authorization"); got != "Bearer alice" {
		t.Fatalf("alice's upstream sent %q", got)
	}
	if got := upBob.header.Get("Authorization"); got != "Bearer bob" {
		t.Fatalf("bob's upstream sent %q", got)
	}
	upAlice.send("data: for alice\n\n")
	upBob.send("data: for bob\n\n")
	for _, c := range []*testClient{alice, alice2} {
		if ev := c.nextData(t); ev.Data != "for alice" {
			t.Fatalf("alice got %q", ev.Data)
		}
	}
	if ev := bob.nextData(t); ev.Data != "for bob" {
		t.Fatalf("bob got %q", ev.Data)
	}
}

func TestMetricsAndAdminReportTrueNumbers(t *testing.T) {
	origin := newTestOrigin(t)
	adminPort := freePort(t)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loadWithAdmin(t, adminPort, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s\n}\n", port, origin.URL()))

	const clients, events = 7, 12
	var cs []*testClient
	for i := 0; i < clients; i++ {
		cs = append(cs, openClient(t, base+"/m?x=1", nil))
	}
	up := origin.nextConn(t)
	sendIDs(up, 1, events)
	for _, c := range cs {
		c.expectIDs(t, 1, events)
	}
	replay := openClient(t, base+"/m?x=1", lastEventID("10"))
	replay.expectIDs(t, 11, events)

	u := origin.URL()
	checks := map[string]float64{
		"clients":         clients + 1,
		"streams":         1,
		"events_received": events,
		"replay_hits":     1,
		"replay_misses":   0,
	}
	for name, want := range checks {
		if got := counterValue(t, u, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got, want := counterValue(t, u, "events_sent"), float64(clients*events+2); got != want {
		t.Errorf("events_sent = %v, want %v (the replay client got 2)", got, want)
	}

	resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d/sse_fanout/streams", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var statuses []streamStatus
	if err := json.NewDecoder(resp.Body).Decode(&statuses); err != nil {
		t.Fatal(err)
	}
	if len(statuses) != 1 {
		t.Fatalf("admin lists %d streams, want 1: %+v", len(statuses), statuses)
	}
	st := statuses[0]
	if st.Key != "/m?x=1" || st.UpstreamURL != u+"/m?x=1" || st.Clients != clients+1 ||
		st.Buffered != events || st.FirstID != "1" || st.LastID != strconv.Itoa(events) ||
		st.UpstreamState != stateConnected || st.EventsReceived != events || st.UpstreamConnect != 1 {
		t.Fatalf("admin status %+v", st)
	}
}

// loadWithAdmin runs Caddy with its admin API on adminPort and the given
// sites; the test's cleanup turns the admin API off again and stops Caddy.
func loadWithAdmin(t *testing.T, adminPort int, sites string) {
	t.Helper()
	global := strings.Replace(testGlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	loadCaddyfile(t, global+sites)
	t.Cleanup(func() {
		loadCaddyfile(t, testGlobalOptions()) // replaces the admin server with none
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		waitHandlersDone(t)
	})
}

func TestReloadThroughAdminAPIKeepsUpstream(t *testing.T) {
	origin := newTestOrigin(t)
	adminPort, port := freePort(t), freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	site := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\theartbeat %s\n\t}\n}\n", port, origin.URL(), heartbeat)
	}
	loadWithAdmin(t, adminPort, site("15s"))
	c := openClient(t, base+"/reload", nil)
	up := origin.nextConn(t)
	sendIDs(up, 1, 5)
	c.expectIDs(t, 1, 5)

	// A compatible change, through the admin API as `caddy reload` does it.
	global := strings.Replace(testGlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	newCfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+site("20s")), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Post(fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), "application/json", bytes.NewReader(newCfg))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: status %d", resp.StatusCode)
	}

	sendIDs(up, 6, 8) // events keep coming while the old config lets go
	var last string
	for {
		select {
		case ev := <-c.events:
			if ev.HasData {
				last = ev.ID
			}
			continue
		case <-c.ended:
		case <-time.After(waitTimeout):
			t.Fatal("the old config's client was not cut")
		}
		break
	}
	for len(c.events) > 0 {
		if ev := <-c.events; ev.HasData {
			last = ev.ID
		}
	}
	from, _ := strconv.Atoi(last)
	again := openClient(t, base+"/reload", lastEventID(last)) // as a browser reconnects
	sendIDs(up, 9, 10)
	again.expectIDs(t, from+1, 10)
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: the reload must keep the upstream", n)
	}
}

func TestClosingStreamSpreadsItsClientsOut(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	var clients []*testClient
	for i := 0; i < 20; i++ {
		clients = append(clients, openClient(t, base+"/herd", nil))
	}
	up := origin.nextConn(t)
	origin.status.Store(http.StatusNoContent)
	close(up.end) // the reconnect gets 204: the stream closes its clients

	ends := make(chan time.Time, len(clients))
	for _, c := range clients {
		go func() {
			select {
			case <-c.ended:
			case <-time.After(waitTimeout):
			}
			ends <- time.Now()
		}()
	}
	first, last := <-ends, time.Time{}
	last = first
	for i := 1; i < len(clients); i++ {
		at := <-ends
		first, last = minTime(first, at), maxTime(last, at)
	}
	// Spread over closeSpread (2s), 20 clients do not end within 100ms of
	// each other but with a vanishing chance (20 × 0.05^19).
	if spread := last.Sub(first); spread < 100*time.Millisecond {
		t.Fatalf("20 clients were closed within %v of each other", spread)
	}
	for _, c := range clients {
		c.waitEnded(t)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestReloadWithNewUpstreamClosesTheOldHub(t *testing.T) {
	oldOrigin, newOrigin := newTestOrigin(t), newTestOrigin(t)
	port := freePort(t)
	site := func(upstream string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s\n}\n", port, upstream)
	}
	startCaddyfile(t, site(oldOrigin.URL()))
	base := fmt.Sprintf("http://127.0.0.1:%d/switch", port)
	c := openClient(t, base, nil)
	oldUp := oldOrigin.nextConn(t)

	loadCaddyfile(t, testGlobalOptions()+site(newOrigin.URL()))
	oldUp.waitClosed(t) // the old hub is unused, so it is closed
	c.waitEnded(t)
	oldKey := (&Handler{Upstream: oldOrigin.URL()}).registryKey(http.Header{})
	if _, ok := registries.References(oldKey); ok {
		t.Error("the old registry is still in the pool")
	}
	again := openClient(t, base, nil)
	newUp := newOrigin.nextConn(t)
	newUp.send("data: from the new origin\n\n")
	if ev := again.nextData(t); ev.Data != "from the new origin" {
		t.Fatalf("got %+v", ev)
	}
}
