package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// resumeWithIDs has the page read two events with the given ids, cuts it
// with a reload, sends a third while it is away and a fourth once it is
// back, and returns the Last-Event-ID header Caddy received and the data
// of the events the page saw. The origin has ids[0..3]; catch-up is off, so
// whatever the buffer cannot serve is lost, not fetched.
func resumeWithIDs(t *testing.T, ids [4]string) (header string, seen []string) {
	t.Helper()
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 300ms", "catch_up off")
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/ids"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	send := func(i int) { up.Send(fmt.Sprintf("id: %s\ndata: event %d\n\n", ids[i], i+1)) }
	send(0)
	send(1)
	waitPage(t, tab, "event 2", hasData("event 2"))
	reload()
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	send(2) // while the page is away: into the buffer
	reqs := probe.waitAnswered(t, 2)
	send(3)
	waitPage(t, tab, "event 4", hasData("event 4"))
	for _, e := range fired(pageRecord(t, tab)) {
		seen = append(seen, deref(e.Data))
	}
	return reqs[1].Header.Get("Last-Event-ID"), seen
}

// TestBrowserResumesWithAUnicodeLastEventID: an id is any text without CR,
// LF or NUL. A browser sends a non-ASCII one back as it got it, and the
// proxy must find it in its buffer.
func TestBrowserResumesWithAUnicodeLastEventID(t *testing.T) {
	header, seen := resumeWithIDs(t, [4]string{"ü 1 €", "ü 2 €", "ü 3 €", "ü 4 €"})
	if header != "ü 2 €" {
		t.Errorf("the browser reconnected with Last-Event-ID %q, want %q", header, "ü 2 €")
	}
	if want := []string{"event 1", "event 2", "event 3", "event 4"}; !slices.Equal(seen, want) {
		t.Errorf("the page saw %q, want %q", seen, want)
	}
}

// TestBrowserResumesWithALastEventIDThatEndsInASpace: an id may begin or
// end with spaces ("id:  7 " is the id " 7 "). The browser sends it back
// in its Last-Event-ID header, but HTTP drops the spaces around a header
// value (RFC 9110, section 5.5), so Caddy sees "7": the proxy must still
// resume the browser from its buffer, or the page misses the events sent
// while it was away.
func TestBrowserResumesWithALastEventIDThatEndsInASpace(t *testing.T) {
	header, seen := resumeWithIDs(t, [4]string{"item 1 ", "item 2 ", "item 3 ", "item 4 "})
	if strings.TrimSpace(header) != "item 2" {
		t.Errorf("the browser reconnected with Last-Event-ID %q, want %q with or without its space", header, "item 2 ")
	}
	if want := []string{"event 1", "event 2", "event 3", "event 4"}; !slices.Equal(seen, want) {
		t.Errorf("the page saw %q, want %q: event 3, sent while the page was away, is lost", seen, want)
	}
}

// TestBrowserKeepsThePrimedCursor checks in a real browser what cursor
// priming relies on: the id-only block the proxy sends a joining client
// sets the EventSource's last event ID without firing an event, so a
// browser that is cut before any event resumes from there and loses
// nothing.
func TestBrowserKeepsThePrimedCursor(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 500ms")
	up, _ := testkit.StartStream(t, origin, base+"/s/primed", 5) // ids 1..5, held in the buffer
	tab := newBrowser(t)
	fromBrowser := func(reqs []probeRequest) []probeRequest {
		var out []probeRequest
		for _, r := range reqs {
			if strings.Contains(r.Header.Get("User-Agent"), "Chrome") && r.Status == http.StatusOK {
				out = append(out, r)
			}
		}
		return out
	}

	navigate(t, tab, recorderURL(base, nil, "/s/primed"))
	waitPage(t, tab, "the page to open", `window.rec.some((e) => e.kind === "open")`)
	reload() // cuts the browser before any event
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	reqs := fromBrowser(probe.waitFor(t, "the browser's reconnect", func(reqs []probeRequest) bool {
		return len(fromBrowser(reqs)) >= 2
	}))
	if got := reqs[1].Header.Get("Last-Event-ID"); got != "5" {
		t.Errorf("the browser reconnected with Last-Event-ID %q, want 5: the primed cursor", got)
	}
	testkit.SendIDs(up, 6, 8)
	waitPage(t, tab, "event 8", hasData("event 8"))
	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(6, 8)) {
		t.Errorf("the page saw ids %v, want 6..8: nothing before it joined, nothing twice\nrecord:\n%s", got, fmtRecord(rec))
	}
}

