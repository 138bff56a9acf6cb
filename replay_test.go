package ssefanout

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// nextData returns the next event that fires, skipping id-only blocks.
func (c *testClient) nextData(t *testing.T) Event {
	t.Helper()
	for {
		if ev := c.nextEvent(t); ev.HasData {
			return ev
		}
	}
}

// expectIDs reads events and fails unless their ids are exactly from..to.
func (c *testClient) expectIDs(t *testing.T, from, to int) {
	t.Helper()
	for want := from; want <= to; want++ {
		ev := c.nextData(t)
		if ev.ID != strconv.Itoa(want) || ev.Data != "event "+strconv.Itoa(want) {
			t.Fatalf("got id %q data %q, want event %d", ev.ID, ev.Data, want)
		}
	}
}

func sendIDs(up *originConn, from, to int) {
	for i := from; i <= to; i++ {
		up.send(fmt.Sprintf("id: %d\ndata: event %d\n\n", i, i))
	}
}

func lastEventID(id string) http.Header { return http.Header{"Last-Event-ID": {id}} }

// startStream opens a witness client on path, sends ids 1..n and waits
// until the witness has them all, so that the buffer holds them.
func startStream(t *testing.T, origin *testOrigin, url string, n int) (*originConn, *testClient) {
	t.Helper()
	witness := openClient(t, url, nil)
	up := origin.nextConn(t)
	for i := 1; i <= n; i += 4 { // in steps, so the witness never lags
		to := min(i+3, n)
		sendIDs(up, i, to)
		witness.expectIDs(t, i, to)
	}
	return up, witness
}

func TestReplayFromBufferByLastEventID(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	up, _ := startStream(t, origin, base+"/replay", 50)

	c := openClient(t, base+"/replay", lastEventID("30"))
	c.expectIDs(t, 31, 50)
	sendIDs(up, 51, 55)
	c.expectIDs(t, 51, 55)
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: replay must come from memory", n)
	}
}

func TestReplayByQueryParameterIsTheSameStream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	up, _ := startStream(t, origin, base+"/q?room=1", 10)

	c := openClient(t, base+"/q?last_event_id=7&room=1", nil)
	c.expectIDs(t, 8, 10)
	sendIDs(up, 11, 11)
	c.expectIDs(t, 11, 11)
	origin.noNewConn(t)
}

func TestReplayResumesAfterLatestOccurrenceOfAnID(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	witness := openClient(t, base+"/dup", nil)
	up := origin.nextConn(t)
	up.send("id: a\ndata: 1\n\n")
	up.send("id: b\ndata: 2\n\n")
	up.send("id: a\ndata: 3\n\n")
	up.send("data: 4\n\n") // carries id a, as lastEventId would
	up.send("id: c\ndata: 5\n\n")
	for i := 1; i <= 5; i++ {
		witness.nextData(t)
	}
	c := openClient(t, base+"/dup", lastEventID("a"))
	if ev := c.nextData(t); ev.Data != "5" || ev.ID != "c" {
		t.Fatalf("resumed at %+v, want data 5 with id c", ev)
	}
}

