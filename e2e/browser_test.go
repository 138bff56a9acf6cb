package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// The browser tests: a real EventSource, in headless Chromium, reading
// streams through sse_fanout. Run them alone with
//
//	go test -race -run Browser ./...

// browserScript is an origin stream with every kind of block an
// EventSource distinguishes, in the line-end and field forms that trip
// parsers up. It ends with an "end" event.
const browserScript = "\xEF\xBB\xBF" + // a BOM at the stream start, dropped
	": a comment, invisible\n" +
	"data: plain\n\n" +
	"event: named\ndata: one\n\n" +
	"data: line 1\ndata: line 2\ndata:\ndata: line 4\n\n" + // multi-line, an empty line inside
	"data\n\n" + // a field without colon: empty data, which still fires
	"data:\n\n" +
	"id: 1\ndata: with id\n\n" +
	"data: inherits id 1\n\n" +
	"id: 2\n\n" + // moves the cursor, fires nothing
	"data: after an id-only block\n\n" +
	"event: named\n\n" + // no data: fires nothing, and the type is reset
	"data: ünïcødé ✓ 日本語 🎉\n\n" +
	"event: ünï\ndata: named in unicode\n\n" +
	"data: \xff\xfe invalid bytes\n\n" + // decoded as U+FFFD by the browser
	"retry: 500\n\n" +
	"data:  two leading spaces\n\n" +
	"data:no space\n\n" +
	"id: 3\r\nevent: named\r\ndata: crlf\r\n\r\n" +
	"id: 4\rdata: cr only\r\r" +
	"event: message\ndata: explicitly a message\n\n" +
	"unknown: field\ndata: a:b:c\n\n" +
	"id\ndata: the id is reset\n\n" +
	"id: 5\x00nul\ndata: an id with NUL is ignored\n\n" +
	"id: 6\n" +
	"event: end\ndata: end\n\n"

// browserScriptNames are the event types browserScript uses.
var browserScriptNames = []string{"named", "ünï", "end"}

// browserScriptWant is what the page's listeners must see of
// browserScript, by the WHATWG rules.
var browserScriptWant = []string{
	"src 0 open readyState=1",
	`src 0 message "message" data="plain" lastEventId="" readyState=1`,
	`src 0 named "named" data="one" lastEventId="" readyState=1`,
	`src 0 message "message" data="line 1\nline 2\n\nline 4" lastEventId="" readyState=1`,
	`src 0 message "message" data="" lastEventId="" readyState=1`,
	`src 0 message "message" data="" lastEventId="" readyState=1`,
	`src 0 message "message" data="with id" lastEventId="1" readyState=1`,
	`src 0 message "message" data="inherits id 1" lastEventId="1" readyState=1`,
	`src 0 message "message" data="after an id-only block" lastEventId="2" readyState=1`,
	`src 0 message "message" data="ünïcødé ✓ 日本語 🎉" lastEventId="2" readyState=1`,
	`src 0 named "ünï" data="named in unicode" lastEventId="2" readyState=1`,
	"src 0 message \"message\" data=\"\ufffd\ufffd invalid bytes\" lastEventId=\"2\" readyState=1",
	`src 0 message "message" data=" two leading spaces" lastEventId="2" readyState=1`,
	`src 0 message "message" data="no space" lastEventId="2" readyState=1`,
	`src 0 named "named" data="crlf" lastEventId="3" readyState=1`,
	`src 0 message "message" data="cr only" lastEventId="4" readyState=1`,
	`src 0 message "message" data="explicitly a message" lastEventId="4" readyState=1`,
	`src 0 message "message" data="a:b:c" lastEventId="4" readyState=1`,
	`src 0 message "message" data="the id is reset" lastEventId="" readyState=1`,
	`src 0 message "message" data="an id with NUL is ignored" lastEventId="" readyState=1`,
	`src 0 named "end" data="end" lastEventId="6" readyState=1`,
}

