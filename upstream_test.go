package ssefanout

// The upstream reader: requests, resumes, resends, backoff, broken origins.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
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

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	s := newTestStream(testSettings())
	s.signals.originRetry.Store(400)
	for failures := 0; failures < 12; failures++ {
		ceiling := min(400*time.Millisecond<<failures, backoffMax)
		for i := 0; i < 50; i++ {
			got := s.backoff(failures)
			if got < ceiling/2 || got > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", failures, got, ceiling/2, ceiling)
			}
		}
	}
	s.signals.originRetry.Store(0) // an origin cannot make us loop hot
	if got := s.backoff(0); got < backoffMin/2 {
		t.Fatalf("backoff with retry 0 = %v, want at least %v", got, backoffMin/2)
	}
}

func TestUpstreamFailuresBackOff(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL())
	testkit.OpenClient(t, base+"/fail", nil)
	up := origin.NextConn(t)
	up.Send("retry: 1\ndata: x\n\n") // the smallest base: backoffMin

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
	// Each gap is at least half the doubled wait: 250ms, 500ms, 1s, 2s.
	for i := 1; i < 5; i++ {
		floor := backoffMin << (i - 1) / 2
		if gap := times[i].Sub(times[i-1]); gap < floor {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap, floor)
		}
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

func TestConnectFailureKeepsClients(t *testing.T) {
	dead := fmt.Sprintf("http://127.0.0.1:%d", testkit.FreePort(t)) // nothing listens there
	base := testkit.StartCaddy(t, "sse_fanout "+dead+" {\n\theartbeat 50ms\n}")
	c := testkit.OpenClient(t, base+"/nowhere", nil)
	c.WaitKeepalive(t)
	c.WaitKeepalive(t)
	testkit.Eventually(t, "an upstream error to be counted", func() bool {
		return counterValue(t, dead, "upstream_errors") >= 1
	})
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
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Store(r.Header.Get("X-Secret"), true)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: from elsewhere\n\n")
	}))
	t.Cleanup(other.Close)
	origin := testkit.NewOrigin(t)
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
	base := testkit.StartCaddy(t, "sse_fanout "+redirect.URL+" {\n\theader_up X-Secret s3cret\n}")
	c := testkit.OpenClient(t, base+"/away", nil)
	testkit.Eventually(t, "the upstream error", func() bool { return counterValue(t, redirect.URL, "upstream_errors") >= 1 })
	c.Close()
	if _, ok := elsewhere.Load("s3cret"); ok {
		t.Fatal("header_up was sent to another origin through a redirect")
	}
	found := false
	elsewhere.Range(func(any, any) bool { found = true; return false })
	if found {
		t.Fatal("a redirect to another origin was followed")
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
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/sse/") || strings.Contains(r.URL.Path, "..") {
					outside.Store(r.URL.RequestURI(), r.Header.Get("X-Secret"))
					http.NotFound(w, r)
					return
				}
				http.Redirect(w, r, tc.location, http.StatusFound)
			}))
			t.Cleanup(origin.Close)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL+"/sse {\n\theader_up X-Secret s3cret\n}")
			c := testkit.OpenClient(t, base+"/r", nil)
			// The refusal, or the 404 of a followed redirect, counts as an
			// upstream error once the redirect was dealt with.
			testkit.Eventually(t, "the upstream error", func() bool { return counterValue(t, origin.URL+"/sse", "upstream_errors") >= 1 })
			c.Close()
			outside.Range(func(path, secret any) bool {
				t.Errorf("a redirect out of the base path was followed to %s, with X-Secret %q", path, secret)
				return true
			})
		})
	}
}

func TestRedirectsWithinTheBasePathAreFollowed(t *testing.T) {
	origin := testkit.NewOrigin(t)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
