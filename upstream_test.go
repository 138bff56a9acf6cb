package ssefanout

// The upstream reader: requests, resumes, resends, backoff, broken origins.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestUpstreamRequestHeaders(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\theader_up X-Api-Key secret\n\theader_up X-Multi a\n\theader_up X-Multi b\n}")
	testkit.OpenClient(t, base+"/h", http.Header{
		"Cookie":        {"session=alice"},
		"Authorization": {"Bearer alice"},
	})
	up := origin.NextConn(t)
	checks := map[string]string{
		"Accept":        "text/event-stream",
		"Cache-Control": "no-cache",
		"X-Api-Key":     "secret",
		"X-Multi":       "a,b",
		"Cookie":        "",
		"Authorization": "",
	}
	for name, want := range checks {
		if got := strings.Join(up.Header.Values(name), ","); got != want {
			t.Errorf("upstream header %s = %q, want %q", name, got, want)
		}
	}
}

func TestOversizeEventBreaksUpstreamNotClients(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_event_size 1KiB\n}")
	c := testkit.OpenClient(t, base+"/big", nil)
	up := origin.NextConn(t)
	up.Send("data: small\n\n")
	up.Send("data: " + strings.Repeat("x", 2048) + "\n\n")
	if ev := c.NextEvent(t); ev.Data != "small" {
		t.Fatalf("got %+v", ev)
	}
	up.WaitClosed(t)
	again := origin.NextConn(t) // reconnected after a backoff
	again.Send("data: after\n\n")
	if ev := c.NextEvent(t); ev.Data != "after" {
		t.Fatalf("got %+v, want the event after the reconnect", ev)
	}
}

// TestOversizeEventCountsEveryLine holds issue 19 item 4: max_event_size
// counts the event's event and id lines too, whatever their order, so an
// event whose data alone is under the limit breaks the upstream, no client
// sees it, and the stream resumes after the last good event.
func TestOversizeEventCountsEveryLine(t *testing.T) {
	for _, tc := range []struct{ name, big string }{
		{"data then event", "data: " + strings.Repeat("d", 40<<10) + "\nevent: " + strings.Repeat("e", 30<<10) + "\n\n"},
		{"data, event and id of 40 KiB", "data: " + strings.Repeat("d", 40<<10) + "\nevent: " + strings.Repeat("e", 40<<10) + "\nid: " + strings.Repeat("i", 40<<10) + "\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmax_event_size 64KiB\n}")
			c := testkit.OpenClient(t, base+"/whole", nil)
			up := origin.NextConn(t)
			up.Send("id: 1\ndata: before\n\n")
			if ev := c.NextData(t); ev.Data != "before" {
				t.Fatalf("got %+v", ev)
			}
			up.Send(tc.big)
			up.WaitClosed(t)

			again := origin.NextConn(t)
			if got := again.Header.Get("Last-Event-ID"); got != "1" {
				t.Errorf("resumed with Last-Event-ID of %d bytes, want 1", len(got))
			}
			again.Send("id: 2\ndata: after\n\n")
			// Events arrive in order: had the big one been sent, it would
			// come first.
			if ev := c.NextEvent(t); ev.Data != "after" || ev.ID != "2" {
				t.Fatalf("got an event of %d bytes with a %d-byte id, want the event after the reconnect", len(ev.Data), len(ev.ID))
			}
		})
	}
}

