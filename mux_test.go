package ssefanout

// Multiplexing: the composite cursor, and the rules of a page that reads
// several streams on one response (docs/multiplex.md).

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestCursorMuxRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  []string
		want string
	}{
		{"plain", []string{"1", "abc", "x-y_z.~"}, "1,abc,x-y_z.~"},
		{"none yet", []string{"", "", "7"}, ",,7"},
		{"comma", []string{"a,b", "c"}, "a%2Cb,c"},
		{"colon and percent", []string{"news:1", "50%"}, "news%3A1,50%25"},
		{"spaces at the ends", []string{" 1 ", "\t"}, "%201%20,%09"},
		{"non-ASCII", []string{"日本", "ü"}, "%E6%97%A5%E6%9C%AC,%C3%BC"},
		{"one member", []string{"only"}, "only"},
		{"one member without an id", []string{""}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendMuxCursor(nil, tc.ids))
			if got != tc.want {
				t.Fatalf("cursor %q, want %q", got, tc.want)
			}
			parts, err := splitMuxCursor(got, len(tc.ids))
			if err != nil || !slices.Equal(parts, tc.ids) {
				t.Fatalf("split %q: %q, %v; want %q", got, parts, err, tc.ids)
			}
		})
	}
}

func TestCursorMuxThatIsNoneIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		n         int
	}{
		{"too few parts", "1,2", 3},
		{"too many parts", "1,2,3", 2},
		{"bad escape", "%G1,2", 2},
		{"short escape", "1,%4", 2},
		{"raw space", "1 2,3", 2},
		{"raw colon", "a:1,2", 2},
		{"raw non-ASCII", "ü,2", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if parts, err := splitMuxCursor(tc.raw, tc.n); err != errBadMuxCursor {
				t.Fatalf("split %q: %q, %v; want errBadMuxCursor", tc.raw, parts, err)
			}
		})
	}
}

// FuzzCursorMux holds that any ids round-trip through the composite
// cursor, which holds only unreserved bytes, commas and escapes, and that
// a split that succeeds gives parts that round-trip too.
func FuzzCursorMux(f *testing.F) {
	for _, seed := range []string{"", "1\n2\n3", "a,b\n:%\n日本", " x \n\t", "%zz\n,,", strings.Repeat("é", 40)} {
		f.Add(seed, uint8(3))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		ids := strings.Split(s, "\n")
		cursor := string(appendMuxCursor(nil, ids))
		for i := 0; i < len(cursor); i++ {
			if b := cursor[i]; !unreserved(b) && b != ',' && b != '%' {
				t.Fatalf("cursor %q holds %q", cursor, b)
			}
		}
		parts, err := splitMuxCursor(cursor, len(ids))
		if err != nil || !slices.Equal(parts, ids) {
			t.Fatalf("ids %q: cursor %q split to %q, %v", ids, cursor, parts, err)
		}
		members := int(n%16) + 1
		if parts, err := splitMuxCursor(s, members); err == nil {
			if len(parts) != members {
				t.Fatalf("split %q into %d parts, want %d", s, len(parts), members)
			}
			again, err := splitMuxCursor(string(appendMuxCursor(nil, parts)), members)
			if err != nil || !slices.Equal(again, parts) {
				t.Fatalf("parts %q do not round-trip: %q, %v", parts, again, err)
			}
		}
	})
}

func TestMuxNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"news", true}, {"user/42", true}, {"a.b-c_d~e", true},
		{"", false}, {"/news", false}, {"news/", false}, {"a//b", false},
		{"..", false}, {"a/../b", false}, {"./a", false}, {"a:b", false},
		{"a b", false}, {"a%2Fb", false}, {"ü", false}, {"a\nb", false},
		{strings.Repeat("a", maxMuxNameLen), true}, {strings.Repeat("a", maxMuxNameLen+1), false},
	} {
		if got := muxNameOK(tc.name); got != tc.ok {
			t.Errorf("muxNameOK(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// muxSite is a handler that multiplexes the streams under /events/.
func muxSite(origin *testkit.Origin, extra string) string {
	return "sse_fanout " + origin.URL() + " {\n\tmultiplex_param streams\n\tmultiplex_members /events/*\n" + extra + "}"
}

// muxURL is the URL of a page that reads the named members.
func muxURL(base string, names ...string) string {
	return base + "/events/?streams=" + strings.Join(names, ",")
}

// memberConns takes the origin's next n connections and returns them by
// member name.
func memberConns(t *testing.T, origin *testkit.Origin, n int) map[string]*testkit.OriginConn {
	t.Helper()
	conns := make(map[string]*testkit.OriginConn, n)
	for range n {
		c := origin.NextConn(t)
		name, ok := strings.CutPrefix(c.Path, "/events/")
		if !ok || conns[name] != nil {
			t.Fatalf("unexpected origin connection for %s", c.Path)
		}
		conns[name] = c
	}
	return conns
}

// muxEvent is what a multiplexed event says once split by its type.
type muxEvent struct {
	member, typ, data string
	ids               []string // every member's last event ID, from the composite cursor
}

// nextMux reads the next event that fires from a page of n members and
// splits it.
func nextMux(t *testing.T, c *testkit.Client, n int) muxEvent {
	t.Helper()
	ev := c.NextData(t)
	member, typ, _ := strings.Cut(ev.Type, ":")
	ids, err := splitMuxCursor(ev.ID, n)
	if err != nil {
		t.Fatalf("event %+v: its id is no cursor of %d members: %v", ev, n, err)
	}
	return muxEvent{member: member, typ: typ, data: ev.Data, ids: ids}
}

// expectMux reads events from a page of the names until each member m
// of from has been sent the events of ids from[m] to to[m] (SendIDs'), in
// order, and fails on any other event. It returns the last composite
// cursor.
func expectMux(t *testing.T, c *testkit.Client, names []string, from, to map[string]int) string {
	t.Helper()
	next := make(map[string]int, len(names))
	left := 0
	for name := range from {
		next[name] = from[name]
		left += to[name] - from[name] + 1
	}
	var last sse.Event
	for ; left > 0; left-- {
		ev := c.NextData(t)
		last = ev
		member, typ, _ := strings.Cut(ev.Type, ":")
		i := slices.Index(names, member)
		if i < 0 || typ != "" {
			t.Fatalf("event of type %q, want one of the members' messages", ev.Type)
		}
		want, ok := next[member]
		if !ok || want > to[member] || ev.Data != "event "+strconv.Itoa(want) {
			t.Fatalf("member %s: got %q, want event %d (up to %d)", member, ev.Data, want, to[member])
		}
		ids, err := splitMuxCursor(ev.ID, len(names))
		if err != nil || ids[i] != strconv.Itoa(want) {
			t.Fatalf("member %s, event %d: id %q names %q for it", member, want, ev.ID, ids)
		}
		next[member]++
	}
	return last.ID
}

func TestMuxMemberOutsideThePatternsIsRefused(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tmultiplex_param streams\n\tmultiplex_members /events/public/* /events/news\n}")
	for _, tc := range []struct{ names, why string }{
		{"news,private", "not one that may be multiplexed"},
		{"public/a,admin", "not one that may be multiplexed"},
		{"news,../admin", "bad stream list"},
		{"news,news", "bad stream list"},
		{"news,", "bad stream list"},
		{"news%3Ax", "bad stream list"},
	} {
		resp := testkit.Get(t, base+"/events/?streams="+tc.names)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.why) {
			t.Errorf("streams=%s: %d %q, want 400 saying %q", tc.names, resp.StatusCode, body, tc.why)
		}
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("the origin got %d requests, want none", n)
	}
}

func TestMuxTooManyMembersIsRefused(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tmultiplex_max 3\n"))
	resp := testkit.Get(t, muxURL(base, "a", "b", "c", "d"))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "at most 3") {
		t.Fatalf("four members: %d %q, want 400 saying at most 3", resp.StatusCode, body)
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("the origin got %d requests, want none", n)
	}
}

func TestMuxDefaultBoundIsSixteen(t *testing.T) {
	m := &requestMap{base: &url.URL{Scheme: "http", Host: "o"}, muxParam: "streams", muxMembers: []string{"/*"}, muxMax: defaultMultiplexMax}
	names := make([]string, defaultMultiplexMax+1)
	for i := range names {
		names[i] = "s" + strconv.Itoa(i)
	}
	r, _ := http.NewRequest(http.MethodGet, "http://x/e/?streams="+strings.Join(names[:16], ","), nil)
	if _, got, err := m.requestsOf(r); err != nil || len(got) != 16 {
		t.Fatalf("16 members: %d, %v; want them served", len(got), err)
	}
	r, _ = http.NewRequest(http.MethodGet, "http://x/e/?streams="+strings.Join(names, ","), nil)
	if _, _, err := m.requestsOf(r); err == nil {
		t.Fatal("17 members were not refused")
	}
}

func TestMuxClientAddsNoUpstreamConnection(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, ""))
	a := testkit.OpenClient(t, base+"/events/a", nil)
	b := testkit.OpenClient(t, base+"/events/b", nil)
	conns := memberConns(t, origin, 2)
	before := origin.Total.Load()

	page := testkit.OpenClient(t, muxURL(base, "a", "b"), nil)
	conns["a"].Send("id: 1\ndata: event 1\n\n")
	conns["b"].Send("event: update\nid: x,1\ndata: {\"p\":1}\n\n")
	a.ExpectIDs(t, 1, 1)
	if ev := b.NextData(t); ev.Type != "update" {
		t.Fatalf("single client of b got %+v", ev)
	}
	got := []muxEvent{nextMux(t, page, 2), nextMux(t, page, 2)}
	slices.SortFunc(got, func(x, y muxEvent) int { return strings.Compare(x.member, y.member) })
	if got[0].member != "a" || got[0].typ != "" || got[0].data != "event 1" {
		t.Fatalf("a's event %+v", got[0])
	}
	if got[1].member != "b" || got[1].typ != "update" || got[1].data != `{"p":1}` || got[1].ids[1] != "x,1" {
		t.Fatalf("b's event %+v", got[1])
	}
	if n := origin.Total.Load(); n != before {
		t.Fatalf("the page made %d origin requests, want none", n-before)
	}
	origin.NoNewConn(t)
	// The page is one client of each member's stream, in the admin API
	// as in max_clients.
	var shown []string
	registries.Range(func(_, value any) bool {
		for _, st := range value.(*registry).statuses() {
			shown = append(shown, fmt.Sprintf("%s:%d", st.Key, st.Clients))
		}
		return true
	})
	slices.Sort(shown)
	if want := []string{"/events/a:2", "/events/b:2"}; !slices.Equal(shown, want) {
		t.Errorf("the admin API shows %q, want %q", shown, want)
	}
}

func TestMuxTenMembersOverOneConnection(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, ""))
	names := make([]string, 10)
	for i := range names {
		names[i] = fmt.Sprintf("room/%d", i)
	}
	page := testkit.OpenClient(t, muxURL(base, names...), nil)
	conns := memberConns(t, origin, 10)
	from, to := map[string]int{}, map[string]int{}
	for _, name := range names {
		testkit.SendIDs(conns[name], 1, 5)
		from[name], to[name] = 1, 5
	}
	expectMux(t, page, names, from, to)
	origin.NoNewConn(t)
}

func TestMuxResumesEveryMemberExactly(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, ""))
	names := []string{"a", "b", "c"}
	page := testkit.OpenClient(t, muxURL(base, names...), nil)
	conns := memberConns(t, origin, 3)
	testkit.SendIDs(conns["a"], 1, 4)
	testkit.SendIDs(conns["b"], 1, 2)
	testkit.SendIDs(conns["c"], 1, 3)
	cursor := expectMux(t, page, names, map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 4, "b": 2, "c": 3})
	page.Close()

	// While the page is away, a and c go on; b has nothing new.
	testkit.SendIDs(conns["a"], 5, 7)
	testkit.SendIDs(conns["c"], 4, 4)
	again := testkit.OpenClient(t, muxURL(base, names...), testkit.LastEventID(cursor))
	testkit.SendIDs(conns["b"], 3, 3)
	expectMux(t, again, names, map[string]int{"a": 5, "b": 3, "c": 4}, map[string]int{"a": 7, "b": 3, "c": 4})
	if n := again.Pending(); n != 0 {
		t.Fatalf("%d blocks more than the members' new events", n)
	}
	origin.NoNewConn(t)
}

func TestMuxMemberPastItsBufferCatchesUpWhileOthersReplay(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tbuffer 5\n\tclient_queue 5\n"))
	names := []string{"a", "b"}
	page := testkit.OpenClient(t, muxURL(base, names...), nil)
	conns := memberConns(t, origin, 2)
	testkit.SendIDs(conns["a"], 1, 2)
	testkit.SendIDs(conns["b"], 1, 2)
	cursor := expectMux(t, page, names, map[string]int{"a": 1, "b": 1}, map[string]int{"a": 2, "b": 2})
	page.Close()

	// a moves on past its buffer (a witness keeps the stream), b by two.
	witness := testkit.OpenClient(t, base+"/events/a", nil)
	for i := 3; i <= 30; i += 4 {
		testkit.SendIDs(conns["a"], i, i+3)
		witness.ExpectIDs(t, i, i+3)
	}
	testkit.SendIDs(conns["b"], 3, 4)

	again := testkit.OpenClient(t, muxURL(base, names...), testkit.LastEventID(cursor))
	catchUp := origin.NextConn(t)
	if catchUp.Path != "/events/a" || catchUp.Header.Get("Last-Event-ID") != "2" {
		t.Fatalf("catch-up for %s with Last-Event-ID %q, want /events/a with 2", catchUp.Path, catchUp.Header.Get("Last-Event-ID"))
	}
	testkit.SendIDs(catchUp, 3, 30) // the origin resumes; it meets the buffer
	catchUp.WaitClosed(t)
	expectMux(t, again, names, map[string]int{"a": 3, "b": 3}, map[string]int{"a": 30, "b": 4})
	origin.NoNewConn(t)
}

func TestMuxCursorPartWithAControlCharacterIsRefused(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, ""))
	_, status := testkit.DialClient(t, muxURL(base, "a", "b")+"&last_event_id=1,%250A", nil)
	if status != http.StatusBadRequest {
		t.Fatalf("a part that is an escaped LF: status %d, want 400", status)
	}
	if n := origin.Total.Load(); n != 0 {
		t.Fatalf("the origin got %d requests, want none", n)
	}
}

func TestMuxOverlongCursorIsStaleForEveryMember(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tstale_event stale\n"))
	names := []string{"a", "b"}
	long := strings.Repeat("9", maxMuxCursorLen(2)+1)
	page := testkit.OpenClient(t, muxURL(base, names...), testkit.LastEventID(long))
	conns := memberConns(t, origin, 2)
	stale := map[string]bool{}
	for range 2 {
		ev := nextMux(t, page, 2)
		if ev.typ != "stale" || ev.data != "" {
			t.Fatalf("event %+v, want a stale event with no data", ev)
		}
		stale[ev.member] = true
	}
	if !stale["a"] || !stale["b"] {
		t.Fatalf("stale events for %v, want both members", stale)
	}
	testkit.SendIDs(conns["b"], 1, 1)
	expectMux(t, page, names, map[string]int{"b": 1}, map[string]int{"b": 1})
	origin.NoNewConn(t)
}

func TestMuxCountsOnEachMemberForMaxClients(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tmax_clients 1\n"))
	testkit.OpenClient(t, base+"/events/b", nil)
	origin.NextConn(t)
	_, status := testkit.DialClient(t, muxURL(base, "a", "b"), nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("a page with a full member: status %d, want 503", status)
	}
	page := testkit.OpenClient(t, muxURL(base, "a", "c"), nil)
	conns := memberConns(t, origin, 2)
	testkit.SendIDs(conns["c"], 1, 1)
	expectMux(t, page, []string{"a", "c"}, map[string]int{"c": 1}, map[string]int{"c": 1})
}

func TestMultiplexConfigIsChecked(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"members without param", "multiplex_members /e/*", "need multiplex_param"},
		{"param without members", "multiplex_param streams", "needs multiplex_members"},
		{"relative pattern", "multiplex_param streams\n\tmultiplex_members e/*", "starts with /"},
		{"inner star", "multiplex_param streams\n\tmultiplex_members /e/*/x", "may end in *"},
		{"too many", "multiplex_param streams\n\tmultiplex_members /e/*\n\tmultiplex_max 65", "multiplex_max must be"},
		{"same as filter", "multiplex_param streams\n\tmultiplex_members /e/*\n\tfilter_param streams", "already filter_param"},
		{"the cursor's", "multiplex_param last_event_id\n\tmultiplex_members /e/*", "carries the cursor"},
		{"key by path", "multiplex_param streams\n\tmultiplex_members /e/*\n\tkey {http.request.uri.path}", "same for every member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "sse_fanout http://o {\n\t" + tc.body + "\n}"
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("got error %v, want one at a line containing %q", err, tc.want)
			}
		})
	}
}

