package ssefanout

// The event-type filter a client chooses: what it is sent, how its
// lastEventId keeps up with what it skips, and its keepalives; its cost
// is measured in filter_bench_test.go.

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// mixedScript is what the origin sends in the filter tests: several event
// types, untyped events, an explicit "message", an id-only block and a
// typed block without data.
const mixedScript = "event: tick\ndata: t1\nid: 1\n\n" +
	"event: update\ndata: u1\nid: 2\n\n" +
	"data: m1\nid: 3\n\n" +
	"event: price\ndata: p1\nid: 4\n\n" +
	"id: 5\n\n" +
	"event: message\ndata: m2\nid: 6\n\n" +
	"event: tick\ndata: t2\nid: 7\n\n" +
	"event: update\nid: 8\n\n" + // a typed block without data: fires nothing in a browser
	"event: update\ndata: u2\nid: 9\n\n"

// fired reads the blocks a client is sent until one with the given data,
// and returns, in order, (type, data, id) of those that fire.
func firedUntil(t *testing.T, c *testkit.Client, last string) []seenEvent {
	t.Helper()
	var got []seenEvent
	for {
		ev := c.NextData(t)
		got = append(got, seenEvent{ev.Type, ev.Data, ev.ID})
		if ev.Data == last {
			return got
		}
	}
}

func TestFilteredClientGetsOnlyItsTypes(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n}")
	witness := testkit.OpenClient(t, base+"/f", nil)
	filtered := testkit.OpenClient(t, base+"/f?events=update,price", nil)
	messages := testkit.OpenClient(t, base+"/f?events=message", nil)
	up := origin.NextConn(t)
	if up.Path != "/f" {
		t.Fatalf("upstream request %q, want /f: the filter is no part of the stream", up.Path)
	}
	up.Send(mixedScript)

	all := firedUntil(t, witness, "u2")
	if len(all) != 7 {
		t.Fatalf("the unfiltered client got %v, want all 7 events", all)
	}
	want := []seenEvent{{"update", "u1", "2"}, {"price", "p1", "4"}, {"update", "u2", "9"}}
	if got := firedUntil(t, filtered, "u2"); !sameSeen(got, want) {
		t.Fatalf("events=update,price got %v, want %v", got, want)
	}
	want = []seenEvent{{"", "m1", "3"}, {"message", "m2", "6"}}
	if got := firedUntil(t, messages, "m2"); !sameSeen(got, want) {
		t.Fatalf("events=message got %v, want %v (untyped events are message)", got, want)
	}
	origin.NoNewConn(t)
}

func TestFilteredReplayResumesExactly(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n}")
	witness := testkit.OpenClient(t, base+"/r", nil)
	up := origin.NextConn(t)
	up.Send(mixedScript)
	firedUntil(t, witness, "u2")

	// A page that read up to u1 (id 2) comes back: from the buffer, it
	// gets its types after id 2 and nothing else.
	c := testkit.OpenClient(t, base+"/r?events=update,price&last_event_id=2", nil)
	want := []seenEvent{{"price", "p1", "4"}, {"update", "u2", "9"}}
	if got := firedUntil(t, c, "u2"); !sameSeen(got, want) {
		t.Fatalf("resumed after 2 with events=update,price: got %v, want %v", got, want)
	}
	up.Send("event: tick\ndata: t3\nid: 10\n\nevent: price\ndata: p2\nid: 11\n\n")
	if ev := c.NextData(t); ev.Data != "p2" || ev.ID != "11" {
		t.Fatalf("then got %+v, want p2", ev)
	}
	origin.NoNewConn(t)
}

func TestFilteredCatchUpAppliesTheFilter(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n\tbuffer 4\n\tclient_queue 4\n}")
	witness := testkit.OpenClient(t, base+"/c", nil)
	up := origin.NextConn(t)
	typeOf := func(i int) string {
		if i%3 == 0 {
			return "update"
		}
		return "tick"
	}
	send := func(conn *testkit.OriginConn, from, to int) {
		for i := from; i <= to; i++ {
			conn.Send(fmt.Sprintf("event: %s\ndata: %s %d\nid: %d\n\n", typeOf(i), typeOf(i), i, i))
		}
	}
	for i := 1; i <= 20; i += 4 { // in steps, so that the witness never lags
		send(up, i, i+3)
		firedUntil(t, witness, fmt.Sprintf("%s %d", typeOf(i+3), i+3))
	}

	c := testkit.OpenClient(t, base+"/c?events=update", testkit.LastEventID("4"))
	catchUp := origin.NextConn(t)
	if catchUp.Path != "/c" || catchUp.Header.Get("Last-Event-ID") != "4" {
		t.Fatalf("catch-up request %q with Last-Event-ID %q", catchUp.Path, catchUp.Header.Get("Last-Event-ID"))
	}
	send(catchUp, 5, 20) // meets the buffer at 17
	catchUp.WaitClosed(t)
	send(up, 21, 24)
	for _, i := range []int{6, 9, 12, 15, 18, 21, 24} {
		if ev := c.NextData(t); ev.Type != "update" || ev.ID != strconv.Itoa(i) {
			t.Fatalf("got %+v, want update %d", ev, i)
		}
	}
}

