package ssefanout

// Catch-up requests shared by the clients with the same cursor.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// feedReaders counts the clients reading catch-up feeds for id, over every
// live stream.
func feedReaders(id string) int {
	n := 0
	eachLiveStream(func(s *stream) {
		s.catchUps.mu.Lock()
		if f := s.catchUps.feeds[clientCursor(id)]; f != nil {
			f.mu.Lock()
			n += f.readers
			f.mu.Unlock()
		}
		s.catchUps.mu.Unlock()
	})
	return n
}

func TestCatchUpHerdSharesOneOriginRequest(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := testkit.StartStream(t, origin, base+"/herd", 50)

	const n = 20
	var herd []*testkit.Client
	for i := 0; i < n; i++ {
		herd = append(herd, testkit.OpenClient(t, base+"/herd", testkit.LastEventID("10")))
	}
	catchUp := origin.NextConn(t)
	if got := catchUp.Header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("catch-up request Last-Event-ID %q, want 10", got)
	}
	testkit.Eventually(t, "the whole herd to read the catch-up", func() bool { return feedReaders("10") == n })
	origin.NoNewConn(t) // one request for all of them

	testkit.SendIDs(catchUp, 11, 50) // the origin resumes; it meets the buffer at 46
	catchUp.WaitClosed(t)
	testkit.SendIDs(up, 51, 53)
	for _, c := range herd {
		c.ExpectIDs(t, 11, 53)
	}
	witness.ExpectIDs(t, 51, 53)
	origin.NoNewConn(t)
	if got := counterValue(t, origin.URL(), "catch_ups"); got != 1 {
		t.Fatalf("%v catch-up requests counted, want 1", got)
	}
}

func TestCatchUpStopsWhenItsLastClientLeaves(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	testkit.StartStream(t, origin, base+"/gone", 50)

	first := testkit.OpenClient(t, base+"/gone", testkit.LastEventID("10"))
	second := testkit.OpenClient(t, base+"/gone", testkit.LastEventID("10"))
	catchUp := origin.NextConn(t)
	testkit.Eventually(t, "both clients to read the catch-up", func() bool { return feedReaders("10") == 2 })
	testkit.SendIDs(catchUp, 11, 12)
	first.ExpectIDs(t, 11, 12)
	first.Close()
	second.ExpectIDs(t, 11, 12) // the other one reads on
	testkit.SendIDs(catchUp, 13, 13)
	second.ExpectIDs(t, 13, 13)
	second.Close()
	catchUp.WaitClosed(t) // nobody reads it any more
	testkit.Eventually(t, "the feed to be forgotten", func() bool { return feedReaders("10") == 0 })
}

