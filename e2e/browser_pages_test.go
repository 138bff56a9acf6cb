package e2e

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// The browser tests of what pages ask for on connect (issue 15): an
// event-type filter that resumes exactly after a cut, and pages of another
// origin, with and without credentials.

// TestBrowserFilteredResumesExactly: a page that asked for update events
// only, among many tick events it never sees, is cut by a reload and comes
// back with its Last-Event-ID. The proxy keeps that id within its small
// buffer with id-only blocks, so the page resumes from the buffer and sees
// every update once, and no tick; without them its id would have left the
// buffer, and with catch_up off the update sent while it was away would
// be lost (a stale event instead).
func TestBrowserFilteredResumesExactly(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 300ms", "filter_param events", "buffer 8", "catch_up off", "stale_event stale")
	tab := newBrowser(t)
	navigate(t, tab, recorderURL(base, []string{"update", "tick", "stale"}, "/s/f?events=update"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	if up.Path != "/s/f" {
		t.Fatalf("upstream request %q: the filter is no part of it", up.Path)
	}
	id := 0
	send := func(typ string, n int) {
		for range n {
			id++
			up.Send(fmt.Sprintf("event: %s\ndata: %s %d\nid: %d\n\n", typ, typ, id, id))
		}
	}
	send("update", 1) // 1
	send("tick", 29)  // 2..30
	send("update", 1) // 31
	send("tick", 9)   // 32..40: more than the buffer holds
	waitPage(t, tab, "update 31", hasData("update 31"))

	reload() // cuts the page
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	send("tick", 1)   // 41, while the page is away
	send("update", 1) // 42
	send("tick", 2)   // 43..44
	reqs := probe.waitAnswered(t, 2)
	send("update", 1) // 45
	waitPage(t, tab, "update 45", hasData("update 45"))

	resumedAt, _ := strconv.Atoi(reqs[1].Header.Get("Last-Event-ID"))
	if resumedAt < 37 {
		t.Errorf("the page reconnected with Last-Event-ID %q, which the buffer (37..44) no longer holds", reqs[1].Header.Get("Last-Event-ID"))
	}
	var seen []string
	rec := pageRecord(t, tab)
	for _, e := range fired(rec) {
		seen = append(seen, e.Type+" "+deref(e.LastEventID))
	}
	if want := []string{"update 1", "update 31", "update 42", "update 45"}; !slices.Equal(seen, want) {
		t.Errorf("the page saw %q, want %q\nrecord:\n%s", seen, want, fmtRecord(rec))
	}
	if n := origin.Total.Load(); n != 1 {
		t.Errorf("the origin saw %d requests, want 1", n)
	}
}

// crossOrigin is a Caddy with two sites on 127.0.0.1, so two origins:
// the recorder page on one port and, on another, /s/* through sse_probe to
// sse_fanout.
type crossOrigin struct {
	pageBase, streamBase string
	load                 func(heartbeat string) // (re)loads the config; a reload cuts the clients
}

// startCrossOrigin starts a crossOrigin. fanout returns the sse_fanout
// subdirectives and before the stream site's directives before its route,
// given the page's origin.
func startCrossOrigin(t *testing.T, origin *testkit.Origin, fanout, before func(pageOrigin string) string) *crossOrigin {
	t.Helper()
	pagePort, streamPort := testkit.FreePort(t), testkit.FreePort(t)
	co := &crossOrigin{
		pageBase:   fmt.Sprintf("http://127.0.0.1:%d", pagePort),
		streamBase: fmt.Sprintf("http://127.0.0.1:%d", streamPort),
	}
	sites := func(heartbeat string) string {
		return fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	root * %s
	file_server
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	%s
	route /s/* {
		sse_probe %s
		sse_fanout %s {
			retry 300ms
			heartbeat %s
			%s
		}
	}
}
`, pagePort, browserPageDir(t), streamPort, before(co.pageBase), t.Name(), origin.URL(), heartbeat, fanout(co.pageBase))
	}
	testkit.StartCaddyfile(t, sites("1m"))
	co.load = func(heartbeat string) { testkit.LoadCaddyfile(t, testkit.GlobalOptions()+sites(heartbeat)) }
	return co
}

func noDirectives(string) string { return "" }

// TestBrowserCrossOrigin: a page on one origin reads a stream on another,
// with new EventSource(url) and with {withCredentials: true}, through the
// cors subdirective or the header directive recipe; reconnects after a cut
// with Last-Event-ID and misses nothing; and is refused where the config
// does not allow its origin. A browser makes no preflight request.
func TestBrowserCrossOrigin(t *testing.T) {
	perUser := "key {http.request.cookie.session}\n\t\t\theader_up Cookie \"session={http.request.cookie.session}\""
	headerRecipe := func(page string) string {
		return fmt.Sprintf(`@page header Origin %s
	header @page {
		Access-Control-Allow-Origin "{http.request.header.Origin}"
		Access-Control-Allow-Credentials true
	}
	header Vary Origin`, page)
	}
	for _, tc := range []struct {
		name   string
		fanout func(page string) string
		before func(page string) string
		cred   bool
		reads  bool
	}{
		{"cors, with credentials", func(page string) string { return "cors " + page + "\n\t\t\t" + perUser }, noDirectives, true, true},
		{"cors, without credentials", func(page string) string { return "cors " + page }, noDirectives, false, true},
		{"header recipe, with credentials", func(string) string { return perUser }, headerRecipe, true, true},
		{"cors *, without credentials", func(string) string { return "cors *" }, noDirectives, false, true},
		{"cors *, with credentials", func(string) string { return "cors *" }, noDirectives, true, false},
		{"another origin listed", func(string) string { return "cors http://127.0.0.1:1" }, noDirectives, false, false},
		{"no cors", func(string) string { return "" }, noDirectives, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			probe := newProbe(t, t.Name())
			co := startCrossOrigin(t, origin, tc.fanout, tc.before)
			tab := newBrowser(t)
			page := recorderURL(co.pageBase, nil, co.streamBase+"/s/x") + "&cookie=" + url.QueryEscape("session=alice")
			if tc.cred {
				page += "&cred=1"
			}
			navigate(t, tab, page)
			reqs := probe.waitAnswered(t, 1)
			if got := reqs[0].Header.Get("Origin"); got != co.pageBase {
				t.Fatalf("the request's Origin is %q, want %q", got, co.pageBase)
			}
			if cookie := reqs[0].Header.Get("Cookie"); tc.cred != strings.Contains(cookie, "session=alice") {
				t.Fatalf("withCredentials %v, and the request's Cookie is %q", tc.cred, cookie)
			}
			up := origin.NextConn(t)
			testkit.SendIDs(up, 1, 5)
			if !tc.reads {
				waitPage(t, tab, "the refusal", `window.rec.some((e) => e.kind === "error")`)
				time.Sleep(300 * time.Millisecond)
				if rec := pageRecord(t, tab); len(fired(rec)) > 0 {
					t.Fatalf("the page read the stream of another origin that does not allow it:\n%s", fmtRecord(rec))
				}
				return
			}
			waitPage(t, tab, "event 5", hasData("event 5"))
			if tc.cred && strings.Contains(tc.fanout(co.pageBase), "key") {
				if got := up.Header.Get("Cookie"); got != "session=alice" {
					t.Errorf("the upstream request's Cookie is %q, want the session the key allows", got)
				}
			}

			co.load("2m") // a compatible config: it cuts the page, and keeps the stream
			waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
			testkit.SendIDs(up, 6, 8) // while the page is away
			reqs = probe.waitAnswered(t, 2)
			if got := reqs[1].Header.Get("Last-Event-ID"); got != "5" {
				t.Errorf("the page reconnected with Last-Event-ID %q, want 5", got)
			}
			testkit.SendIDs(up, 9, 10)
			waitPage(t, tab, "event 10", hasData("event 10"))
			rec := pageRecord(t, tab)
			if got := pageIDs(t, rec); !slices.Equal(got, seq(1, 10)) {
				t.Errorf("the page saw ids %v, want 1..10 once each\nrecord:\n%s", got, fmtRecord(rec))
			}
			for _, r := range probe.requests() {
				if r.Method != "GET" {
					t.Errorf("the browser sent %s %s: an EventSource makes no preflight", r.Method, r.URI)
				}
			}
			if n := origin.Total.Load(); n != 1 {
				t.Errorf("the origin saw %d requests, want 1", n)
			}
		})
	}
}