// TestOriginIDOverCursorLimitBreaksUpstream holds issue 19 item 4: an id
// of 1024 bytes (maxCursorLen, the longest a client may resume with) is
// delivered and resumable; one of 1025 bytes breaks the upstream like an
// oversize event, is never delivered, and the stream resumes from the last
// good id.
func TestOriginIDOverCursorLimitBreaksUpstream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	c := testkit.OpenClient(t, base+"/ids", nil)
	up := origin.NextConn(t)
	atLimit := strings.Repeat("k", maxCursorLen)
	up.Send("id: " + atLimit + "\ndata: at the limit\n\n")
	if ev := c.NextEvent(t); ev.Data != "at the limit" || ev.ID != atLimit {
		t.Fatalf("got data %q with a %d-byte id, want the event with its %d-byte id", ev.Data, len(ev.ID), maxCursorLen)
	}
	up.Send("id: " + strings.Repeat("o", maxCursorLen+1) + "\ndata: over the limit\n\n")
	up.WaitClosed(t)

	again := origin.NextConn(t)
	if got := again.Header.Get("Last-Event-ID"); got != atLimit {
		t.Errorf("resumed with a Last-Event-ID of %d bytes, want the %d-byte id", len(got), maxCursorLen)
	}
	again.Send("id: 3\ndata: after\n\n")
	if ev := c.NextEvent(t); ev.Data != "after" {
		t.Fatalf("got data %q with a %d-byte id, want the event after the reconnect", ev.Data, len(ev.ID))
	}
	late := testkit.OpenClient(t, base+"/ids", testkit.LastEventID(atLimit))
	if ev := late.NextEvent(t); ev.Data != "after" {
		t.Fatalf("a client resuming from the %d-byte id got %q, want the event after it", maxCursorLen, ev.Data)
	}
}

func TestUpstreamResumesWithLastEventIDWithoutGapOrDuplicate(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	up, witness := testkit.StartStream(t, origin, base+"/resume", 20)
	close(up.End) // the origin cuts the connection after id 20
	up.WaitClosed(t)

	again := origin.NextConn(t)
	if got := again.Header.Get("Last-Event-ID"); got != "20" {
		t.Fatalf("reconnected with Last-Event-ID %q, want 20", got)
	}
	testkit.SendIDs(again, 18, 25) // an origin may send again what we hold
	witness.ExpectIDs(t, 21, 25)
	late := testkit.OpenClient(t, base+"/resume", testkit.LastEventID("15"))
	late.ExpectIDs(t, 16, 25)
}

// TestUpstreamResumesWithoutAnEmptyLastEventID: an origin that resets the
// last event ID (an empty id field) and then ends the connection is asked
// again as a browser would ask it, with no Last-Event-ID at all: a browser
// never sends an empty one.
func TestUpstreamResumesWithoutAnEmptyLastEventID(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	c := testkit.OpenClient(t, base+"/reset", nil)
	up := origin.NextConn(t)
	up.Send("id: 7\ndata: a\n\n")
	up.Send("id:\ndata: b\n\n")
	if ev := c.NextData(t); ev.Data != "a" || ev.ID != "7" {
		t.Fatalf("got %+v, want a with id 7", ev)
	}
	if ev := c.NextData(t); ev.Data != "b" || ev.ID != "" {
		t.Fatalf("got %+v, want b with the id reset", ev)
	}
	close(up.End)

	again := origin.NextConn(t)
	if got, ok := again.Header["Last-Event-Id"]; ok {
		t.Fatalf("reconnected with Last-Event-ID %q, want none", got)
	}
	again.Send("id: 8\ndata: c\n\n")
	if ev := c.NextData(t); ev.Data != "c" || ev.ID != "8" {
		t.Fatalf("got %+v, want c with id 8", ev)
	}
}