// TestBrowserFirstCursorByQueryThenHeader opens the page's EventSource with
// a last_event_id query parameter, the only cursor a browser can give on a
// first connect. It must get the buffered events after that id; when it is
// cut, it reconnects to the same URL, stale parameter included, with a
// newer Last-Event-ID header, which must win: no duplicate.
func TestBrowserFirstCursorByQueryThenHeader(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 300ms")
	up, _ := testkit.StartStream(t, origin, base+"/s/query", 5)
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/query?last_event_id=3"))
	waitPage(t, tab, "event 5", hasData("event 5"))
	reload()
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	testkit.SendIDs(up, 6, 8)
	probe.waitFor(t, "the browser's reconnect", func(reqs []probeRequest) bool {
		return len(reqs) >= 3 && reqs[len(reqs)-1].Status == http.StatusOK
	})
	testkit.SendIDs(up, 9, 10)
	waitPage(t, tab, "event 10", hasData("event 10"))

	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(4, 10)) {
		t.Errorf("the page saw ids %v, want 4..10 once each\nrecord:\n%s", got, fmtRecord(rec))
	}
	last := probe.requests()[2]
	if last.URI != "/s/query?last_event_id=3" || last.Header.Get("Last-Event-ID") != "5" {
		t.Errorf("the browser reconnected to %s with Last-Event-ID %q, want the same URL with 5", last.URI, last.Header.Get("Last-Event-ID"))
	}
	if n := origin.Total.Load(); n != 1 {
		t.Errorf("the origin saw %d requests, want 1", n)
	}
}

// TestBrowserResumesWhenTheProxyLostItsBuffer reloads to a config with
// another header_up, which makes a new registry: the proxy starts again
// with an empty buffer, as after a restart. The browser comes back first,
// with a Last-Event-ID the proxy no longer holds: the new stream's one
// upstream connection must resume from it, and the page miss nothing.
// (A client that finds the stream already open without its cursor is caught
// up on a request of its own instead: TestCatchUpPastTheBuffer.)
func TestBrowserResumesWhenTheProxyLostItsBuffer(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	port := testkit.FreePort(t)
	site := func(generation int) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port,
			proxySite(t, t.Name(), origin.URL(), fmt.Sprintf("retry 300ms\n\t\t\theader_up X-Generation %d", generation)))
	}
	testkit.StartCaddyfile(t, site(1))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/catchup"))
	probe.waitAnswered(t, 1)
	first := origin.NextConn(t)
	testkit.SendIDs(first, 1, 10)
	waitPage(t, tab, "event 10", hasData("event 10"))

	testkit.LoadCaddyfile(t, testkit.GlobalOptions()+site(2))
	first.WaitClosed(t) // the old registry went, and its upstream connection
	reqs := probe.waitAnswered(t, 2)
	if got := reqs[1].Header.Get("Last-Event-ID"); got != "10" {
		t.Fatalf("the browser reconnected with Last-Event-ID %q, want 10", got)
	}
	// The new stream asks the origin for its live events; the browser's
	// cursor, which the new buffer lacks, is served by a catch-up of its
	// own, which meets the stream where the two hold the same event.
	live, catchUp := origin.NextStreamAndCatchUp(t, "10")
	witness := testkit.OpenClient(t, base+"/s/catchup", nil)
	testkit.SendIDs(live, 11, 20)
	witness.ExpectIDs(t, 11, 20) // the new buffer holds them
	testkit.SendIDs(catchUp, 11, 20)
	waitPage(t, tab, "event 20", hasData("event 20"))

	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(1, 20)) {
		t.Errorf("the page saw ids %v, want 1..20 once each\nrecord:\n%s", got, fmtRecord(rec))
	}
	if n := origin.Total.Load(); n != 3 {
		t.Errorf("the origin saw %d requests, want 3: one per generation, and the browser's catch-up", n)
	}
}