func TestBadFilterIsRefused(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n}")
	many := ""
	for i := 0; i <= maxFilterTypes; i++ {
		many += fmt.Sprintf("t%d,", i)
	}
	long := ""
	for len(long) <= maxFilterTypeLen {
		long += "x"
	}
	for _, bad := range []string{
		"",                // no type
		"a,,b",            // an empty type
		"a%0Ab",           // LF
		"a%0Db",           // CR
		"a%00b",           // NUL
		"a%1Bb",           // another control character
		"%FF",             // not UTF-8
		many,              // too many
		long,              // too long
		"a&events=",       // a second parameter that is empty
		"a&%65vents=a%0A", // the parameter's name escaped
	} {
		if _, status := testkit.DialClient(t, base+"/b?events="+bad, nil); status != http.StatusBadRequest {
			t.Errorf("events=%s: status %d, want 400", bad, status)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("refused filters opened %d origin requests", n)
	}
	// Spaces around types are trimmed, duplicates dropped, and a second
	// parameter adds to the first.
	c := testkit.OpenClient(t, base+"/b?events=%20a%20,a&events=b", nil)
	up := origin.NextConn(t)
	up.Send("event: c\ndata: c\n\nevent: a\ndata: a\n\nevent: b\ndata: b\n\n")
	for _, want := range []string{"a", "b"} {
		if ev := c.NextData(t); ev.Data != want {
			t.Fatalf("got %+v, want %s", ev, want)
		}
	}
}

func TestFilterParamPassesThroughWhenNotConfigured(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	c := testkit.OpenClient(t, base+"/p?events=update", nil)
	up := origin.NextConn(t)
	if up.Path != "/p?events=update" {
		t.Fatalf("upstream request %q: without filter_param the parameter is the origin's", up.Path)
	}
	up.Send("event: tick\ndata: t\n\n")
	if ev := c.NextData(t); ev.Data != "t" {
		t.Fatalf("got %+v", ev)
	}
}

// TestFilteredClientsLastEventIDKeepsUp: a filtered client that skips many
// events is sent an id-only block before the id its browser holds leaves
// the buffer, so that a reconnect resumes from the buffer and loses
// nothing, where without it the cursor would be stale.
func TestFilteredClientsLastEventIDKeepsUp(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n\tbuffer 8\n\tcatch_up off\n\tstale_event stale\n}")
	witness := testkit.OpenClient(t, base+"/k", nil)
	c := testkit.OpenClient(t, base+"/k?events=update", nil)
	up := origin.NextConn(t)
	up.Send("event: update\ndata: u1\nid: 1\n\n")
	if ev := c.NextData(t); ev.Data != "u1" {
		t.Fatalf("got %+v", ev)
	}
	for i := 2; i <= 30; i++ {
		up.Send(fmt.Sprintf("event: tick\ndata: t%d\nid: %d\n\n", i, i))
	}
	firedUntil(t, witness, "t30")
	// The client's lastEventId, as its blocks set it, must be within half
	// the buffer (8) of the newest frame by now: 27..30.
	lastID := 1
	deadline := time.Now().Add(testkit.WaitTimeout)
	for lastID < 27 && time.Now().Before(deadline) {
		if ev, ok := c.Poll(10 * time.Millisecond); ok {
			if ev.HasData {
				t.Fatalf("the filtered client fired %+v", ev)
			}
			lastID, _ = strconv.Atoi(ev.ID)
		}
	}
	if lastID < 27 {
		t.Fatalf("the filtered client's lastEventId is %d, more than half the buffer behind 30", lastID)
	}
	c.Close()
	up.Send("event: update\ndata: u31\nid: 31\n\n")
	firedUntil(t, witness, "u31")
	back := testkit.OpenClient(t, base+"/k?events=update", testkit.LastEventID(strconv.Itoa(lastID)))
	if ev := back.NextData(t); ev.Type != "update" || ev.Data != "u31" {
		t.Fatalf("the resumed client got %+v, want u31 from the buffer", ev)
	}
}