// TestCatchUpsAtThePerHandlerLimit sends crowds of clients with distinct
// cursors that no buffer holds to three streams of one handler whose
// per-handler max_catch_ups (3) is below the sum of the per-stream ones
// (2 each). The origin counts the catch-up requests it holds at once:
// never more than either limit allows. The clients past them are served as
// stale cursors at once, and each stream's witness sees every event.
func TestCatchUpsAtThePerHandlerLimit(t *testing.T) {
	const (
		perStream, perHandler = 2, 3
		crowd                 = 10 // clients per stream, each with a cursor of its own
	)
	paths := []string{"/a", "/b", "/c"}
	origin := testkit.NewOrigin(t)
	var (
		mu              sync.Mutex
		inFlight, peak  int
		perPath, peakOf = map[string]int{}, map[string]int{}
		heldIDs         []string              // the cursors the origin was asked for
		hold            = make(chan struct{}) // closed: the origin answers catch-ups at once
	)
	origin.SetAnswer(func(r *http.Request) int {
		if r.Header.Get("Last-Event-ID") == "" {
			return 0 // a stream's own request
		}
		mu.Lock()
		inFlight++
		perPath[r.URL.Path]++
		heldIDs = append(heldIDs, r.Header.Get("Last-Event-ID"))
		peak = max(peak, inFlight)
		peakOf[r.URL.Path] = max(peakOf[r.URL.Path], perPath[r.URL.Path])
		mu.Unlock()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
		// Counted out before the proxy can learn the answer.
		mu.Lock()
		inFlight--
		perPath[r.URL.Path]--
		mu.Unlock()
		return http.StatusNotFound // the origin cannot resume from it
	})
	inFlightNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return inFlight
	}
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+fmt.Sprintf(
		" {\n\tbuffer 4\n\tclient_queue 4\n\tmax_catch_ups %d %d\n\tstale_event stale\n}", perStream, perHandler))
	ups := map[string]*testkit.OriginConn{}
	witnesses := map[string]*testkit.Client{}
	for _, p := range paths {
		ups[p], witnesses[p] = testkit.StartStream(t, origin, base+p, 5)
	}
	next := 6 // the next id each stream sends
	sendAll := func() {
		for _, p := range paths {
			testkit.SendIDs(ups[p], next, next)
		}
		for _, p := range paths {
			witnesses[p].ExpectIDs(t, next, next)
		}
		next++
	}
	goroutines := goroutinesButHTTPClientConns()

	// A crowd at once, while the origin holds every catch-up open.
	type crowdClient struct {
		c      *testkit.Client
		cursor string
	}
	var held []crowdClient
	for _, p := range paths { // /a reaches its own limit, /b the handler's
		for i := range crowd {
			cursor := fmt.Sprintf("gone-%s-%d", p[1:], i)
			held = append(held, crowdClient{testkit.OpenClient(t, base+p, testkit.LastEventID(cursor)), cursor})
		}
	}
	testkit.Eventually(t, "the clients past the limit to be refused a catch-up", func() bool {
		return counterValue(t, origin.URL(), "catch_ups_refused") == float64(len(held)-perHandler)
	})
	if n := inFlightNow(); n != perHandler {
		t.Fatalf("%d catch-ups held at the origin, want max_catch_ups per handler %d", n, perHandler)
	}
	expectStale := func(cc crowdClient) {
		t.Helper()
		if ev := cc.c.NextData(t); ev.Type != "stale" || ev.Data != cc.cursor {
			t.Fatalf("cursor %s: got %+v, want the stale event", cc.cursor, ev)
		}
	}
	mu.Lock()
	caughtUp := map[string]bool{}
	for _, id := range heldIDs {
		caughtUp[id] = true
	}
	mu.Unlock()
	// The clients refused a catch-up are told at once. They are placed at
	// the live head as that is written, after they are counted refused:
	// only their stale event says they are placed.
	for _, cc := range held {
		if !caughtUp[cc.cursor] {
			expectStale(cc)
		}
	}
	sendAll() // the streams flow while the catch-ups are held
	for _, cc := range held {
		if !caughtUp[cc.cursor] {
			cc.c.ExpectIDs(t, next-1, next-1)
		}
	}

	// Crowds that come and go while catch-ups start and end: the origin
	// answers each at once, and the limit holds at every moment.
	close(hold)
	for _, cc := range held {
		if caughtUp[cc.cursor] {
			expectStale(cc) // the origin could not resume from it either
		}
	}
	errs := make(chan error, len(paths)*crowd)
	var wg sync.WaitGroup
	for _, p := range paths {
		for i := range crowd {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- staleCursorClient(base+p, fmt.Sprintf("churn-%s-%d", p[1:], i))
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	sendAll()

	mu.Lock()
	t.Logf("at most %d catch-ups at the origin at once (per stream: %v); %v counted, %v refused",
		peak, peakOf, counterValue(t, origin.URL(), "catch_ups"), counterValue(t, origin.URL(), "catch_ups_refused"))
	if peak > perHandler {
		t.Errorf("%d catch-ups at the origin at once, want at most %d", peak, perHandler)
	}
	for p, n := range peakOf {
		if n > perStream {
			t.Errorf("%d catch-ups for %s at once, want at most %d", n, p, perStream)
		}
	}
	mu.Unlock()

	for _, cc := range held {
		cc.c.Close()
	}
	testkit.Eventually(t, "goroutines to come back", func() bool {
		closeIdleUpstreamConns() // the origin's ends of the transport's idle connections are not the catch-ups'
		return goroutinesButHTTPClientConns() <= goroutines+4
	})
	testkit.Eventually(t, "every catch-up to be forgotten", func() bool {
		return inFlightNow() == 0 && counterValue(t, origin.URL(), "clients") == float64(len(paths))
	})
	sendAll()
}

// staleCursorClient connects to url with the given Last-Event-ID and
// reads until it is told the cursor is stale, then leaves. It returns an
// error for anything else.
func staleCursorClient(url, cursor string) error {
	ctx, cancel := context.WithTimeout(context.Background(), testkit.WaitTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Last-Event-ID", cursor)
	resp, err := testkit.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cursor %s: status %d", cursor, resp.StatusCode)
	}
	p := sse.NewParser(resp.Body, 1<<20)
	for {
		ev, err := p.Next()
		if err != nil {
			return fmt.Errorf("cursor %s: no stale event: %w", cursor, err)
		}
		if ev.HasData {
			if ev.Type != "stale" || ev.Data != cursor {
				return fmt.Errorf("cursor %s: got %+v, want the stale event", cursor, ev)
			}
			return nil
		}
	}
}

// TestClosedStreamStartsNoCatchUp: a client whose catch-up begins after its
// stream closed (its config unloaded while the client's request was on its
// way, as when a test's Caddy stops) starts no fetch. The registry may be
// waiting for the stream's goroutines already; a fetch counted then would
// race that wait, and outlive it.
func TestClosedStreamStartsNoCatchUp(t *testing.T) {
	s := newTestStream(testSettings())
	s.close(errStreamClosed)
	waited := make(chan struct{})
	go func() { // as Destruct does, at the same time
		s.hub.wg.Wait()
		close(waited)
	}()
	f, err := s.catchUps.feedFor("10", s.hub.settings.Load())
	if f != nil {
		f.leave()
		t.Fatal("a closed stream started a catch-up fetch")
	}
	if !errors.Is(err, errStreamClosed) {
		t.Fatalf("feedFor on a closed stream: %v, want %v", err, errStreamClosed)
	}
	<-waited
}

// TestCatchUpFeedHoldsNoMoreThanBufferBytes: a catch-up's answer of many
// tiny events is held within buffer_bytes, as one of a few large events
// is: what the feed counts is what an event costs it, not its wire form
// alone, which for a tiny event is a tenth of it.
func TestCatchUpFeedHoldsNoMoreThanBufferBytes(t *testing.T) {
	const limit = 1 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f := &catchUpFeed{more: make(chan struct{})}
	held := 0
	for ; held < catchUpMaxEvents; held++ {
		ev := sse.Event{ID: strconv.Itoa(held), HasID: true, Data: "x", HasData: true}
		if !f.add(&feedEvent{frame: *newFrame(&ev, true), hasLastID: true}, limit) {
			break
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(f)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 2*limit {
		t.Fatalf("a feed of %d tiny events, bounded by %d bytes, holds %d KiB", held, limit, grown>>10)
	}
}
