package e2e

import (
	"fmt"
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
	port := testkit.FreePort(t)
	site := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port,
			proxySite(t, t.Name(), origin.URL(), "retry 300ms\n\t\t\tcatch_up off\n\t\t\theartbeat "+heartbeat))
	}
	testkit.StartCaddyfile(t, site("1m"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	tab := newBrowser(t)

	navigate(t, tab, recorderURL(base, nil, "/s/ids"))
	probe.waitAnswered(t, 1)
	up := origin.NextConn(t)
	send := func(i int) { up.Send(fmt.Sprintf("id: %s\ndata: event %d\n\n", ids[i], i+1)) }
	send(0)
	send(1)
	waitPage(t, tab, "event 2", hasData("event 2"))
	testkit.LoadCaddyfile(t, testkit.GlobalOptions()+site("2m"))
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