// TestUpstreamFailuresBackOff: against an origin that keeps failing, the
// stream makes one attempt at a time, never more often than the floor.
func TestUpstreamFailuresBackOff(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	testkit.OpenClient(t, base+"/fail", nil)
	up := origin.NextConn(t)
	up.Send("retry: 1\ndata: x\n\n") // the smallest floor: backoffMin

	// From now on every request fails. Record when each arrives.
	var mu sync.Mutex
	var times []time.Time
	arrived := make(chan struct{}, 100)
	origin.SetOnRequest(func() {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		arrived <- struct{}{}
	})
	origin.Status.Store(http.StatusInternalServerError)
	close(up.End)
	for i := 0; i < 5; i++ {
		select {
		case <-arrived:
		case <-time.After(testkit.WaitTimeout):
			t.Fatalf("only %d reconnect attempts arrived", i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < 5; i++ {
		if gap := times[i].Sub(times[i-1]); gap < backoffMin {
			t.Errorf("attempt %d came %v after the one before, want at least the floor %v", i+1, gap, backoffMin)
		}
	}
}

// TestUpstreamRecoversAsFastAsTheOrigin is issue 24 through Caddy: an
// origin that fails five times in a row, fast, then heals, serves the
// waiting client on the next attempt, well before the old rule (the floor
// doubled per failure, jittered down by up to half) would have tried
// again: after five failures, at least floor*2^5/2 = 4s later.
func TestUpstreamRecoversAsFastAsTheOrigin(t *testing.T) {
	const floor, failures = 250 * time.Millisecond, 5
	oldEarliest := floor << failures / 2 // 4s, within upstream_backoff's cap
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tupstream_backoff 250ms 8s\n}")
	c := testkit.OpenClient(t, base+"/deploy", nil)
	before := origin.NextConn(t)
	before.Send("data: before\n\n")
	if ev := c.NextData(t); ev.Data != "before" {
		t.Fatalf("got %+v", ev)
	}

	// The origin restarts: it fails five times, fast, then serves.
	var mu sync.Mutex
	var times []time.Time
	origin.SetOnRequest(func() {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) > failures {
			origin.Status.Store(0) // healed: this request gets a stream
		}
	})
	origin.Status.Store(http.StatusInternalServerError)
	close(before.End)
	up := origin.NextConn(t)
	up.Send("data: first\n\n")
	if ev := c.NextData(t); ev.Data != "first" {
		t.Fatalf("got %+v", ev)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != failures+1 {
		t.Fatalf("the origin saw %d requests before the first event, want %d failures and the one it served", len(times), failures+1)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < floor {
			t.Errorf("attempt %d came %v after the one before, want at least the floor %v", i+1, gap, floor)
		}
	}
	if gap := times[failures].Sub(times[failures-1]); gap >= oldEarliest {
		t.Errorf("the healed origin was asked again %v after the last failure, want sooner than the old rule's %v", gap, oldEarliest)
	}
}

func TestOrigin204StopsTheStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	c := testkit.OpenClient(t, base+"/stop", nil)
	up := origin.NextConn(t)
	origin.Status.Store(http.StatusNoContent)
	close(up.End)
	c.WaitEnded(t) // the proxy closes its clients

	requests := origin.Total.Load()
	_, status := testkit.DialClient(t, base+"/stop", nil)
	if status != http.StatusNoContent {
		t.Fatalf("new client: status %d, want 204", status)
	}
	if n := origin.Total.Load(); n != requests {
		t.Fatalf("origin saw %d new requests, want none", n-requests)
	}
}

func TestBrokenOrigins(t *testing.T) {
	for _, tc := range []struct {
		name    string
		options string
		break_  func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn)
	}{
		{"non-200", "", func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn) {
			o.Status.Store(http.StatusBadGateway)
			close(up.End)
		}},
		{"wrong content type", "", func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn) {
			o.ContentType.Store("text/html")
			close(up.End)
		}},
		{"line that never ends", "\n\tmax_event_size 64KiB", func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn) {
			chunk := strings.Repeat("y", 1<<20)
			for i := 0; i < 16; i++ {
				up.Send(chunk)
			}
		}},
		{"event over the size limit", "\n\tmax_event_size 64KiB", func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn) {
			up.Send("data: " + strings.Repeat("z", 100<<10) + "\n\n")
		}},
		{"silent connection", "\n\tupstream_timeout 200ms", func(t *testing.T, o *testkit.Origin, up *testkit.OriginConn) {
			// nothing: the connection just hangs
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\theartbeat 50ms"+tc.options+"\n}")
			c := testkit.OpenClient(t, base+"/broken", nil)
			up := origin.NextConn(t)
			up.Send("id: 1\ndata: before\n\n")
			if ev := c.NextData(t); ev.Data != "before" {
				t.Fatalf("got %+v", ev)
			}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			requests := origin.Total.Load()

			tc.break_(t, origin, up)
			up.WaitClosed(t)
			testkit.Eventually(t, "the proxy to retry the origin", func() bool { return origin.Total.Load() > requests })

			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 24<<20 {
				t.Errorf("allocated %d MiB while the origin misbehaved", grew>>20)
			}
			c.WaitKeepalive(t) // the client is still connected and served

			origin.Status.Store(0)
			origin.ContentType.Store("")
			again := origin.NextConn(t)
			if got := again.Header.Get("Last-Event-ID"); got != "1" {
				t.Errorf("resumed with Last-Event-ID %q, want 1", got)
			}
			again.Send("id: 2\ndata: after\n\n")
			if ev := c.NextData(t); ev.Data != "after" {
				t.Fatalf("got %+v", ev)
			}
			// A backoff, not a hot loop: a handful of attempts at most.
			if n := origin.Total.Load() - requests; n > 6 {
				t.Errorf("%d upstream requests while broken, want a few", n)
			}
		})
	}
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
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
			c := testkit.OpenClient(t, base+"/reuse", nil)
			up := origin.NextConn(t)
			for _, ev := range tc.before {
				up.Send(ev)
				c.NextData(t)
			}
			close(up.End)
			up2 := origin.NextConn(t)
			for _, ev := range tc.after {
				up2.Send(ev)
			}
			for _, want := range tc.want {
				if ev := c.NextData(t); ev.Data != want {
					t.Fatalf("got data %q, want %q", ev.Data, want)
				}
			}
		})
	}
}

