package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// Two SSE client libraries that are not ours, as peers: each reads streams
// through sse_fanout, reconnects with Last-Event-ID when the proxy cuts it,
// and agrees with our parser on a table of tricky streams.
//
// Both fire an event for every block that carries a field, data or not
// (an id-only block, a retry-only block, a type-only block), where a
// browser fires only blocks with data. That is their documented leniency,
// not ours; the tests account for it instead of comparing them with the
// spec directly.

// TestClientLibrariesSeeTheOriginsStream has each library read the same
// stream from the origin directly and through the proxy: it must report the
// same events both ways.
func TestClientLibrariesSeeTheOriginsStream(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	base := testkit.StartCaddy(t, fmt.Sprintf("route {\n\t\tsse_probe %s\n\t\tsse_fanout %s\n\t}", t.Name(), origin.URL()))
	for _, lib := range peerLibraries {
		t.Run(lib.name, func(t *testing.T) {
			path := "/same/" + lib.name
			read := func(url string) []libEvent {
				p := lib.open(t, url, time.Second)
				up := origin.NextConn(t)
				testkit.SendScript(up, 20)
				up.Send("event: end\ndata: end\n\n")
				return p.readUntilType(t, "end")
			}
			fromOrigin := read(origin.URL() + path)
			before := countAnswered(probe.requests(), http.StatusOK)
			fromProxy := read(base + path)
			if n := countAnswered(probe.requests(), http.StatusOK); n != before+1 {
				t.Fatalf("the proxy answered %d requests, want 1", n-before)
			}
			if !slices.Equal(fromProxy, fromOrigin) {
				t.Errorf("through the proxy:\n%s\nfrom the origin:\n%s", fmtLibEvents(fromProxy), fmtLibEvents(fromOrigin))
			}
			if n := len(withData(fromOrigin)); n < 20 {
				t.Errorf("only %d events with data", n)
			}
		})
	}
}

// TestClientLibrariesResumeAfterTheProxyCutsThem cuts each library with a
// config reload: it must reconnect by itself, with Last-Event-ID, and get
// what it missed from the proxy's buffer, with no gap and no duplicate.
func TestClientLibrariesResumeAfterTheProxyCutsThem(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	port := testkit.FreePort(t)
	site := func(heartbeat string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\troute {\n\t\tsse_probe %s\n\t\tsse_fanout %s {\n\t\t\tretry 300ms\n\t\t\theartbeat %s\n\t\t}\n\t}\n}\n",
			port, t.Name(), origin.URL(), heartbeat)
	}
	testkit.StartCaddyfile(t, site("1m"))
	reloads := 0
	for _, lib := range peerLibraries {
		t.Run(lib.name, func(t *testing.T) {
			path := "/cut/" + lib.name
			requests := func() []probeRequest {
				var out []probeRequest
				for _, r := range probe.requests() {
					if r.URI == path && r.Status == http.StatusOK {
						out = append(out, r)
					}
				}
				return out
			}
			p := lib.open(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), time.Second)
			up := origin.NextConn(t)
			testkit.SendIDs(up, 1, 10)
			got := p.readUntil(t, func(e libEvent) bool { return e.Data == "event 10" })

			reloads++ // a compatible config: same upstream, same streams and buffers
			testkit.LoadCaddyfile(t, testkit.GlobalOptions()+site(strconv.Itoa(reloads)+"m"))
			t.Logf("cut: %v", p.waitCut(t))
			testkit.SendIDs(up, 11, 15) // while the library waits to reconnect: into the buffer
			probe.waitFor(t, "the reconnect", func([]probeRequest) bool { return len(requests()) >= 2 })
			if id := requests()[1].Header.Get("Last-Event-ID"); id != "10" {
				t.Errorf("reconnected with Last-Event-ID %q, want 10", id)
			}
			testkit.SendIDs(up, 16, 20)
			got = append(got, p.readUntil(t, func(e libEvent) bool { return e.Data == "event 20" })...)

			var ids []int
			for _, e := range withData(got) {
				n, err := strconv.Atoi(e.LastEventID)
				if err != nil || e.Data != "event "+e.LastEventID {
					t.Fatalf("unexpected event %s", e)
				}
				ids = append(ids, n)
			}
			if !slices.Equal(ids, seq(1, 20)) {
				t.Errorf("the library saw ids %v, want 1..20 once each", ids)
			}
			if n := len(requests()); n != 2 {
				t.Errorf("the library made %d requests, want 2", n)
			}
		})
	}
	if n := origin.Total.Load(); n != int64(len(peerLibraries)) {
		t.Errorf("the origin saw %d requests, want one per stream", n)
	}
}

