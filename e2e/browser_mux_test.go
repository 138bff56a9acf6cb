package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestBrowserMuxTenMembersResumeExactlyAfterAReload has one page read ten
// streams on one EventSource over HTTP/1.1 (past the six connections a
// browser allows per origin), tell them apart by their event names, and,
// cut by a config reload, resume every member exactly with the composite
// cursor its browser sends by itself: no gap, no duplicate, no new origin
// connection.
func TestBrowserMuxTenMembersResumeExactlyAfterAReload(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base, reload := reloadableProxy(t, origin.URL(), "retry 500ms", "multiplex_param streams", "multiplex_members /s/*")
	tab := newBrowser(t)

	names := make([]string, 10)
	for i := range names {
		names[i] = "m" + strconv.Itoa(i)
	}
	navigate(t, tab, recorderURL(base, names, "/s/?streams="+strings.Join(names, ",")))
	probe.waitAnswered(t, 1)
	conns := make(map[string]*testkit.OriginConn, len(names))
	for range names {
		c := origin.NextConn(t)
		conns[strings.TrimPrefix(c.Path, "/s/")] = c
	}
	send := func(from, to int) {
		for _, name := range names {
			for i := from; i <= to; i++ {
				conns[name].Send(fmt.Sprintf("id: %d\ndata: %s %d\n\n", i, name, i))
			}
		}
	}
	named := func(n int) string {
		return fmt.Sprintf(`window.rec.filter((e) => e.kind === "named").length >= %d`, n)
	}
	send(1, 5)
	waitPage(t, tab, "every member's first five", named(50))

	reload()
	waitPage(t, tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
	send(6, 8) // while the browser waits to reconnect: into the buffers
	reqs := probe.waitAnswered(t, 2)
	if got, want := reqs[1].Header.Get("Last-Event-ID"), strings.Repeat("5,", 9)+"5"; got != want {
		t.Errorf("the browser reconnected with Last-Event-ID %q, want %q", got, want)
	}
	send(9, 10)
	waitPage(t, tab, "every member's ten", named(100))

	rec := pageRecord(t, tab)
	for _, name := range names {
		var got []string
		for _, e := range rec {
			if e.Kind == "named" && e.Type == name {
				got = append(got, deref(e.Data))
			}
		}
		var want []string
		for i := 1; i <= 10; i++ {
			want = append(want, fmt.Sprintf("%s %d", name, i))
		}
		if !slices.Equal(got, want) {
			t.Errorf("member %s: the page saw %q, want %q", name, got, want)
		}
	}
	if n := countKind(rec, "named"); n != 100 {
		t.Errorf("the page saw %d named events, want 100\nrecord:\n%s", n, fmtRecord(rec))
	}
	if n := origin.Total.Load(); n != 10 {
		t.Errorf("the origin saw %d requests, want 10: one per member, kept across the reload", n)
	}
}
