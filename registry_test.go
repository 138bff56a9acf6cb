package ssefanout

// Streams found, opened, bounded and kept across reloads.

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestConcurrentFirstClientsOpenOneUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	const clients = 50
	var wg sync.WaitGroup
	opened := make(chan *testkit.Client, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, status := testkit.DialClient(t, base+"/race", nil)
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
	up := origin.NextConn(t)
	up.Send("data: hi\n\n")
	for c := range opened {
		if ev := c.NextEvent(t); ev.Data != "hi" {
			t.Fatalf("got %+v, want data hi", ev)
		}
	}
	origin.NoNewConn(t)
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestUpstreamClosesAfterIdleClose(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tidle_close 50ms\n}")
	c := testkit.OpenClient(t, base+"/idle", nil)
	up := origin.NextConn(t)
	c.Close()
	up.WaitClosed(t)

	// The next client opens a fresh upstream connection.
	testkit.OpenClient(t, base+"/idle", nil)
	origin.NextConn(t)
}

func TestUpstreamStaysWarmWithinIdleClose(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tidle_close 1m\n}")
	first := testkit.OpenClient(t, base+"/warm", nil)
	up := origin.NextConn(t)
	first.Close()
	second := testkit.OpenClient(t, base+"/warm", nil)
	up.Send("data: still here\n\n")
	if ev := second.NextEvent(t); ev.Data != "still here" {
		t.Fatalf("got %+v", ev)
	}
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestMaxStreams(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_streams 2\n}")
	testkit.OpenClient(t, base+"/a", nil)
	testkit.OpenClient(t, base+"/b", nil)
	testkit.OpenClient(t, base+"/a", nil) // an open stream takes more clients
	_, status := testkit.DialClient(t, base+"/c", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("third stream: status %d, want 503", status)
	}
	if n := counterValue(t, origin.URL(), "refused_streams"); n != 1 {
		t.Fatalf("refused_streams %v, want 1", n)
	}
}

func TestIdleStreamGivesWayUnderMaxStreams(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_streams 1\n\tidle_close 1m\n}")
	junk := testkit.OpenClient(t, base+"/s?junk=1", nil)
	up := origin.NextConn(t)
	junk.Close()
	testkit.Eventually(t, "the junk client to leave", func() bool { return counterValue(t, origin.URL(), "clients") == 0 })

	c, status := testkit.DialClient(t, base+"/s?real=1", nil)
	if status != http.StatusOK {
		t.Fatalf("a new stream got %d while the only other one is idle", status)
	}
	up.WaitClosed(t) // the idle one gave way
	origin.NextConn(t).Send("id: 1\ndata: real\n\n")
	if ev := c.NextData(t); ev.Data != "real" {
		t.Fatalf("got %+v", ev)
	}
}

// TestBusyStreamHoldsUpNoJoinToAnother: a client that waits for one
// stream (its lock held by a long publish, or by a crowd joining it) does
// not hold up clients of the registry's other streams. Before, the
// registry's lock was held while the waiting client waited, so one busy
// stream stalled every join to the handler.
func TestBusyStreamHoldsUpNoJoinToAnother(t *testing.T) {
	r, _, busy := registryWithStream(t, "/busy")
	cfg := r.settings.Load()
	busy.mu.Lock() // the stream is busy
	joined := make(chan error, 1)
	go func() {
		_, _, err := r.join(testStreamRequest("/busy"), cfg, nil)
		joined <- err
	}()
	testkit.Eventually(t, "a client to wait for the busy stream", func() bool {
		return goroutineWaitsInLock("(*registry).join") || goroutineWaitsInLock("(*registry).streamFor")
	})
	other := make(chan error, 1)
	go func() {
		_, _, err := r.join(testStreamRequest("/other"), cfg, nil)
		other <- err
	}()
	var err2 error
	select {
	case err2 = <-other:
	case <-time.After(testkit.WaitTimeout):
		t.Errorf("a client of another stream waited for the busy one")
		busy.mu.Unlock()
		err2 = <-other
		busy.mu.Lock()
	}
	if err2 != nil {
		t.Errorf("joining another stream: %v", err2)
	}
	busy.mu.Unlock()
	if err := <-joined; err != nil {
		t.Errorf("joining the busy stream once it was free: %v", err)
	}
}

