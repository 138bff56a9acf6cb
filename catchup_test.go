package ssefanout

// Catch-ups past the buffer, and cursors nothing can serve.

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestCatchUpPastTheBuffer(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := testkit.StartStream(t, origin, base+"/catch", 50)

	c := testkit.OpenClient(t, base+"/catch", testkit.LastEventID("10"))
	catchUp := origin.NextConn(t)
	if got := catchUp.Header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("catch-up request Last-Event-ID %q, want 10", got)
	}
	testkit.SendIDs(catchUp, 11, 50) // the origin resumes; it meets the buffer at 46
	catchUp.WaitClosed(t)            // the proxy is done with it once it met the stream
	testkit.SendIDs(up, 51, 53)
	c.ExpectIDs(t, 11, 53)
	witness.ExpectIDs(t, 51, 53)
}

func TestCatchUpOffGivesLiveOnlyAndStaleEvent(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n\tcatch_up off\n\tstale_event stale\n}")
	up, _ := testkit.StartStream(t, origin, base+"/live", 50)

	c := testkit.OpenClient(t, base+"/live", testkit.LastEventID("10"))
	if ev := c.NextData(t); ev.Type != "stale" || ev.Data != "10" {
		t.Fatalf("first event %+v, want a stale event with data 10", ev)
	}
	testkit.SendIDs(up, 51, 52)
	c.ExpectIDs(t, 51, 52)
	origin.NoNewConn(t)
}

func TestOverlongCursorIsTreatedAsStaleAndNotEchoed(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tstale_event stale\n}")
	up, _ := testkit.StartStream(t, origin, base+"/long", 3)

	long := strings.Repeat("9", maxCursorLen+1)
	c := testkit.OpenClient(t, base+"/long", testkit.LastEventID(long))
	if ev := c.NextData(t); ev.Type != "stale" || ev.Data != "" {
		t.Fatalf("first event %+v, want a stale event with no data", ev)
	}
	testkit.SendIDs(up, 4, 4)
	c.ExpectIDs(t, 4, 4)
	origin.NoNewConn(t) // no catch-up with it either
}

func TestReloadDuringCatchUpEndsTheClient(t *testing.T) {
	origin := testkit.NewOrigin(t)
	site := func(heartbeat string) string {
		return "sse_fanout " + origin.URL() + " {\n\tbuffer 4\n\tclient_queue 5\n\theartbeat " + heartbeat + "\n}"
	}
	port := testkit.FreePort(t)
	sites := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, site(heartbeat))
	}
	testkit.StartCaddyfile(t, sites("15s"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	up, _ := testkit.StartStream(t, origin, base+"/cu", 10)

	c := testkit.OpenClient(t, base+"/cu", testkit.LastEventID("3"))
	catchUp := origin.NextConn(t)
	testkit.SendIDs(catchUp, 4, 5) // the catch-up has not met the shared stream yet
	c.ExpectIDs(t, 4, 5)

	testkit.LoadCaddyfile(t, testkit.GlobalOptions()+sites("20s"))
	catchUp.WaitClosed(t)
	testkit.SendIDs(up, 11, 11)
	// The client is ended, to resume with its cursor, never placed at the
	// live head with 6 to 10 missing.
	if ev, ok := c.Poll(testkit.WaitTimeout); ok {
		t.Fatalf("after the reload the catching-up client got %+v, want its stream ended", ev)
	}
	c.WaitEnded(t)
}

func TestUnloadDuringCatchUpDoesNotHang(t *testing.T) {
	origin := testkit.NewOrigin(t)
	other := testkit.NewOrigin(t)
	port := testkit.FreePort(t)
	site := func(upstream string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\tbuffer 4\n\t\tclient_queue 5\n\t}\n}\n", port, upstream)
	}
	testkit.StartCaddyfile(t, site(origin.URL()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	testkit.StartStream(t, origin, base+"/cu", 10)
	c := testkit.OpenClient(t, base+"/cu", testkit.LastEventID("3"))
	catchUp := origin.NextConn(t)
	testkit.SendIDs(catchUp, 4, 4)
	c.ExpectIDs(t, 4, 4)

	// A new upstream: the old registry is destructed with a catch-up on.
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		testkit.LoadCaddyfile(t, testkit.GlobalOptions()+site(other.URL()))
	}()
	select {
	case <-loaded:
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("the reload hangs")
	}
	c.WaitEnded(t)
}