// TestBrowserSeesTheSameEventsThroughTheProxy has the browser read one
// stream with every kind of event from the origin directly, then through
// sse_fanout: its record must be the same, and the spec's.
func TestBrowserSeesTheSameEventsThroughTheProxy(t *testing.T) {
	origin := testkit.NewOrigin(t)
	direct := directOrigin(t, origin)
	newProbe(t, t.Name())
	base := testkit.StartCaddy(t, proxySite(t, t.Name(), origin.URL(), "heartbeat 1m"))
	tab := newBrowser(t)

	record := func(base string) []string {
		navigate(t, tab, recorderURL(base, browserScriptNames, "/s/all"))
		up := origin.NextConn(t)
		if base != direct && testkit.DetachInTests {
			// The browser's HTTP/1.1 connection is taken over: what it
			// sees comes from a shared writer.
			testkit.Eventually(t, "the browser's client to be detached", func() bool { return detachedClients(t) == 1 })
		}
		up.Send(browserScript)
		waitPage(t, tab, "the end event", hasData("end"))
		return recordStrings(pageRecord(t, tab))
	}
	fromOrigin := record(direct)
	fromProxy := record(base)

	if !slices.Equal(fromOrigin, browserScriptWant) {
		t.Errorf("from the origin, the page saw:\n%s\nwant (the WHATWG rules):\n%s",
			strings.Join(fromOrigin, "\n"), strings.Join(browserScriptWant, "\n"))
	}
	if !slices.Equal(fromProxy, fromOrigin) {
		t.Errorf("through the proxy, the page saw:\n%s\nfrom the origin directly:\n%s",
			strings.Join(fromProxy, "\n"), strings.Join(fromOrigin, "\n"))
	}
}

// pageIDs returns the ids of the message events the page saw, and fails
// the test unless each event's data is "event <its id>".
func pageIDs(t *testing.T, rec []pageEntry) []int {
	t.Helper()
	var ids []int
	for _, e := range fired(rec) {
		n, err := strconv.Atoi(deref(e.LastEventID))
		if err != nil || deref(e.Data) != fmt.Sprintf("event %d", n) {
			t.Fatalf("unexpected event %s\nrecord:\n%s", e, fmtRecord(rec))
		}
		ids = append(ids, n)
	}
	return ids
}

// seq returns from, from+1, ..., to.
func seq(from, to int) []int {
	s := make([]int, 0, to-from+1)
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestBrowserResumesAfterAReloadCutsIt cuts the browser's connection with a
// config reload: the old config's clients are ended. The browser must
// reconnect by itself after the configured retry, send Last-Event-ID, and
// get the events it missed from the buffer: no gap, no duplicate.
func TestBrowserResumesAfterAReloadCutsIt(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 500ms")
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/cut"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 10)
	waitPage(t, tab, "event 10", hasData("event 10"))

	// A compatible config (same upstream, so the same streams and buffers):
	// loading it unloads the old one, which cuts its clients.
	reload()
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	testkit.SendIDs(up, 11, 20) // while the browser waits to reconnect: into the buffer
	reqs := probe.waitAnswered(t, 2)
	if got := reqs[1].Header.Get("Last-Event-ID"); got != "10" {
		t.Errorf("the browser reconnected with Last-Event-ID %q, want 10", got)
	}
	testkit.SendIDs(up, 21, 30)
	waitPage(t, tab, "event 30", hasData("event 30"))

	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(1, 30)) {
		t.Errorf("the page saw ids %v, want 1..30 once each\nrecord:\n%s", got, fmtRecord(rec))
	}
	if opens, errs := countKind(rec, "open"), countKind(rec, "error"); opens != 2 || errs != 1 {
		t.Fatalf("the page saw %d open and %d error events, want 2 and 1 (one cut, one reconnect)\nrecord:\n%s", opens, errs, fmtRecord(rec))
	}
	// The browser waited the configured retry (500ms), not its default (3s
	// in Chromium), before it came back.
	var cutAt, backAt float64
	for _, e := range rec {
		switch {
		case e.Kind == "error":
			cutAt = e.T
		case e.Kind == "open" && cutAt > 0:
			backAt = e.T
		}
	}
	gap := backAt - cutAt
	t.Logf("the browser came back %.0fms after the cut", gap)
	if gap < 450 || gap > 2900 {
		t.Errorf("the browser came back %.0fms after the cut, want about the configured retry, 500ms", gap)
	}
	if n := origin.Total.Load(); n != 1 {
		t.Errorf("the origin saw %d requests, want 1: the reload keeps the stream", n)
	}
}