// compress goes with multiplex_param: a page is compressed per page.
func TestMultiplexGoesWithCompress(t *testing.T) {
	input := "sse_fanout http://o {\n\tmultiplex_param streams\n\tmultiplex_members /e/*\n\tcompress zstd gzip\n}"
	if err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatalf("compress with multiplex_param: %v", err)
	}
}

// withoutKeepalives is a decoded page without its keepalive comments,
// which each member's stream sends at moments of its own.
func withoutKeepalives(s string) string { return strings.ReplaceAll(s, sse.Keepalive, "") }

// samePages fails unless every page of readers decoded to what the first,
// an identity page, got, up to and including the block that holds last,
// keepalives aside; it returns the first's.
func samePages(t *testing.T, readers []*wireReader, accepts []string, last string) string {
	t.Helper()
	upTo := func(wr *wireReader) string {
		got, _ := wr.decoded()
		got = withoutKeepalives(got)
		i := strings.Index(got, last)
		if i < 0 {
			t.Fatalf("Accept-Encoding %q: no %q in the decoded page", accepts[0], last)
		}
		return got[:i+len(last)]
	}
	plain := upTo(readers[0])
	for i, wr := range readers[1:] {
		if got := upTo(wr); got != plain {
			t.Errorf("Accept-Encoding %q: the decoded page differs from the identity one:\n%s", accepts[i+1], firstDifference(got, plain))
		}
	}
	return plain
}

