package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// muxProtocols are what the browser reads a multiplexed page over:
// HTTP/1.1, where ten members are past the six connections a browser
// allows per origin, and HTTP/2 (reloadableProxyOver).
var muxProtocols = []string{"h1", "h2"}

// muxMembers are the ten members, m0 to m9, of a multiplexed page that
// reads /s/, and each one's origin connection.
type muxMembers struct {
	origin *testkit.Origin
	names  []string                       // m0 to m9, in the page's URL's order
	conns  map[string]*testkit.OriginConn // each member's origin connection of the moment
}

func newMuxMembers(origin *testkit.Origin) *muxMembers {
	m := &muxMembers{origin: origin, names: make([]string, 10)}
	for i := range m.names {
		m.names[i] = "m" + strconv.Itoa(i)
	}
	return m
}

// muxSubdirectives are the sse_fanout subdirectives of a proxy that
// multiplexes /s/*, with retry 500ms, and an upstream backoff of 250ms to
// 2s, so that it tries an origin that went away again soon.
var muxSubdirectives = []string{"retry 500ms", "upstream_backoff 250ms 2s", "multiplex_param streams", "multiplex_members /s/*"}

// path is the path and query of the page's stream: every member, on one
// response.
func (m *muxMembers) path() string { return "/s/?streams=" + strings.Join(m.names, ",") }

// takeConns takes the origin's next connection of every member, and fails
// unless each asks with the Last-Event-ID lastEventID ("": none).
func (m *muxMembers) takeConns(t *testing.T, lastEventID string) {
	t.Helper()
	m.conns = make(map[string]*testkit.OriginConn, len(m.names))
	for range m.names {
		c := m.origin.NextConn(t)
		name, _ := strings.CutPrefix(c.Path, "/s/")
		if !slices.Contains(m.names, name) || m.conns[name] != nil {
			t.Fatalf("unexpected origin connection for %s", c.Path)
		}
		if got := c.Header.Get("Last-Event-ID"); got != lastEventID {
			t.Errorf("the origin connection for %s asked with Last-Event-ID %q, want %q", c.Path, got, lastEventID)
		}
		m.conns[name] = c
	}
}

// send has the origin send every member its events from to to, each with
// its number as id and memberData as data.
func (m *muxMembers) send(from, to int) {
	for _, name := range m.names {
		for i := from; i <= to; i++ {
			m.conns[name].Send(fmt.Sprintf("id: %d\ndata: %s\n\n", i, memberData(name, i)))
		}
	}
}

// memberData is the data of the member's event n.
func memberData(name string, n int) string { return fmt.Sprintf("%s %d", name, n) }

// checkMembers fails unless got holds, for each member, the data of its
// events 1 to n, once each, in order.
func (m *muxMembers) checkMembers(t *testing.T, got map[string][]string, n int) {
	t.Helper()
	for _, name := range m.names {
		var want []string
		for i := 1; i <= n; i++ {
			want = append(want, memberData(name, i))
		}
		if !slices.Equal(got[name], want) {
			t.Errorf("member %s: the page saw %q, want %q", name, got[name], want)
		}
	}
}

// muxPage is a page that reads ten members of /s/ on one EventSource
// through the proxy, and what it reads them from.
type muxPage struct {
	*muxMembers
	proto  string // "h1" or "h2", as reloadableProxyOver takes it
	probe  *probe
	reload func()
	tab    context.Context
}

// openMuxPage starts an origin, a proxy over proto with muxSubdirectives,
// and a browser, and has the browser open a page that reads ten members,
// m0 to m9, on one EventSource, until the origin has every member's
// connection.
func openMuxPage(t *testing.T, proto string) *muxPage {
	t.Helper()
	p := &muxPage{muxMembers: newMuxMembers(testkit.NewOrigin(t)), proto: proto, probe: newProbe(t, t.Name())}
	var base string
	base, p.reload = reloadableProxyOver(t, proto, p.origin.URL(), muxSubdirectives...)
	p.tab = newBrowser(t, browserFlags(proto)...)
	navigate(t, p.tab, recorderURL(base, p.names, p.path()))
	p.probe.waitAnswered(t, 1)
	p.takeConns(t, "")
	return p
}

// namedAtLeast is a JavaScript expression that is true once the page saw
// at least n named events.
func namedAtLeast(n int) string {
	return fmt.Sprintf(`window.rec.filter((e) => e.kind === "named").length >= %d`, n)
}

