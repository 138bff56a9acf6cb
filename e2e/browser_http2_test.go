package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestBrowserHTTP2StreamsShareOneConnection serves the page and its
// streams over HTTPS with the tests' certificate (testkit.CertFile). The page opens more
// EventSources than a browser allows HTTP/1.1 connections to one host (6),
// each on its own stream; all of them must get their events while all are
// open, over HTTP/2, and Caddy must see every request come from one
// client address and port: one connection.
func TestBrowserHTTP2StreamsShareOneConnection(t *testing.T) {
	const streams = 12
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	port := testkit.FreePort(t)
	testkit.StartWholeCaddyfile(t, testkit.TLSGlobalOptions("h1 h2")+fmt.Sprintf("https://127.0.0.1:%d {\n\tbind 127.0.0.1\n\ttls internal\n\t%s\n}\n",
		port, proxySite(t, t.Name(), origin.URL(), "heartbeat 1m")))
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	testkit.WaitCertificate(t, fmt.Sprintf("127.0.0.1:%d", port))
	tab := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))

	srcs := make([]string, streams)
	for i := range srcs {
		srcs[i] = fmt.Sprintf("/s/h2?stream=%d", i)
	}
	navigate(t, tab, recorderURL(base, nil, srcs...))
	for range streams {
		up := origin.NextConn(t)
		up.Send(fmt.Sprintf("id: 1\ndata: %s\n\n", up.Path))
	}
	waitPage(t, tab, "an event on every stream",
		fmt.Sprintf(`new Set(window.rec.filter((e) => e.kind === "message").map((e) => e.src)).size === %d`, streams))

	rec := pageRecord(t, tab)
	for _, e := range fired(rec) {
		if want := "/s/h2?stream=" + strconv.Itoa(e.Src); deref(e.Data) != want {
			t.Errorf("EventSource %d got %q, want %q", e.Src, deref(e.Data), want)
		}
	}
	if errs := countKind(rec, "error"); errs != 0 {
		t.Errorf("the page saw %d error events\nrecord:\n%s", errs, fmtRecord(rec))
	}
	if states := evalPage[[]int](t, tab, `window.readyStates()`); slices.ContainsFunc(states, func(s int) bool { return s != 1 }) {
		t.Errorf("readyStates %v, want all OPEN", states)
	}
	reqs := probe.requests()
	addrs := make(map[string]int)
	for _, r := range reqs {
		if r.Proto != "HTTP/2.0" {
			t.Errorf("%s came over %s, want HTTP/2.0", r.URI, r.Proto)
		}
		addrs[r.RemoteAddr]++
	}
	if len(reqs) != streams || len(addrs) != 1 {
		t.Errorf("Caddy saw %d stream requests from %d client addresses (%v), want %d from 1: one shared connection",
			len(reqs), len(addrs), addrs, streams)
	}
}

// TestBrowserHTTP2StreamsResumeAfterAReload cuts twelve EventSources that
// share one HTTP/2 connection with a config reload: every one must come
// back by itself with its Last-Event-ID, again over one HTTP/2
// connection, and get the event it missed from the buffer.
func TestBrowserHTTP2StreamsResumeAfterAReload(t *testing.T) {
	const streams = 12
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxyOver(t, "h2", origin.URL(), "retry 300ms")
	tab := newBrowser(t, browserFlags("h2")...)

	srcs := make([]string, streams)
	for i := range srcs {
		srcs[i] = fmt.Sprintf("/s/h2reload?stream=%d", i)
	}
	countMessages := func(n int) string {
		return fmt.Sprintf(`window.rec.filter((e) => e.kind === "message").length === %d`, n)
	}
	navigate(t, tab, recorderURL(base, nil, srcs...))
	ups := make([]*testkit.OriginConn, streams)
	for i := range ups {
		ups[i] = origin.NextConn(t)
		testkit.SendIDs(ups[i], 1, 1)
	}
	waitPage(t, tab, "event 1 on every stream", countMessages(streams))

	reload()
	waitPage(t, tab, "every stream cut", fmt.Sprintf(`window.rec.filter((e) => e.kind === "error").length === %d`, streams))
	for _, up := range ups {
		testkit.SendIDs(up, 2, 2) // while the page is away
	}
	reqs := probe.waitFor(t, "every stream's reconnect", func(reqs []probeRequest) bool {
		return countAnswered(reqs, http.StatusOK) == 2*streams
	})
	for _, up := range ups {
		testkit.SendIDs(up, 3, 3)
	}
	waitPage(t, tab, "events 2 and 3 on every stream", countMessages(3*streams))

	addrs := make(map[string]int)
	for _, r := range reqs[streams:] {
		addrs[r.RemoteAddr]++
		if r.Proto != "HTTP/2.0" || r.Header.Get("Last-Event-ID") != "1" {
			t.Errorf("%s reconnected over %s with Last-Event-ID %q, want HTTP/2.0 and 1", r.URI, r.Proto, r.Header.Get("Last-Event-ID"))
		}
	}
	if len(addrs) != 1 {
		t.Errorf("the reconnects came from %d client addresses (%v), want 1", len(addrs), addrs)
	}
	rec := pageRecord(t, tab)
	perStream := make(map[int][]int)
	for _, e := range fired(rec) {
		n, err := strconv.Atoi(deref(e.LastEventID))
		if err != nil || deref(e.Data) != fmt.Sprintf("event %d", n) {
			t.Fatalf("unexpected event %s", e)
		}
		perStream[e.Src] = append(perStream[e.Src], n)
	}
	for i := range streams {
		if !slices.Equal(perStream[i], seq(1, 3)) {
			t.Errorf("EventSource %d saw ids %v, want 1..3 once each", i, perStream[i])
		}
	}
}