// TestJoinWaitingForAStreamLetGoLooksAgain: a client that waits for a
// stream's lock while the registry lets the stream go (idle, evicted, or
// stopped by a 204) joins the stream that now has its key, never the one
// about to close.
func TestJoinWaitingForAStreamLetGoLooksAgain(t *testing.T) {
	r, sr, old := registryWithStream(t, "/s")
	cfg := r.settings.Load()
	old.mu.Lock()
	type joinResult struct {
		s   *stream
		err error
	}
	joined := make(chan joinResult, 1)
	go func() {
		s, _, err := r.join(sr, cfg, nil)
		joined <- joinResult{s, err}
	}()
	testkit.Eventually(t, "a client to wait for the stream", func() bool {
		return goroutineWaitsInLock("(*registry).streamFor")
	})
	r.mu.Lock()
	r.forget(old)
	r.mu.Unlock()
	old.mu.Unlock()
	old.close(errStreamClosed)
	got := <-joined
	if got.err != nil {
		t.Fatal(got.err)
	}
	if got.s == old {
		t.Fatal("the client joined the stream the registry let go")
	}
	if now := r.liveStreams(); len(now) != 1 || now[0] != got.s {
		t.Fatalf("registry holds %v, want the stream the client joined", now)
	}
}

// registryWithStream returns a registry of its own, destructed when the
// test ends, with a client joined to the stream of key, whose origin is
// never reached, and the stream's request.
func registryWithStream(t *testing.T, key string) (*registry, streamRequest, *stream) {
	t.Helper()
	r := newRegistry(testSettings(), "test", "")
	t.Cleanup(func() { r.Destruct() })
	sr := testStreamRequest(key)
	s, _, err := r.join(sr, r.settings.Load(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, sr, s
}

// testStreamRequest is a request for the stream of key, from an origin
// that nothing listens on.
func testStreamRequest(key string) streamRequest {
	return streamRequest{key: key, label: key, upstreamURL: "http://127.0.0.1:1" + key}
}

// goroutineWaitsInLock reports whether a goroutine waits to lock a mutex
// in the function named fn (as a stack trace names it).
func goroutineWaitsInLock(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "sync.runtime_SemacquireRWMutex") && !strings.Contains(g, "sync.runtime_SemacquireMutex") {
			continue
		}
		// The function that waits is the first of this package's frames.
		for _, line := range strings.Split(g, "\n") {
			if strings.Contains(line, "caddy-sse-fanout.") {
				if strings.Contains(line, fn) {
					return true
				}
				break
			}
		}
	}
	return false
}

func TestFailedReloadLeavesTheRunningSettings(t *testing.T) {
	origin := testkit.NewOrigin(t)
	port := testkit.FreePort(t)
	site := func(extra string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout /a* %s {\n\t\t%s\n\t}\n\tsse_fanout /b* %s\n}\n", port, origin.URL(), extra, origin.URL())
	}
	testkit.StartCaddyfile(t, site("max_clients 0"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	// The new config provisions the first handler, then fails.
	// (The Caddyfile parser refuses the bad upstream itself, so the bad
	// value goes into the adapted JSON, as a JSON config would carry it.)
	cfg := testkit.AdaptCaddyfile(t, testkit.GlobalOptions()+site("max_clients 1"))
	quoted := `"upstream":"` + origin.URL() + `"`
	if strings.Count(string(cfg), quoted) != 2 {
		t.Fatalf("the adapted config does not hold the upstream twice: %s", cfg)
	}
	last := strings.LastIndex(string(cfg), quoted)
	cfg = []byte(string(cfg[:last]) + `"upstream":"ftp://nowhere"` + string(cfg[last+len(quoted):]))
	if err := testkit.LoadJSON(cfg); err == nil {
		t.Fatal("the bad config loaded")
	}
	testkit.OpenClient(t, base+"/a", nil)
	if _, status := testkit.DialClient(t, base+"/a", nil); status != http.StatusOK {
		t.Fatalf("second client: status %d; the failed config's max_clients 1 applies", status)
	}
}

func TestReloadThroughAdminAPIKeepsUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	adminPort, port := testkit.FreePort(t), testkit.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	site := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\theartbeat %s\n\t}\n}\n", port, origin.URL(), heartbeat)
	}
	loadWithAdmin(t, adminPort, site("15s"))
	c := testkit.OpenClient(t, base+"/reload", nil)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 5)
	c.ExpectIDs(t, 1, 5)

	// A compatible change, through the admin API as `caddy reload` does it.
	global := strings.Replace(testkit.GlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	newCfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+site("20s")), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := testkit.HTTPClient.Post(fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), "application/json", bytes.NewReader(newCfg))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: status %d", resp.StatusCode)
	}

	testkit.SendIDs(up, 6, 8) // events keep coming while the old config lets go
	var last string
	for {
		ev, ok := c.Poll(testkit.WaitTimeout)
		if !ok {
			break
		}
		if ev.HasData {
			last = ev.ID
		}
	}
	c.WaitEnded(t) // "the old config's client was not cut" otherwise
	from, _ := strconv.Atoi(last)
	again := testkit.OpenClient(t, base+"/reload", testkit.LastEventID(last)) // as a browser reconnects
	testkit.SendIDs(up, 9, 10)
	again.ExpectIDs(t, from+1, 10)
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: the reload must keep the upstream", n)
	}
}