// TestBrowserDoesNotNoticeAnOriginRestart restarts the origin mid-stream:
// it cuts the upstream connection and answers 503 for a while, then
// resumes from the proxy's Last-Event-ID, sending again some events the
// proxy has. The page must see no error event and miss nothing.
func TestBrowserDoesNotNoticeAnOriginRestart(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base := testkit.StartCaddy(t, proxySite(t, t.Name(), origin.URL(), "heartbeat 1m"))
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/restart"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	up.Send("retry: 250\n\n") // the base of the proxy's reconnect backoff
	testkit.SendIDs(up, 1, 10)
	waitPage(t, tab, "event 10", hasData("event 10"))

	// The origin goes down: the connection ends and the next tries fail.
	refused := make(chan struct{}, 10)
	origin.SetOnRequest(func() {
		if origin.Status.Load() != 0 {
			select {
			case refused <- struct{}{}:
			default:
			}
		}
	})
	origin.Status.Store(503)
	close(up.End)
	for range 2 {
		select {
		case <-refused:
		case <-time.After(testkit.WaitTimeout):
			t.Fatal("the proxy did not try the origin again")
		}
	}
	origin.Status.Store(0) // back up

	again := origin.NextConn(t)
	if got := again.Header.Get("Last-Event-ID"); got != "10" {
		t.Errorf("the proxy resumed with Last-Event-ID %q, want 10", got)
	}
	testkit.SendIDs(again, 8, 20) // 8..10 again, as an origin may resend
	waitPage(t, tab, "event 20", hasData("event 20"))

	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(1, 20)) {
		t.Errorf("the page saw ids %v, want 1..20 once each\nrecord:\n%s", got, fmtRecord(rec))
	}
	if opens, errs := countKind(rec, "open"), countKind(rec, "error"); opens != 1 || errs != 0 {
		t.Errorf("the page saw %d open and %d error events, want 1 and 0\nrecord:\n%s", opens, errs, fmtRecord(rec))
	}
	if n := len(probe.requests()); n != 1 {
		t.Errorf("the browser made %d requests, want 1", n)
	}
}

// TestBrowserNeverSeesHeartbeats keeps a stream silent for several
// heartbeats: the page must see the keepalives as nothing at all, and the
// origin's own comments neither.
func TestBrowserNeverSeesHeartbeats(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base := testkit.StartCaddy(t, proxySite(t, t.Name(), origin.URL(), "heartbeat 50ms"))
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/quiet"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	// A client of our own on the same stream sees the keepalives go by.
	witness := testkit.OpenClient(t, base+"/s/quiet", nil)
	up.Send(": the origin's own comment\n\nid: 1\ndata: event 1\n\n")
	witness.NextEvent(t)
	for range 5 {
		witness.WaitKeepalive(t)
	}
	up.Send(": another comment\n\nid: 2\ndata: event 2\n\n")
	witness.NextEvent(t)
	waitPage(t, tab, "event 2", hasData("event 2"))

	want := []string{
		"src 0 open readyState=1",
		`src 0 message "message" data="event 1" lastEventId="1" readyState=1`,
		`src 0 message "message" data="event 2" lastEventId="2" readyState=1`,
	}
	if got := recordStrings(pageRecord(t, tab)); !slices.Equal(got, want) {
		t.Errorf("the page saw:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBrowserStopsOn204 has the origin answer 204 No Content when the
// proxy reconnects: the proxy ends the stream, and answers the browser's
// own reconnect with 204 too, so the browser stops (readyState 2, CLOSED)
// as it would at the origin.
func TestBrowserStopsOn204(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base := testkit.StartCaddy(t, proxySite(t, t.Name(), origin.URL(), "retry 100ms\n\t\t\theartbeat 1m"))
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/stop"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 3)
	waitPage(t, tab, "event 3", hasData("event 3"))

	origin.Status.Store(http.StatusNoContent)
	close(up.End)
	waitPage(t, tab, "readyState CLOSED", `window.readyStates()[0] === EventSource.CLOSED`)

	reqs := probe.requests()
	if n := len(reqs); n != 2 || reqs[1].Status != http.StatusNoContent {
		t.Errorf("Caddy saw %d requests, want 2, the second answered 204: %+v", n, reqs)
	}
	rec := pageRecord(t, tab)
	if got := pageIDs(t, rec); !slices.Equal(got, seq(1, 3)) {
		t.Errorf("the page saw ids %v, want 1..3", got)
	}
	last := rec[len(rec)-1]
	if last.Kind != "error" || last.ReadyState != 2 {
		t.Errorf("the page's last entry is %s, want an error with readyState 2\nrecord:\n%s", last, fmtRecord(rec))
	}
	if n := origin.Total.Load(); n != 2 {
		t.Errorf("the origin saw %d requests, want 2: the browser's reconnect must not reach it", n)
	}
}

// TestBrowserSeesTheSameEventsInItsRequest is
// TestBrowserSeesTheSameEventsThroughTheProxy with detaching off, so that
// the browser's client is served in its request goroutine from start to
// end (the plugin's TestInRequestWriters does the same for its own tests).
func TestBrowserSeesTheSameEventsInItsRequest(t *testing.T) {
	saved := testkit.DetachInTests
	testkit.DetachInTests = false
	defer func() { testkit.DetachInTests = saved }()
	TestBrowserSeesTheSameEventsThroughTheProxy(t)
}