func TestRedirectsLeavingTheOriginAreRefused(t *testing.T) {
	var elsewhere sync.Map
	other := testkit.NewServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Store(r.Header.Get("X-Secret"), true)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: from elsewhere\n\n")
	}))
	t.Cleanup(other.Close)
	origin := testkit.NewOrigin(t)
	redirect := testkit.NewServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/same" {
			http.Redirect(w, r, origin.URL()+"/moved", http.StatusFound)
			return
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(redirect.Close)
	// Same host: the redirect server and the origin share 127.0.0.1 but not
	// a port, so both count as other origins.
	base := testkit.StartCaddy(t, "sse_fanout "+redirect.URL+" {\n\theader_up X-Secret s3cret\n}")
	expectRefusal(t, base+"/away", http.StatusBadGateway, true) // the stream never opened
	testkit.Eventually(t, "the upstream error", func() bool { return counterValue(t, redirect.URL, "upstream_errors") >= 1 })
	if _, ok := elsewhere.Load("s3cret"); ok {
		t.Fatal("header_up was sent to another origin through a redirect")
	}
	found := false
	elsewhere.Range(func(any, any) bool { found = true; return false })
	if found {
		t.Fatal("a redirect to another origin was followed")
	}
}

// TestOpenersCursorNeverDecidesTheSharedStream: the client that opens a
// stream with a cursor (here the last_event_id query parameter, as a
// cross-site <img> could send) does not decide what the stream asks the
// origin for. Whatever the origin answers to that cursor, the stream's own
// request carries none, so it opens on its first attempt, and a witness and
// later clients get the origin's events; the cursor's fate is its client's
// alone (a catch-up of its own, refused here, so a stale cursor).
func TestOpenersCursorNeverDecidesTheSharedStream(t *testing.T) {
	for _, status := range []int{
		http.StatusBadRequest, http.StatusNotFound, http.StatusGone, http.StatusNoContent,
		http.StatusInternalServerError, http.StatusServiceUnavailable,
	} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			var refused, plain atomic.Int64
			origin.SetAnswer(func(r *http.Request) int {
				if r.Header.Get("Last-Event-ID") != "" {
					refused.Add(1)
					return status
				}
				plain.Add(1)
				return 0
			})
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())

			attacker, attackerStatus := testkit.DialClient(t, base+"/poison?last_event_id=x", nil)
			if attackerStatus != http.StatusOK {
				t.Fatalf("the opener with a cursor: status %d, want 200", attackerStatus)
			}
			witness := testkit.OpenClient(t, base+"/poison", nil)
			up := origin.NextConn(t)
			if got, ok := up.Header["Last-Event-Id"]; ok {
				t.Fatalf("the stream's upstream request carried Last-Event-ID %q, the opener's cursor", got)
			}
			if n := plain.Load(); n != 1 {
				t.Fatalf("the origin saw %d requests for the stream, want 1: it opens on its first attempt", n)
			}
			testkit.SendIDs(up, 1, 3)
			witness.ExpectIDs(t, 1, 3)
			attacker.Close()

			later := testkit.OpenClient(t, base+"/poison", nil)
			testkit.SendIDs(up, 4, 4)
			for _, c := range []*testkit.Client{witness, later} {
				c.ExpectIDs(t, 4, 4)
			}
			if refused.Load() > 1 {
				t.Fatalf("the origin was asked %d times for the opener's cursor, want at most once", refused.Load())
			}
		})
	}
}

