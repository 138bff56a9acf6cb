package ssefanout

// A stream: fan-out, its ring (lookups, bounds), replay from the ring,
// priming, closing.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// readAll reads len(want) events from c and reports the first difference.
func readAll(t *testing.T, c *testkit.Client, want []sse.Event) error {
	t.Helper()
	for i, w := range want {
		got := c.NextEvent(t)
		if !sameEvent(got, w) {
			return fmt.Errorf("event %d: got %+v, want %+v", i, got, w)
		}
	}
	return nil
}

func TestFanOutToManyClientsOverOneUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	const clients = 200
	var conns []*testkit.Client
	for i := 0; i < clients; i++ {
		conns = append(conns, testkit.OpenClient(t, base+"/events", nil))
	}
	up := origin.NextConn(t)
	want := testkit.SendScript(up, 100)

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
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
	if up.Path != "/events" {
		t.Fatalf("upstream path %q, want /events", up.Path)
	}
}

func TestClosingStreamSpreadsItsClientsOut(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	var clients []*testkit.Client
	for i := 0; i < 20; i++ {
		clients = append(clients, testkit.OpenClient(t, base+"/herd", nil))
	}
	up := origin.NextConn(t)
	origin.Status.Store(http.StatusNoContent)
	close(up.End) // the reconnect gets 204: the stream closes its clients

	ends := make(chan time.Time, len(clients))
	for _, c := range clients {
		go func() {
			select {
			case <-c.Ended:
			case <-time.After(testkit.WaitTimeout):
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
		c.WaitEnded(t)
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

func TestReplayFromBufferByLastEventID(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, _ := testkit.StartStream(t, origin, base+"/replay", 50)

	c := testkit.OpenClient(t, base+"/replay", testkit.LastEventID("30"))
	c.ExpectIDs(t, 31, 50)
	testkit.SendIDs(up, 51, 55)
	c.ExpectIDs(t, 51, 55)
	if n := origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1: replay must come from memory", n)
	}
}

func TestReplayResumesAfterLatestOccurrenceOfAnID(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	witness := testkit.OpenClient(t, base+"/dup", nil)
	up := origin.NextConn(t)
	up.Send("id: a\ndata: 1\n\n")
	up.Send("id: b\ndata: 2\n\n")
	up.Send("id: a\ndata: 3\n\n")
	up.Send("data: 4\n\n") // carries id a, as lastEventId would
	up.Send("id: c\ndata: 5\n\n")
	for i := 1; i <= 5; i++ {
		witness.NextData(t)
	}
	c := testkit.OpenClient(t, base+"/dup", testkit.LastEventID("a"))
	if ev := c.NextData(t); ev.Data != "5" || ev.ID != "c" {
		t.Fatalf("resumed at %+v, want data 5 with id c", ev)
	}
}

func TestReplayUnderConcurrentJoins(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 4096\n\tclient_queue 2048\n}")
	const first, total = 200, 2000
	up, witness := testkit.StartStream(t, origin, base+"/hammer", first)

	// The origin keeps streaming while clients join with random ids that
	// the buffer holds; each must read every later event exactly once.
	go testkit.SendIDs(up, first+1, total)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		from := 1 + rand.IntN(first)
		c := testkit.OpenClient(t, base+"/hammer", testkit.LastEventID(strconv.Itoa(from)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want := from + 1; want <= total; want++ {
				ev := c.NextData(t)
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
	witness.ExpectIDs(t, first+1, total)
	origin.NoNewConn(t)
}

func TestCursorPrimingLosesNothing(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, witness := testkit.StartStream(t, origin, base+"/prime", 5)

	c := testkit.OpenClient(t, base+"/prime", nil)
	prime := c.NextEvent(t)
	if prime.HasData || prime.ID != "5" {
		t.Fatalf("first block %+v, want an id-only block with id 5", prime)
	}
	c.Close() // drops before any event
	testkit.SendIDs(up, 6, 8)
	witness.ExpectIDs(t, 6, 8)

	// A browser reconnects with the lastEventId it was primed with.
	again := testkit.OpenClient(t, base+"/prime", testkit.LastEventID(prime.ID))
	again.ExpectIDs(t, 6, 8)
}

func TestResumedClientIsNotPrimedAgain(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, _ := testkit.StartStream(t, origin, base+"/reprime", 5)

	// Its replay, or its own cursor, already carries the latest id: a
	// priming block would repeat it, and through a tier it would be a
	// frame of the edge's stream that the origin never sent.
	replayed := testkit.OpenClient(t, base+"/reprime", testkit.LastEventID("3"))
	current := testkit.OpenClient(t, base+"/reprime", testkit.LastEventID("5"))
	testkit.SendIDs(up, 6, 6)
	for c, want := range map[*testkit.Client][]string{replayed: {"4", "5", "6"}, current: {"6"}} {
		for _, id := range want {
			if ev := c.NextEvent(t); !ev.HasData || ev.ID != id {
				t.Fatalf("got %+v, want event %s and no id-only block", ev, id)
			}
		}
	}
}

func TestCursorPrimingOff(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tprime_cursor off\n}")
	up, _ := testkit.StartStream(t, origin, base+"/noprime", 3)
	c := testkit.OpenClient(t, base+"/noprime", nil)
	testkit.SendIDs(up, 4, 4)
	if ev := c.NextEvent(t); !ev.HasData || ev.ID != "4" {
		t.Fatalf("first block %+v, want event 4 and no priming", ev)
	}
}

func TestFirstClientsCursorIsNeverPrimedToOthers(t *testing.T) {
	origin := testkit.NewOrigin(t)
	origin.SetAnswer(func(r *http.Request) int {
		if r.Header.Get("Last-Event-ID") != "" {
			return http.StatusBadRequest // the first client's catch-up: refused
		}
		return 0
	})
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	// The first client's cursor is its own: the stream's request does not
	// carry it, and no other client is primed with it.
	testkit.OpenClient(t, base+"/prime", testkit.LastEventID("999999999"))
	up := origin.NextConn(t)
	if got, ok := up.Header["Last-Event-Id"]; ok {
		t.Fatalf("upstream asked with Last-Event-ID %q, the first client's", got)
	}
	// A later client is not primed with an id the origin never sent, and
	// the origin's id-less events carry no id to it.
	later := testkit.OpenClient(t, base+"/prime", nil)
	up.Send("data: no id yet\n\n")
	if ev := later.NextEvent(t); ev.Data != "no id yet" || ev.HasID {
		t.Fatalf("got %+v, want the id-less event with no id line", ev)
	}
	up.Send("id: 5\ndata: five\n\n")
	if ev := later.NextEvent(t); ev.ID != "5" || ev.Data != "five" {
		t.Fatalf("got %+v, want id 5", ev)
	}
	// Only now does the stream have a cursor to prime joining clients with.
	joined := testkit.OpenClient(t, base+"/prime", nil)
	if ev := joined.NextEvent(t); ev.ID != "5" || ev.HasData {
		t.Fatalf("joining client got %+v, want priming with id 5", ev)
	}
}

// TestFreshStreamOpensWithoutTheFirstClientsCursor: as after a restart,
// the first client of a stream the proxy has never seen comes back with its
// cursor. The stream asks the origin for its live events only; the
// client's cursor is served by a catch-up of its own, which meets the
// shared stream, so the client misses nothing and gets nothing twice.
func TestFreshStreamOpensWithoutTheFirstClientsCursor(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

	first := testkit.OpenClient(t, base+"/restart", testkit.LastEventID("40"))
	live, catchUp := origin.NextStreamAndCatchUp(t, "40")
	witness := testkit.OpenClient(t, base+"/restart", nil)
	testkit.SendIDs(live, 45, 46)
	witness.ExpectIDs(t, 45, 46)
	testkit.SendIDs(catchUp, 41, 46)
	first.ExpectIDs(t, 41, 46)

	testkit.SendIDs(live, 47, 47)
	for _, c := range []*testkit.Client{first, witness} {
		c.ExpectIDs(t, 47, 47)
	}
	origin.NoNewConn(t)
}

// The ring of frames.

func TestRingFindID(t *testing.T) {
	r := newRing(4, 0)
	for _, id := range []string{"a", "b ", "a", "c", "d"} { // "a" at 1 is evicted
		r.push(&frame{id: id, setsID: true, bytes: []byte("x")})
	}
	for _, tc := range []struct {
		id     string
		window int
		want   uint64
		found  bool
	}{
		{"a", 4, 3, true},  // the latest occurrence
		{"d", 4, 5, true},  // the newest frame
		{"b ", 4, 2, true}, // exact
		{"b", 4, 2, true},  // as HTTP trims it from a Last-Event-ID header
		{"b", 2, 0, false}, // outside the replay window
		{"z", 4, 0, false},
	} {
		got, found := r.findID(tc.id, tc.window)
		if got != tc.want || found != tc.found {
			t.Errorf("findID(%q, %d) = %d, %v; want %d, %v", tc.id, tc.window, got, found, tc.want, tc.found)
		}
	}
}

func TestRingBytesBound(t *testing.T) {
	r := newRing(100, 10)
	for i := 0; i < 5; i++ {
		f := &frame{bytes: []byte("1234")}
		f.size.Store(4)
		r.push(f)
	}
	if r.size.Load() > 10 || r.tail != 4 || r.head != 5 {
		t.Fatalf("size %d, tail %d, head %d; want at most 10 bytes, frames 4..5", r.size.Load(), r.tail, r.head)
	}
	if r.get(3) != nil {
		t.Fatal("the evicted frame 3 is still held")
	}
	if r.get(4) == nil || r.get(5) == nil {
		t.Fatal("frames 4 and 5 are not held")
	}
}

// heldWaker is a writer whose wake tells entered, then waits for release.
type heldWaker struct{ entered, release chan struct{} }

func (w heldWaker) wake() {
	close(w.entered)
	<-w.release
}
func (heldWaker) end() {}

// Publish wakes the writers with the stream's lock let go: at 100,000
// HTTP/2 streams on a saturated machine, waking them under it held every
// joining client (and, through the registry's lock, the joins of every
// other stream) for as long as the wakes took.
func TestClientsJoinWhilePublishWakesWriters(t *testing.T) {
	s := newTestStream(testSettings())
	c := addClient(s)
	w := heldWaker{make(chan struct{}), make(chan struct{})}
	c.serveBy(w)
	published := make(chan struct{})
	go func() {
		defer close(published)
		publishTo(s, &sse.Event{Data: "x", HasData: true})
	}()
	<-w.entered
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		addClient(s)
	}()
	select {
	case <-joined:
	case <-time.After(10 * time.Second):
		t.Error("a client could not join while publish was waking a writer")
	}
	close(w.release)
	<-published
	<-joined
}