// TestFilteredClientGetsKeepalivesOnABusyStream: events it skips are not
// sent, so a filtered client must get keepalives of its own while the
// stream is busy, and the others none.
func TestFilteredClientGetsKeepalivesOnABusyStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tfilter_param events\n\theartbeat 200ms\n}")
	witness := testkit.OpenClient(t, base+"/busy", nil)
	c := testkit.OpenClient(t, base+"/busy?events=update", nil)
	up := origin.NextConn(t)
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				n++
				up.Send(fmt.Sprintf("event: tick\ndata: t%d\n\n", n))
			}
		}
	}()
	time.Sleep(700 * time.Millisecond)
	filteredKeepalives, witnessKeepalives := len(c.Keepalives), len(witness.Keepalives)
	close(stop)
	n := <-sent
	firedUntil(t, witness, fmt.Sprintf("t%d", n))
	if filteredKeepalives < 2 {
		t.Fatalf("the filtered client got %d keepalives in 700ms of skipped events with heartbeat 200ms, want at least 2", filteredKeepalives)
	}
	if witnessKeepalives != 0 {
		t.Fatalf("the unfiltered client of a busy stream got %d keepalives", witnessKeepalives)
	}
}

// TestFilterInRequestWriters runs the filter's tests with detaching off,
// so that the writer in a client's request goroutine, which publish leaves
// asleep for frames it would skip (clientFilter.passOver), is held to
// them too.
func TestFilterInRequestWriters(t *testing.T) {
	saved := testkit.DetachInTests
	testkit.DetachInTests = false
	defer func() { testkit.DetachInTests = saved }()
	for name, test := range map[string]func(*testing.T){
		"FilteredClientGetsOnlyItsTypes":            TestFilteredClientGetsOnlyItsTypes,
		"FilteredReplayResumesExactly":              TestFilteredReplayResumesExactly,
		"FilteredCatchUpAppliesTheFilter":           TestFilteredCatchUpAppliesTheFilter,
		"FilteredClientsLastEventIDKeepsUp":         TestFilteredClientsLastEventIDKeepsUp,
		"FilteredClientGetsKeepalivesOnABusyStream": TestFilteredClientGetsKeepalivesOnABusyStream,
	} {
		t.Run(name, test)
	}
}

// addFiltered adds a client with the given filter to s, with no cursor, as
// join would.
func addFiltered(s *stream, types ...string) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(s.hub.settings.Load(), streamRequest{filter: types}, nil)
}

// woken reports whether c was woken, and takes the wake-up.
func woken(c *client) bool {
	select {
	case <-c.wakeC:
		return true
	default:
		return false
	}
}

// TestSkippedFramesCostAFilteredClientNoWakeUp: publish moves the cursor of
// a filtered client that is caught up past a frame it does not want,
// without waking its writer, and never counts that as lag.
func TestSkippedFramesCostAFilteredClientNoWakeUp(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 4
	s := newTestStream(cfg)
	c := addFiltered(s, "update")
	plain := addClient(s)
	for i := 1; i <= 20; i++ {
		publishTo(s, &sse.Event{Type: "tick", Data: strconv.Itoa(i), HasData: true})
		if woken(c) {
			t.Fatalf("tick %d woke the client that only wants update", i)
		}
		if !woken(plain) {
			t.Fatalf("tick %d did not wake the unfiltered client", i)
		}
		if _, _, err := plain.next(nil, maxBatchWrite); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.cursor.Load(); got != 20 {
		t.Fatalf("the filtered client's cursor is at %d, want 20", got)
	}
	publishTo(s, &sse.Event{Type: "update", Data: "u", HasData: true})
	if !woken(c) {
		t.Fatal("an update did not wake the client that wants it")
	}
	out, more, err := c.next(nil, maxBatchWrite)
	if err != nil || more || string(out) != "event: update\ndata: u\n\n" {
		t.Fatalf("got %q (more %v, err %v)", out, more, err)
	}
	if got := counterValue(t, "test", "events_filtered"); got < 20 {
		t.Fatalf("events_filtered = %v, want at least the 20 ticks", got)
	}
}

// TestSkippedFramesWakeAFilteredClientToKeepItsIDInTheBuffer: once the id
// the client holds falls into the older half of the buffer, publish wakes
// it, and it is sent an id-only block with the stream's latest id.
func TestSkippedFramesWakeAFilteredClientToKeepItsIDInTheBuffer(t *testing.T) {
	cfg := testSettings()
	cfg.buffer = 8
	s := newTestStream(cfg)
	c := addFiltered(s, "update")
	var got []byte
	for i := 1; i <= 12; i++ {
		publishTo(s, &sse.Event{Type: "tick", Data: "t", HasData: true, ID: strconv.Itoa(i), HasID: true})
		if woken(c) {
			out, _, err := c.next(nil, maxBatchWrite)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, out...)
		}
	}
	// Woken at 4 (4 frames past the id it holds, half the buffer), then at 8
	// and 12.
	if want := "id: 4\n\nid: 8\n\nid: 12\n\n"; string(got) != want {
		t.Fatalf("the filtered client was sent %q, want %q", got, want)
	}
}