func TestRedirectsLeavingTheBasePathAreRefused(t *testing.T) {
	for _, tc := range []struct{ name, location string }{
		{"to another path", "/admin/keys"},
		{"by dot segments", "/sse/../admin/keys"},
		{"by encoded dot segments", "/sse/%2e%2e/admin/keys"},
		{"by an encoded slash", "/sse/..%2fadmin/keys"},
		{"to a sibling of the base", "/ssex/admin/keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var outside sync.Map // paths requested outside /sse/
			origin := testkit.NewServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/sse/") || strings.Contains(r.URL.Path, "..") {
					outside.Store(r.URL.RequestURI(), r.Header.Get("X-Secret"))
					http.NotFound(w, r)
					return
				}
				http.Redirect(w, r, tc.location, http.StatusFound)
			}))
			t.Cleanup(origin.Close)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL+"/sse {\n\theader_up X-Secret s3cret\n}")
			// The stream never opens: a refused redirect is a failed attempt.
			expectRefusal(t, base+"/r", http.StatusBadGateway, true)
			testkit.Eventually(t, "the upstream error", func() bool { return counterValue(t, origin.URL+"/sse", "upstream_errors") >= 1 })
			outside.Range(func(path, secret any) bool {
				t.Errorf("a redirect out of the base path was followed to %s, with X-Secret %q", path, secret)
				return true
			})
		})
	}
}

func TestRedirectsWithinTheBasePathAreFollowed(t *testing.T) {
	origin := testkit.NewOrigin(t)
	redirect := testkit.NewServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sse/r" {
			http.Redirect(w, r, "/sse/moved/../there", http.StatusFound)
			return
		}
		origin.ServeHTTP(w, r)
	}))
	t.Cleanup(redirect.Close)
	base := testkit.StartCaddy(t, "sse_fanout "+redirect.URL+"/sse")
	c := testkit.OpenClient(t, base+"/r", nil)
	up := origin.NextConn(t)
	if up.Path != "/sse/there" {
		t.Fatalf("the redirect was followed to %q, want /sse/there", up.Path)
	}
	up.Send("data: moved\n\n")
	if ev := c.NextData(t); ev.Data != "moved" {
		t.Fatalf("got %+v", ev)
	}
}