// trickyStreams are streams built from the WHATWG parsing rules and the
// web-platform-tests eventsource format-* cases (restated here, not
// copied), with the events a browser fires for each: type ("" for
// message), data and lastEventId.
var trickyStreams = []struct {
	name string
	in   string
	ends bool // the origin closes the connection after in
	want []libEvent
}{
	{
		name: "BOM dropped once (wpt format-bom)",
		in:   "\uFEFFdata: 1\n\n\uFEFFdata: 2\n\ndata: 3\n\n",
		want: []libEvent{{Data: "1"}, {Data: "3"}},
	},
	{
		name: "a second BOM belongs to the field name (wpt format-bom-2)",
		in:   "\uFEFF\uFEFFdata: 1\n\ndata: 2\n\ndata: 3\n\n",
		want: []libEvent{{Data: "2"}, {Data: "3"}},
	},
	{
		name: "comments anywhere (wpt format-comments)",
		in: "data:1\r:\x00\n:\r\ndata:2\n:" + strings.Repeat("x", 5000) + "\rdata:3\n:data:fail\r:" +
			strings.Repeat("y", 5000) + "\ndata:4\n\n",
		want: []libEvent{{Data: "1\n2\n3\n4"}},
	},
	{
		name: "a last block without its blank line is dropped (wpt format-data-before-final-empty-line)",
		in:   "retry:1000\ndata:test1\n\nid:test\ndata:test2",
		ends: true,
		want: []libEvent{{Data: "test1"}},
	},
	{
		name: "data fields (wpt format-field-data)",
		in:   "data:\n\ndata\ndata\n\ndata:test\n\n",
		want: []libEvent{{Data: ""}, {Data: "\n"}, {Data: "test"}},
	},
	{
		name: "empty event type is message (wpt format-field-event-empty)",
		in:   "event: \ndata:data\n\n",
		want: []libEvent{{Data: "data"}},
	},
	{
		name: "event type applies to one event (wpt format-field-event)",
		in:   "event:test\ndata:x\n\ndata:x\n\n",
		want: []libEvent{{Type: "test", Data: "x"}, {Data: "x"}},
	},
	{
		name: "id carries over and an empty id resets it (wpt format-field-id, format-field-id-2)",
		in:   "id: 1\ndata: a\n\ndata: b\n\nid:\ndata: c\n\nid: x y \ndata: d\n\n",
		want: []libEvent{{Data: "a", LastEventID: "1"}, {Data: "b", LastEventID: "1"}, {Data: "c"}, {Data: "d", LastEventID: "x y "}},
	},
	{
		name: "id with NUL is ignored (wpt format-field-id-null)",
		in:   "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
		want: []libEvent{{Data: "a", LastEventID: "1"}, {Data: "b", LastEventID: "1"}},
	},
	{
		name: "an id-only block moves the cursor and fires nothing",
		in:   "id: 7\n\ndata: after\n\n",
		want: []libEvent{{Data: "after", LastEventID: "7"}},
	},
	{
		name: "field parsing (wpt format-field-parsing)",
		in:   "data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n",
		want: []libEvent{{Data: "\x00\n 2\n1\n3\n\n4"}},
	},
	{
		name: "retry values (wpt format-field-retry, -retry-bogus, -retry-empty)",
		in:   "retry:03000\ndata:a\n\nretry:1000x\ndata:b\n\nretry\ndata:c\n\nretry: 500\n\ndata:d\n\n",
		want: []libEvent{{Data: "a"}, {Data: "b"}, {Data: "c"}, {Data: "d"}},
	},
	{
		name: "unknown fields are ignored (wpt format-field-unknown)",
		in:   "data:test\n field:unknown\nfoo: bar\n\n",
		want: []libEvent{{Data: "test"}},
	},
	{
		name: "only one leading space is removed (wpt format-leading-space)",
		in:   "data:\ttest\rdata: \ndata:test\n\n",
		want: []libEvent{{Data: "\ttest\n\ntest"}},
	},
	{
		name: "CR, LF and CRLF line ends (wpt format-newlines)",
		in:   "data:test\r\ndata\ndata:test\r\n\r",
		want: []libEvent{{Data: "test\n\ntest"}},
	},
	{
		name: "NUL in data (wpt format-null-character)",
		in:   "data:\x00\n\n\n\n",
		want: []libEvent{{Data: "\x00"}},
	},
	{
		name: "UTF-8 (wpt format-utf-8)",
		in:   "data:ok ☃ 日本語 🎉\n\nevent: ünï\ndata: x\n\n",
		want: []libEvent{{Data: "ok ☃ 日本語 🎉"}, {Type: "ünï", Data: "x"}},
	},
	{
		name: "a type without data fires nothing and is reset",
		in:   "event: lonely\n\ndata: x\n\n",
		want: []libEvent{{Data: "x"}},
	},
	{
		name: "colons in the value are kept",
		in:   "data: a:b: c\n\n",
		want: []libEvent{{Data: "a:b: c"}},
	},
}