func TestReplayUnderConcurrentJoins(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 4096\n\tclient_queue 2048\n}")
	const first, total = 200, 2000
	up, witness := startStream(t, origin, base+"/hammer", first)

	// The origin keeps streaming while clients join with random ids that
	// the buffer holds; each must read every later event exactly once.
	go sendIDs(up, first+1, total)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		from := 1 + rand.IntN(first)
		c := openClient(t, base+"/hammer", lastEventID(strconv.Itoa(from)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := from + 1; want <= total; want++ {
				ev := c.nextData(t)
				if ev.ID != strconv.Itoa(want) {
					errs <- fmt.Errorf("client from %d: got id %s, want %d", from, ev.ID, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	witness.expectIDs(t, first+1, total)
	origin.noNewConn(t)
}

func TestUpstreamResumesWithLastEventIDWithoutGapOrDuplicate(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	up, witness := startStream(t, origin, base+"/resume", 20)
	close(up.end) // the origin cuts the connection after id 20
	up.waitClosed(t)

	again := origin.nextConn(t)
	if got := again.header.Get("Last-Event-ID"); got != "20" {
		t.Fatalf("reconnected with Last-Event-ID %q, want 20", got)
	}
	sendIDs(again, 18, 25) // an origin may send again what we hold
	witness.expectIDs(t, 21, 25)
	late := openClient(t, base+"/resume", lastEventID("15"))
	late.expectIDs(t, 16, 25)
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	s := newStream(newRegistry(testSettings(), 0, "test"), streamRequest{key: "/b", label: "/b", upstreamURL: "http://127.0.0.1:1/b"})
	s.originRetry.Store(400)
	for failures := 0; failures < 12; failures++ {
		ceiling := min(400*time.Millisecond<<failures, backoffMax)
		for i := 0; i < 50; i++ {
			got := s.backoff(failures)
			if got < ceiling/2 || got > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", failures, got, ceiling/2, ceiling)
			}
		}
	}
	s.originRetry.Store(0) // an origin cannot make us loop hot
	if got := s.backoff(0); got < backoffMin/2 {
		t.Fatalf("backoff with retry 0 = %v, want at least %v", got, backoffMin/2)
	}
}

func TestUpstreamFailuresBackOff(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	openClient(t, base+"/fail", nil)
	up := origin.nextConn(t)
	up.send("retry: 1\ndata: x\n\n") // the smallest base: backoffMin

	// From now on every request fails. Record when each arrives.
	var mu sync.Mutex
	var times []time.Time
	arrived := make(chan struct{}, 100)
	origin.mu.Lock()
	origin.onRequest = func() {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		arrived <- struct{}{}
	}
	origin.mu.Unlock()
	origin.status.Store(http.StatusInternalServerError)
	close(up.end)
	for i := 0; i < 5; i++ {
		select {
		case <-arrived:
		case <-time.After(waitTimeout):
			t.Fatalf("only %d reconnect attempts arrived", i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// Each gap is at least half the doubled wait: 250ms, 500ms, 1s, 2s.
	for i := 1; i < 5; i++ {
		floor := backoffMin << (i - 1) / 2
		if gap := times[i].Sub(times[i-1]); gap < floor {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap, floor)
		}
	}
}

func TestCursorPrimingLosesNothing(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	up, witness := startStream(t, origin, base+"/prime", 5)

	c := openClient(t, base+"/prime", nil)
	prime := c.nextEvent(t)
	if prime.HasData || prime.ID != "5" {
		t.Fatalf("first block %+v, want an id-only block with id 5", prime)
	}
	c.close() // drops before any event
	sendIDs(up, 6, 8)
	witness.expectIDs(t, 6, 8)

	// A browser reconnects with the lastEventId it was primed with.
	again := openClient(t, base+"/prime", lastEventID(prime.ID))
	again.expectIDs(t, 6, 8)
}

func TestCursorPrimingOff(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tprime_cursor off\n}")
	up, _ := startStream(t, origin, base+"/noprime", 3)
	c := openClient(t, base+"/noprime", nil)
	sendIDs(up, 4, 4)
	if ev := c.nextEvent(t); !ev.HasData || ev.ID != "4" {
		t.Fatalf("first block %+v, want event 4 and no priming", ev)
	}
}

func TestCatchUpPastTheBuffer(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := startStream(t, origin, base+"/catch", 50)

	c := openClient(t, base+"/catch", lastEventID("10"))
	catchUp := origin.nextConn(t)
	if got := catchUp.header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("catch-up request Last-Event-ID %q, want 10", got)
	}
	sendIDs(catchUp, 11, 50) // the origin resumes; it meets the buffer at 46
	catchUp.waitClosed(t)    // the proxy is done with it once it met the stream
	sendIDs(up, 51, 53)
	c.expectIDs(t, 11, 53)
	witness.expectIDs(t, 51, 53)
}

func TestCatchUpOffGivesLiveOnlyAndStaleEvent(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n\tcatch_up off\n\tstale_event stale\n}")
	up, _ := startStream(t, origin, base+"/live", 50)

	c := openClient(t, base+"/live", lastEventID("10"))
	if ev := c.nextData(t); ev.Type != "stale" || ev.Data != "10" {
		t.Fatalf("first event %+v, want a stale event with data 10", ev)
	}
	sendIDs(up, 51, 52)
	c.expectIDs(t, 51, 52)
	origin.noNewConn(t)
}

func TestOrigin204StopsTheStream(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())
	c := openClient(t, base+"/stop", nil)
	up := origin.nextConn(t)
	origin.status.Store(http.StatusNoContent)
	close(up.end)
	c.waitEnded(t) // the proxy closes its clients

	requests := origin.total.Load()
	_, status := dialClient(t, base+"/stop", nil)
	if status != http.StatusNoContent {
		t.Fatalf("new client: status %d, want 204", status)
	}
	if n := origin.total.Load(); n != requests {
		t.Fatalf("origin saw %d new requests, want none", n-requests)
	}
}

func TestTwoNodesHandOverAClient(t *testing.T) {
	origin := newTestOrigin(t)
	portA, portB := freePort(t), freePort(t)
	// Two independent hubs (the header_up makes them distinct), as two
	// Caddy nodes in front of one origin would be.
	startCaddyfile(t, fmt.Sprintf(`http://127.0.0.1:%d {
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

	a := openClient(t, nodeA, nil)
	upA := origin.nextConn(t)
	witnessB := openClient(t, nodeB, nil)
	upB := origin.nextConn(t)
	sendIDs(upA, 1, 30)
	sendIDs(upB, 1, 30)
	a.expectIDs(t, 1, 20)
	witnessB.expectIDs(t, 1, 30)
	a.close() // node A goes away after the client saw id 20

	moved := openClient(t, nodeB, lastEventID("20"))
	moved.expectIDs(t, 21, 30)
	if n := origin.total.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2 (one per node)", n)
	}
}

func TestFreshStreamResumesFromTheFirstClientsCursor(t *testing.T) {
	origin := newTestOrigin(t)
	base := startCaddy(t, "sse_fanout "+origin.URL())

	// As after a restart: the first client of a stream the proxy has never
	// seen comes back with its cursor.
	first := openClient(t, base+"/restart", lastEventID("40"))
	up := origin.nextConn(t)
	if got := up.header.Get("Last-Event-ID"); got != "40" {
		t.Fatalf("the stream's upstream asked with Last-Event-ID %q, want 40", got)
	}
	sendIDs(up, 41, 45)
	first.expectIDs(t, 41, 45)

	// Others with the same or a later cursor replay from the buffer.
	same := openClient(t, base+"/restart", lastEventID("40"))
	same.expectIDs(t, 41, 45)
	later := openClient(t, base+"/restart", lastEventID("43"))
	later.expectIDs(t, 44, 45)
	fresh := openClient(t, base+"/restart", nil)
	sendIDs(up, 46, 46)
	for _, c := range []*testClient{first, same, later, fresh} {
		c.expectIDs(t, 46, 46)
	}
	origin.noNewConn(t)
	if n := origin.total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: no catch-ups", n)
	}
}