// TestEachHandlersSettingsHoldOverReloads: two sites read one stream of
// one origin, and only one of them has max_clients 1. Caddy provisions
// the servers of a config in map order, so which handler comes last
// changes from one reload of the same Caddyfile to the next; each reload
// must leave each handler its own settings, and the two sites their one
// shared stream.
func TestEachHandlersSettingsHoldOverReloads(t *testing.T) {
	origin := testkit.NewOrigin(t)
	adminPort, limitedPort, openPort := testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)
	// Each round's config differs from the last only in a response header
	// (X-Round), so that the test can tell a request that the server of
	// the config being stopped still took (Caddy's servers share their
	// listener across a reload, and stop in the background) from one the
	// new config served; sse_fanout's settings stay the same.
	sites := func(round int) string {
		return fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	header X-Round %d
	sse_fanout %s {
		max_clients 1
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	header X-Round %d
	sse_fanout %s
}
`, limitedPort, round, origin.URL(), openPort, round, origin.URL())
	}
	loadWithAdmin(t, adminPort, sites(0))
	global := strings.Replace(testkit.GlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	limited := fmt.Sprintf("http://127.0.0.1:%d/shared", limitedPort)
	open := fmt.Sprintf("http://127.0.0.1:%d/shared", openPort)
	for round := range 10 {
		if round > 0 {
			reloadThroughAdmin(t, adminPort, testkit.AdaptCaddyfile(t, global+sites(round)))
		}
		// dial opens a client of this round's config: one the stopping
		// config answered is closed and asked again, as a browser would.
		dial := func(url string) (*testkit.Client, int) {
			for try := 0; try < 100; try++ {
				c, status := testkit.DialClient(t, url, nil)
				if c != nil && c.Resp.Header.Get("X-Round") != strconv.Itoa(round) {
					c.Close()
					continue
				}
				return c, status
			}
			t.Fatalf("reload %d: the old config still answered after 100 requests", round)
			return nil, 0
		}
		var clients []*testkit.Client
		c, status := dial(limited)
		if status != http.StatusOK {
			t.Fatalf("reload %d: the limited site's first client got %d", round, status)
		}
		clients = append(clients, c)
		if _, status := dial(limited); status != http.StatusServiceUnavailable {
			t.Fatalf("reload %d: the limited site's second client got %d, want 503 (max_clients 1)", round, status)
		}
		for i := range 3 {
			c, status := dial(open)
			if status != http.StatusOK {
				t.Fatalf("reload %d: the other site's client %d got %d, want 200 (no max_clients)", round, i+1, status)
			}
			clients = append(clients, c)
		}
		for _, c := range clients {
			c.Close()
		}
	}
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: both sites share one stream, over every reload", n)
	}
}

// reloadThroughAdmin loads cfg through the admin API as `caddy reload
// --force` does: even when it is the running config.
func reloadThroughAdmin(t *testing.T, adminPort int, cfg []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := testkit.HTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: status %d", resp.StatusCode)
	}
}