// TestNeverLiveStreamAnswersWithTheOriginsRefusal: while a stream has never
// been live, its clients get the origin's answer to the stream's own
// request by its class, as reverse_proxy would answer them: a 4xx passed
// through, a 503 as 503, another 5xx, a network error or an answer that is
// not an event stream as 502; the 5xx with Retry-After. Never 200 and
// keepalives for a stream that is not there. Once the origin answers with
// a stream, clients are served.
func TestNeverLiveStreamAnswersWithTheOriginsRefusal(t *testing.T) {
	for _, tc := range []struct {
		name       string
		break_     func(o *testkit.Origin)
		want       int
		retryAfter bool
	}{
		{"404", func(o *testkit.Origin) { o.Status.Store(http.StatusNotFound) }, http.StatusNotFound, false},
		{"401", func(o *testkit.Origin) { o.Status.Store(http.StatusUnauthorized) }, http.StatusUnauthorized, false},
		{"403", func(o *testkit.Origin) { o.Status.Store(http.StatusForbidden) }, http.StatusForbidden, false},
		{"429", func(o *testkit.Origin) { o.Status.Store(http.StatusTooManyRequests) }, http.StatusTooManyRequests, true},
		{"html", func(o *testkit.Origin) { o.ContentType.Store("text/html") }, http.StatusBadGateway, true},
		{"500", func(o *testkit.Origin) { o.Status.Store(http.StatusInternalServerError) }, http.StatusBadGateway, true},
		{"503", func(o *testkit.Origin) { o.Status.Store(http.StatusServiceUnavailable) }, http.StatusServiceUnavailable, true},
		{"204", func(o *testkit.Origin) { o.Status.Store(http.StatusNoContent) }, http.StatusNoContent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			tc.break_(origin)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
			for i := 0; i < 2; i++ { // the first client waits for the answer; the next is given it
				expectRefusal(t, base+"/refused", tc.want, tc.retryAfter)
			}
			if n := origin.Total.Load(); n != 1 {
				t.Fatalf("the origin saw %d requests, want 1: one for the stream, none per client", n)
			}
			if tc.want == http.StatusNoContent {
				return
			}
			origin.Status.Store(0)
			origin.ContentType.Store("")
			testkit.Eventually(t, "a client to be served once the origin heals", func() bool {
				c, status := testkit.DialClient(t, base+"/refused", nil)
				if c != nil {
					c.Close()
				}
				return status == http.StatusOK
			})
		})
	}
	t.Run("network error", func(t *testing.T) {
		dead := fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t)) // nothing listens there
		base := testkit.StartCaddy(t, "sse_fanout "+dead)
		expectRefusal(t, base+"/nowhere", http.StatusBadGateway, true)
		testkit.Eventually(t, "an upstream error to be counted", func() bool {
			return counterValue(t, dead, "upstream_errors") >= 1
		})
	})
}

// expectRefusal asks for url and fails unless the answer has the status
// want, a short text/plain body, and Retry-After if retryAfter.
func expectRefusal(t *testing.T, url string, want int, retryAfter bool) {
	t.Helper()
	resp := testkit.Get(t, url)
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d", resp.StatusCode, want) // a stream's body would not end
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if want == http.StatusNoContent {
		return
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || len(body) == 0 || len(body) > 200 {
		t.Errorf("Content-Type %q, body %q: want a short text/plain reason", ct, body)
	}
	if got := resp.Header.Get("Retry-After") != ""; got != retryAfter {
		t.Errorf("Retry-After %q, want one: %v", resp.Header.Get("Retry-After"), retryAfter)
	}
}

// TestFirstAnswersAreAwaitedTogether: a page of three members whose
// origins have not answered yet waits firstAnswerWait in all, on the
// test's fake clock, not that long for each member in turn (it waited
// three times that before).
func TestFirstAnswersAreAwaitedTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ss []*stream
		for range 3 {
			ss = append(ss, newTestStream(testSettings())) // never started: no answer comes
		}
		start := time.Now()
		if s, ref := awaitFirstAnswers(context.Background(), ss); s != nil || ref != nil {
			t.Fatalf("refused by %v with %+v, want no refusal from streams that never answered", s.label, ref)
		}
		if waited := time.Since(start); waited != firstAnswerWait {
			t.Fatalf("waited %v for three streams' first answers, want %v in all", waited, firstAnswerWait)
		}
	})
}