// A multiplexed page compressed in gzip or zstd decodes, with the standard
// decoders and as it arrives, to exactly what an identity page of the same
// members gets: its opening, a member's cursor priming, the members'
// events renamed, an id-only block, a retry the origin changes and a
// 100 KB event, each block with the composite cursor; its keepalives
// decode too. Its encoding is negotiated as a single stream's is.
func TestMuxCompressedPageDecodesToThePlainPage(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		t.Run("detach "+detach, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, muxSite(origin, "\tcompress zstd gzip\n\theartbeat 1s\n\tdetach "+detach+"\n"))
			// a has an id before the pages join: each is sent its priming.
			witness := testkit.OpenClient(t, base+"/events/a", nil)
			upA := origin.NextConn(t)
			testkit.SendIDs(upA, 1, 1)
			witness.ExpectIDs(t, 1, 1)

			accepts := []string{"", "gzip", "gzip, deflate, br, zstd", "zstd;q=0.1, gzip;q=0.9"}
			wants := []string{"", "gzip", "zstd", "gzip"}
			var readers []*wireReader
			for _, accept := range accepts {
				readers = append(readers, openWire(t, muxURL(base, "a", "b"), accept))
			}
			upB := origin.NextConn(t)
			if detach == "on" {
				// Compressed or not, each page is served by a shared writer.
				testkit.Eventually(t, "the witness and every page to be detached", func() bool { return detachedClients() == 1+len(readers) })
			}
			for i, wr := range readers {
				if got := wr.resp.Header.Get("Content-Encoding"); got != wants[i] {
					t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", accepts[i], got, wants[i])
				}
				if got := wr.resp.Header.Get("Vary"); got != "Accept-Encoding" {
					t.Errorf("Accept-Encoding %q: Vary %q, want Accept-Encoding", accepts[i], got)
				}
			}
			everyone := func(s string) {
				t.Helper()
				for _, wr := range readers {
					wr.waitFor(t, s)
				}
			}
			everyone(sse.Opening + "id: 1,\n\n") // the opening, then a's priming
			upA.Send("id: 2\ndata: a two\n\n")
			everyone("event: a\ndata: a two\nid: 2,\n\n")
			upB.Send("event: tick\nid: b1\ndata: b one\n\n")
			everyone("event: b:tick\ndata: b one\nid: 2,b1\n\n")
			upB.Send("id: b2\n\n") // fires nothing: an id-only block
			everyone("\n\nid: 2,b2\n\n")
			everyone(sse.Keepalive)
			upA.Send("retry: 700\n\n")
			everyone("retry: 700\n\n")
			upB.Send("id: big\ndata: " + bigData() + "\n\n")
			everyone("id: 2,big\n\n")
			for i := 3; i <= 20; i++ {
				up, name := upA, "a"
				if i%2 == 0 {
					up, name = upB, "b"
				}
				up.Send(fmt.Sprintf("id: %s%d\ndata: {\"n\":%d,\"text\":\"event number %d\"}\n\n", name, i, i, i))
				everyone(fmt.Sprintf(",\"text\":\"event number %d\"}\n", i))
			}
			upA.Send("event: end\ndata: end\n\n")
			everyone("event: a:end\n")

			plain := samePages(t, readers, accepts, "event: a:end\n")
			for i, wr := range readers[1:] {
				if _, raw := wr.decoded(); raw > len(plain)/2 {
					t.Errorf("Accept-Encoding %q: %d bytes on the wire for %d of page", accepts[i+1], raw, len(plain))
				}
			}
		})
	}
}