func TestCatchUpsAreBounded(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 4\n\tclient_queue 5\n\tmax_catch_ups 3\n\tstale_event stale\n}")
	up, _ := testkit.StartStream(t, origin, base+"/bogus", 5)

	var cs []*testkit.Client
	for i := 0; i < 20; i++ {
		cs = append(cs, testkit.OpenClient(t, base+"/bogus", testkit.LastEventID("bogus-"+strconv.Itoa(i))))
	}
	testkit.Eventually(t, "17 refused catch-ups", func() bool { return counterValue(t, origin.URL(), "catch_ups_refused") == 17 })
	if n := origin.Total.Load(); n != 1+3 {
		t.Fatalf("origin saw %d requests, want 1 + max_catch_ups", n)
	}
	for i := 0; i < 3; i++ {
		close(origin.NextConn(t).End) // the origin cannot resume these
	}
	for _, c := range cs {
		if ev := c.NextData(t); ev.Type != "stale" {
			t.Fatalf("got %+v, want the stale event", ev)
		}
	}
	testkit.SendIDs(up, 6, 6) // the stream still flows, to every client
	for _, c := range cs {
		c.ExpectIDs(t, 6, 6)
	}
}

// Catch-ups of an edge behind a shield (startTiers is in tier_test.go).

func TestEdgeCatchUpIsServedFromTheShieldsBuffer(t *testing.T) {
	tr := startTiers(t, "buffer 64", "buffer 4\n\t\tclient_queue 4")
	up, witness := testkit.StartStream(t, tr.origin, tr.edge+"/cu", 20)

	c := testkit.OpenClient(t, tr.edge+"/cu", testkit.LastEventID("5"))
	c.ExpectIDs(t, 6, 20) // from the shield's buffer: the origin is not asked
	testkit.SendIDs(up, 21, 23)
	c.ExpectIDs(t, 21, 23)
	witness.ExpectIDs(t, 21, 23)
	tr.origin.NoNewConn(t)
	if n := tr.origin.Total.Load(); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
}

func TestEdgeCatchUpReachesTheOriginThroughTheShield(t *testing.T) {
	tr := startTiers(t, "buffer 4\n\t\tclient_queue 4", "buffer 4\n\t\tclient_queue 4")
	up, witness := testkit.StartStream(t, tr.origin, tr.edge+"/deep", 20)

	c := testkit.OpenClient(t, tr.edge+"/deep", testkit.LastEventID("5"))
	catchUp := tr.origin.NextConn(t)
	if got := catchUp.Header.Get("Last-Event-ID"); got != "5" {
		t.Fatalf("the shield's catch-up asked with Last-Event-ID %q, want 5", got)
	}
	testkit.SendIDs(catchUp, 6, 20) // meets both buffers at 17
	c.ExpectIDs(t, 6, 20)
	testkit.SendIDs(up, 21, 22)
	c.ExpectIDs(t, 21, 22)
	witness.ExpectIDs(t, 21, 22)
}

// clientsCatchingUp counts the clients, over every live stream, that are
// reading a catch-up and not yet placed on their shared stream.
func clientsCatchingUp() int {
	n := 0
	eachLiveStream(func(s *stream) {
		s.eachClient(func(c *client) {
			if c.catchingUp {
				n++
			}
		})
	})
	return n
}

// TestCatchUpThatEndsAheadOfTheSharedStreamRepeatsNothing: an origin
// answers a catch-up with its live events (it ignores Last-Event-ID), on a
// connection that runs ahead of the stream's own, and ends that answer.
// The client has had 51 and 52 from the catch-up, which the buffer does
// not hold yet. It must never be sent them again: it is not placed at the
// live head, but ended, and resumes with 52 as a browser does.
func TestCatchUpThatEndsAheadOfTheSharedStreamRepeatsNothing(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 5\n\tclient_queue 5\n}")
	up, witness := testkit.StartStream(t, origin, base+"/ahead", 50)

	c := testkit.OpenClient(t, base+"/ahead", testkit.LastEventID("10"))
	catchUp := origin.NextConn(t)
	testkit.SendIDs(catchUp, 51, 52) // live events, before the stream's own connection has them
	c.ExpectIDs(t, 51, 52)
	close(catchUp.End)
	testkit.Eventually(t, "the catch-up to end", func() bool {
		return feedReaders("10") == 0 && clientsCatchingUp() == 0
	})

	testkit.SendIDs(up, 51, 53)
	witness.ExpectIDs(t, 51, 53)
	if ev, ok := c.Poll(testkit.WaitTimeout); ok {
		t.Fatalf("after the catch-up's 52 the client got id %q data %q, want its stream ended", ev.ID, ev.Data)
	}
	c.WaitEnded(t)
	again := testkit.OpenClient(t, base+"/ahead", testkit.LastEventID("52"))
	again.ExpectIDs(t, 53, 53)
}