// firedEvents returns the events a browser fires for the blocks a parser
// returned: those with data.
func firedEvents(blocks []sse.Event) []libEvent {
	var out []libEvent
	for _, b := range blocks {
		if b.HasData {
			out = append(out, libEvent{Type: b.Type, Data: b.Data, LastEventID: b.ID})
		}
	}
	return out
}

// lenientEvents returns the events a lenient library fires for the blocks
// our parser read: one per block, data or not.
func lenientEvents(blocks []sse.Event) []libEvent {
	out := make([]libEvent, len(blocks))
	for i, b := range blocks {
		out[i] = libEvent{Type: b.Type, Data: b.Data, LastEventID: b.ID}
	}
	return out
}

// TestClientLibrariesAgreeWithOurParser sends each tricky stream through
// the proxy to our parser and to both libraries at once. Our parser must
// fire the spec's events whether it reads the stream raw or through the
// proxy, and each library must report, block for block, what our parser
// read through the proxy: the spec's events, and an event of its own for
// each block without data.
func TestClientLibrariesAgreeWithOurParser(t *testing.T) {
	origin := testkit.NewOrigin(t)
	probe := newProbe(t, t.Name())
	// A configured retry replaces the origin's, so each client gets one
	// retry block, first, rather than one wherever the origin's changes.
	base := testkit.StartCaddy(t, fmt.Sprintf("route {\n\t\tsse_probe %s\n\t\tsse_fanout %s {\n\t\t\tretry 3s\n\t\t\tidle_close 0\n\t\t}\n\t}", t.Name(), origin.URL()))
	sentinel := libEvent{Type: "end", Data: "end"}

	for i, tc := range trickyStreams {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := testkit.ParseAll(strings.NewReader(tc.in), 1<<20)
			if err == nil || !errors.Is(err, io.EOF) {
				t.Fatalf("our parser ended with %v", err)
			}
			if got := firedEvents(raw); !slices.Equal(got, tc.want) {
				t.Fatalf("our parser, reading the raw stream, fired:\n%s\nwant:\n%s", fmtLibEvents(got), fmtLibEvents(tc.want))
			}

			path := "/tricky/" + strconv.Itoa(i)
			url := base + path
			ours := testkit.OpenClient(t, url, nil)
			libs := make([]*libPeer, len(peerLibraries))
			for j, lib := range peerLibraries {
				libs[j] = lib.open(t, url, time.Second)
			}
			// Everyone has joined the stream before the origin says a word.
			probe.waitFor(t, "every client joined", func(reqs []probeRequest) bool {
				n := 0
				for _, r := range reqs {
					if r.URI == path && r.Status == http.StatusOK {
						n++
					}
				}
				return n == 1+len(libs)
			})
			up := origin.NextConn(t)
			up.Send(tc.in)
			if tc.ends {
				close(up.End)
				up = origin.NextConn(t) // the proxy resumes
			}
			up.Send("event: end\ndata: end\n\n")

			var blocks []sse.Event
			for {
				b := ours.NextBlock(t)
				if b.Type == "end" {
					break
				}
				blocks = append(blocks, b)
			}
			if got := firedEvents(blocks); !slices.Equal(got, tc.want) {
				t.Errorf("our parser, through the proxy, fired:\n%s\nwant:\n%s", fmtLibEvents(got), fmtLibEvents(tc.want))
			}
			want := append(lenientEvents(blocks), libEvent{Type: sentinel.Type, Data: sentinel.Data, LastEventID: lastIDOf(blocks)})
			for j, lib := range peerLibraries {
				if got := libs[j].readUntilType(t, "end"); !slices.Equal(got, want) {
					t.Errorf("%s, through the proxy, reported:\n%s\nour parser read these blocks (want one event each):\n%s",
						lib.name, fmtLibEvents(got), fmtLibEvents(want))
				}
			}
		})
	}
}

// lastIDOf returns the last event ID after the blocks.
func lastIDOf(blocks []sse.Event) string {
	if len(blocks) == 0 {
		return ""
	}
	return blocks[len(blocks)-1].ID
}