// A compressed page resumes from its composite cursor as an identity
// page does, exactly: a member past its buffer catches up from the origin,
// one replays, one whose part of the cursor is too long is stale; each
// decodes to the identity page's bytes.
func TestMuxCompressedPageResumesExactly(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tbuffer 5\n\tclient_queue 5\n\tcompress gzip zstd\n\tstale_event stale\n"))
	names := []string{"a", "b", "c"}
	first := openWire(t, muxURL(base, names...), "zstd")
	conns := memberConns(t, origin, 3)
	for _, name := range names {
		testkit.SendIDs(conns[name], 1, 2)
	}
	first.waitFor(t, "id: 2,2,2\n\n")
	decoded, _ := first.decoded()
	evs, _ := testkit.ParseAll(strings.NewReader(decoded), 1<<20)
	cursor := evs[len(evs)-1].ID
	if cursor != "2,2,2" {
		t.Fatalf("the compressed page's cursor is %q, want 2,2,2", cursor)
	}
	first.resp.Body.Close()

	// a moves on past its buffer (a witness keeps the stream), b by two;
	// c's part of the cursor is made too long to use.
	witness := testkit.OpenClient(t, base+"/events/a", nil)
	for i := 3; i <= 30; i += 4 {
		testkit.SendIDs(conns["a"], i, i+3)
		witness.ExpectIDs(t, i, i+3)
	}
	testkit.SendIDs(conns["b"], 3, 4)
	parts, _ := splitMuxCursor(cursor, 3)
	parts[2] = strings.Repeat("9", maxCursorLen+1)
	cursor = string(appendMuxCursor(nil, parts))

	stop := make(chan struct{})
	var serving sync.WaitGroup
	serving.Add(1)
	go func() { // the origin answers every catch-up of a
		defer serving.Done()
		for catchUp := origin.NextConnOr(stop); catchUp != nil; catchUp = origin.NextConnOr(stop) {
			testkit.SendIDs(catchUp, 3, 30)
		}
	}()
	defer func() { close(stop); serving.Wait() }()
	accepts := []string{"identity", "gzip", "zstd"}
	var readers []*wireReader
	for _, accept := range accepts {
		readers = append(readers, openWireWith(t, muxURL(base, names...), http.Header{"Accept-Encoding": {accept}, "Last-Event-ID": {cursor}}))
	}
	everyone := func(s string) {
		t.Helper()
		for _, wr := range readers {
			wr.waitFor(t, s)
		}
	}
	// c's event comes after every page's catch-up and replay, whenever it
	// is published; a's and b's are sent once every page is past them.
	conns["c"].Send("id: 3\ndata: c live\n\n")
	everyone("data: c live\n")
	conns["a"].Send("id: 31\ndata: a live\n\n")
	everyone("data: a live\n")
	conns["b"].Send("id: 5\ndata: b live\n\n")
	const last = "event: b\ndata: b live\nid: 31,5,3\n\n"
	everyone(last)
	plain := samePages(t, readers, accepts, last)

	var got []string
	fired, _ := testkit.ParseAll(strings.NewReader(plain), 1<<20)
	for _, ev := range fired {
		if ev.HasData {
			got = append(got, ev.Type+" "+ev.Data)
		}
	}
	var want []string
	// a's catch-up, up to where it met the buffer.
	for i := 3; i <= 25; i++ {
		want = append(want, fmt.Sprintf("a event %d", i))
	}
	// c's cursor, stale, announced with no data; then a's replay from the
	// buffer.
	want = append(want, "c:stale ")
	for i := 26; i <= 30; i++ {
		want = append(want, fmt.Sprintf("a event %d", i))
	}
	want = append(want, "b event 3", "b event 4", "c c live", "a a live", "b b live")
	if !slices.Equal(got, want) {
		t.Fatalf("the resumed page fired\n%q\nwant\n%q", got, want)
	}
	origin.NoNewConn(t)
}