func TestReloadWithNewUpstreamClosesTheOldHub(t *testing.T) {
	oldOrigin, newOrigin := testkit.NewOrigin(t), testkit.NewOrigin(t)
	port := testkit.FreePort(t)
	site := func(upstream string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s\n}\n", port, upstream)
	}
	testkit.StartCaddyfile(t, site(oldOrigin.URL()))
	base := fmt.Sprintf("http://127.0.0.1:%d/switch", port)
	c := testkit.OpenClient(t, base, nil)
	oldUp := oldOrigin.NextConn(t)

	testkit.LoadCaddyfile(t, testkit.GlobalOptions()+site(newOrigin.URL()))
	oldUp.WaitClosed(t) // the old hub is unused, so it is closed
	c.WaitEnded(t)
	old := &Handler{Upstream: oldOrigin.URL()}
	oldKey := old.registryKey(old.settings())
	if _, ok := registries.References(oldKey); ok {
		t.Error("the old registry is still in the pool")
	}
	again := testkit.OpenClient(t, base, nil)
	newUp := newOrigin.NextConn(t)
	newUp.Send("data: from the new origin\n\n")
	if ev := again.NextData(t); ev.Data != "from the new origin" {
		t.Fatalf("got %+v", ev)
	}
}

func TestTwoNodesHandOverAClient(t *testing.T) {
	origin := testkit.NewOrigin(t)
	portA, portB := testkit.FreePort(t), testkit.FreePort(t)
	// Two independent hubs (the header_up makes them distinct), as two
	// Caddy nodes in front of one origin would be.
	testkit.StartCaddyfile(t, fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		header_up X-Node a
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		header_up X-Node b
	}
}`, portA, origin.URL(), portB, origin.URL()))
	nodeA := fmt.Sprintf("http://127.0.0.1:%d/hand", portA)
	nodeB := fmt.Sprintf("http://127.0.0.1:%d/hand", portB)

	a := testkit.OpenClient(t, nodeA, nil)
	upA := origin.NextConn(t)
	witnessB := testkit.OpenClient(t, nodeB, nil)
	upB := origin.NextConn(t)
	testkit.SendIDs(upA, 1, 30)
	testkit.SendIDs(upB, 1, 30)
	a.ExpectIDs(t, 1, 20)
	witnessB.ExpectIDs(t, 1, 30)
	a.Close() // node A goes away after the client saw id 20

	moved := testkit.OpenClient(t, nodeB, testkit.LastEventID("20"))
	moved.ExpectIDs(t, 21, 30)
	if n := origin.Total.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2 (one per node)", n)
	}
}

func TestConnectDisconnectCyclesLeakNothing(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	keeper := testkit.OpenClient(t, base+"/cycle", nil) // keeps the stream open
	up := origin.NextConn(t)
	up.Send("id: 1\ndata: x\n\n")
	keeper.NextData(t)

	// One cycle first, so that lazily started machinery is in the baseline.
	first := testkit.OpenClient(t, base+"/cycle", nil)
	first.NextEvent(t)
	first.Close()
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	for i := 0; i < 2000; i++ {
		c := testkit.OpenClient(t, base+"/cycle", nil)
		c.NextEvent(t) // the cursor priming: the client is served
		c.Close()
	}
	testkit.Eventually(t, "goroutines, fds and the clients gauge to come back", func() bool {
		return runtime.NumGoroutine() <= goroutines+2 && openFDs(t) <= fds+2 &&
			counterValue(t, origin.URL(), "clients") == 1
	})
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
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

// TestStoppedKeysAreBounded: an origin that answers 204 to every stream
// (a client may invent keys without end), each for a long retry time,
// fills the registry's memory of stopped keys only up to maxStoppedKeys;
// a key it let go gets a new origin request, and the latest key is still
// answered 204.
func TestStoppedKeysAreBounded(t *testing.T) {
	r := newRegistry(testSettings(), "test", "")
	t.Cleanup(func() { r.Destruct() })
	until := time.Now().Add(time.Hour)
	var last streamRequest
	for i := range maxStoppedKeys + 100 {
		last = testStreamRequest(fmt.Sprintf("/stopped/%d", i))
		r.stop(newStream(&r.hub, last), until)
	}
	r.mu.Lock()
	n := len(r.stopped)
	r.mu.Unlock()
	if n > maxStoppedKeys {
		t.Fatalf("%d stopped keys held, want at most %d", n, maxStoppedKeys)
	}
	if _, _, err := r.join(last, r.settings.Load(), nil); !errors.Is(err, errOriginStopped) {
		t.Fatalf("joining the latest stopped key: %v, want %v", err, errOriginStopped)
	}
}