// readAcross has the origin send every member its events 1 to 5 and, once
// the page has them, calls cut, which cuts the page's reads or the
// proxy's and leaves every member's events 6 to 8 sent; then sends events
// 9 and 10, and checks that the page saw each member's ten events, once
// each, in order, under the member's name. It returns the page's record,
// for the caller's checks of the cut.
func (p *muxPage) readAcross(t *testing.T, cut func()) []pageEntry {
	t.Helper()
	p.send(1, 5)
	waitPage(t, p.tab, "every member's first five", namedAtLeast(5*len(p.names)))
	cut()
	p.send(9, 10)
	waitPage(t, p.tab, "every member's ten", namedAtLeast(10*len(p.names)))

	rec := pageRecord(t, p.tab)
	got := make(map[string][]string)
	for _, e := range rec {
		if e.Kind == "named" {
			got[e.Type] = append(got[e.Type], deref(e.Data))
		}
	}
	p.checkMembers(t, got, 10)
	if n := countKind(rec, "named"); n != 10*len(p.names) {
		t.Errorf("the page saw %d named events, want %d\nrecord:\n%s", n, 10*len(p.names), fmtRecord(rec))
	}
	return rec
}

// checkRequests fails unless Caddy saw n requests of the page, each over
// the page's protocol: with every member on one response, one request per
// connect.
func (p *muxPage) checkRequests(t *testing.T, n int) {
	t.Helper()
	reqs := p.probe.requests()
	if len(reqs) != n {
		t.Errorf("Caddy saw %d requests of the page, want %d: %+v", len(reqs), n, reqs)
	}
	for _, r := range reqs {
		if r.Proto != wantProto(p.proto) {
			t.Errorf("%s came over %s, want %s", r.URI, r.Proto, wantProto(p.proto))
		}
	}
}

// checkOpens fails unless the page saw opens open and errs error events.
func checkOpens(t *testing.T, rec []pageEntry, opens, errs int) {
	t.Helper()
	if o, e := countKind(rec, "open"), countKind(rec, "error"); o != opens || e != errs {
		t.Errorf("the page saw %d open and %d error events, want %d and %d\nrecord:\n%s", o, e, opens, errs, fmtRecord(rec))
	}
}

// TestBrowserMuxTenMembersResumeExactlyAfterAReload has one page read ten
// streams on one EventSource, over HTTP/1.1 (past the six connections a
// browser allows per origin) and over HTTP/2, tell them apart by their
// event names, and, cut by a config reload, resume every member exactly
// with the composite cursor its browser sends by itself: no gap, no
// duplicate, no new origin connection.
func TestBrowserMuxTenMembersResumeExactlyAfterAReload(t *testing.T) {
	for _, proto := range muxProtocols {
		t.Run(proto, func(t *testing.T) {
			p := openMuxPage(t, proto)
			rec := p.readAcross(t, func() {
				p.reload()
				waitPage(t, p.tab, "the cut", `window.rec.some((e) => e.kind === "error")`)
				p.send(6, 8) // while the browser waits to reconnect: into the buffers
				reqs := p.probe.waitAnswered(t, 2)
				if got, want := reqs[1].Header.Get("Last-Event-ID"), strings.Repeat("5,", 9)+"5"; got != want {
					t.Errorf("the browser reconnected with Last-Event-ID %q, want %q", got, want)
				}
			})
			checkOpens(t, rec, 2, 1)
			p.checkRequests(t, 2)
			if n := p.origin.Total.Load(); n != 10 {
				t.Errorf("the origin saw %d requests, want 10: one per member, kept across the reload", n)
			}
		})
	}
}

// TestBrowserMuxTenMembersResumeExactlyAfterAnOriginRestart has one page
// read ten streams on one EventSource, over HTTP/1.1 and over HTTP/2,
// while the origin goes away (its listener closes, every connection on it
// is cut, and the proxy's attempts are refused) and comes back on the same
// port: the proxy resumes each member's stream with its own Last-Event-ID,
// the origin sends two events of each again, and the page, which notices
// nothing, sees every member exact.
func TestBrowserMuxTenMembersResumeExactlyAfterAnOriginRestart(t *testing.T) {
	for _, proto := range muxProtocols {
		t.Run(proto, func(t *testing.T) {
			p := openMuxPage(t, proto)
			rec := p.readAcross(t, func() {
				p.origin.Restart(t, func() {
					testkit.Eventually(t, "the proxy to find the origin gone, on every member's stream", func() bool {
						refused := 0
						for _, st := range streamStatuses(t) {
							if strings.Contains(st.UpstreamError, "connection refused") {
								refused++
							}
						}
						return refused == len(p.names)
					})
				})
				p.takeConns(t, "5")
				p.send(4, 8) // 4 and 5 again, as an origin may resend
			})
			checkOpens(t, rec, 1, 0)
			p.checkRequests(t, 1)
			if n := p.origin.Total.Load(); n != 20 {
				t.Errorf("the origin saw %d requests, want 20: one per member, and one per member after the restart", n)
			}
		})
	}
}