// heldWriter is a response writer whose Write tells entered, then waits
// for release.
type heldWriter struct{ entered, release chan struct{} }

func (w heldWriter) Write(p []byte) (int, error) {
	close(w.entered)
	<-w.release
	return len(p), nil
}

// A multiplexed page's write in flight holds every member's client, so a
// member whose stream it falls behind in, whichever it is, is cut at
// once by its stream's publish, as a single client held in a write is
// (client.writing), and the page with it.
func TestMultiplexedWriteInFlightIsWatchedInEveryMembersStream(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 2
	s1, s2 := newTestStream(cfg), newTestStream(cfg)
	a, b := addClient(s1), addClient(s2)
	m := newMuxClient([]string{"a", "b"}, []string{"", ""}, []*client{a, b}, nil)
	held := heldWriter{make(chan struct{}), make(chan struct{})}
	rw := &respWriter{w: held, watch: []*client{a, b}, sent: &a.sent, out: []byte(": x\n\n")}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		rw.writeOut()
	}()
	<-held.entered
	for i := 1; i <= 5; i++ {
		publishTo(s2, &sse.Event{Data: strconv.Itoa(i), HasData: true})
	}
	wantPageCut(t, m, "a page 5 events behind in its second member's stream, with client_queue 2 and its write held")
	close(held.release)
	<-wrote
}

// wantPageCut fails t unless the page m was cut for lagging; what says
// which page.
func wantPageCut(t *testing.T, m *muxClient, what string) {
	t.Helper()
	select {
	case <-m.ended():
		if !errors.Is(m.why(), errSlowClient) {
			t.Errorf("%s ended with %v, want errSlowClient", what, m.why())
		}
	default:
		t.Errorf("%s was not cut", what)
	}
}
