package main

// Tests of -members: the flags and URLs, how a multiplexed event's member
// is told (sse_fanout's renamed types, nchan's multiplexed ids), the reader
// on such streams, whole runs of multiplexed and split pages over h1 and
// h2, and the pages in -merge and -table.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseMembers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"s0", []string{"s0"}, false},
		{"s0,s1,user/42", []string{"s0", "s1", "user/42"}, false},
		{"s0,,s1", nil, true},
		{"s0,s0", nil, true},
		{"a:b", nil, true}, // a colon ends a name in an event type
		{"a b", nil, true},
		{"{member}", nil, true},
		{strings.Repeat("a,", maxMembers) + "b", nil, true},
	} {
		got, err := parseMembers(tc.in)
		if (err != nil) != tc.err || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%.40q: %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestPageURLs(t *testing.T) {
	ab := []string{"a", "b"}
	for _, tc := range []struct {
		url     string
		members []string
		split   bool
		want    string // the URLs joined by spaces
		err     bool
	}{
		{"http://h/e", nil, false, "http://h/e", false},
		{"http://h/e, http://g/e", nil, false, "http://h/e http://g/e", false},
		{"http://h/e/?streams={members}", ab, false, "http://h/e/?streams=a,b", false},
		{"http://h/e/?streams={members},http://g/e/?s={members}", ab, false, "http://h/e/?streams=a,b http://g/e/?s=a,b", false},
		{"http://h/e/{member}", ab, true, "http://h/e/a http://h/e/b", false},
		{"http://h/e/{member},http://g/{member}", ab, true, "http://h/e/a http://h/e/b http://g/a http://g/b", false},
		{"http://h/e/{member}", nil, false, "", true},           // a placeholder without -members
		{"http://h/e/?streams={members}", nil, false, "", true}, // the same
		{"http://h/e/?streams=a,b", ab, false, "", true},        // the list must be {members}
		{"http://h/e/{member}", ab, false, "", true},            // {member} is for -split
		{"http://h/e/?streams={members}", ab, true, "", true},   // -split needs {member}
	} {
		got, err := pageURLs(tc.url, tc.members, tc.split)
		if (err != nil) != tc.err || strings.Join(got, " ") != tc.want {
			t.Errorf("%s %v split %v: %v, %v; want %q, error %v", tc.url, tc.members, tc.split, got, err, tc.want, tc.err)
		}
	}
}

func TestConfigChecksPages(t *testing.T) {
	for _, tc := range []struct {
		cfg  config
		want string // in the error; empty: none
	}{
		{config{url: "http://127.0.0.1:1/?s={members}", membersList: "a,b"}, ""},
		{config{url: "http://127.0.0.1:1/{member}", membersList: "a,b", split: true}, ""},
		{config{url: "http://127.0.0.1:1/", split: true}, "-split needs -members"},
		{config{url: "http://127.0.0.1:1/?s={members}", membersList: "a,b", reconnect: true}, "not with -members"},
		{config{url: "http://127.0.0.1:1/?s={members}", membersList: "a,b", reconnectEvery: time.Second}, "not with -members"},
		{config{url: "https://127.0.0.1:1/{member}", membersList: "a,b", split: true, proto: protoH2, streamsPerConn: 600, insecure: true}, "-streams-per-conn"},
		{config{url: "http://127.0.0.1:1/{member}", membersList: "a,b", split: true, clients: maxClients}, "-clients"},
	} {
		cfg := tc.cfg
		cfg.ramp, cfg.duration = 1, time.Second
		if cfg.proto == "" {
			cfg.proto = protoH1
		}
		if cfg.streamsPerConn == 0 {
			cfg.streamsPerConn = 1
		}
		if cfg.clients == 0 {
			cfg.clients = 1
		}
		err := cfg.check()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestMemberOfType(t *testing.T) {
	index := map[string]int{"s0": 0, "s1": 1, "user/42": 2}
	for _, tc := range []struct {
		v    string
		want int
	}{
		{" s0", 0},
		{"s1", 1},
		{" s1:tick", 1},
		{" user/42:notice:x", 2},
		{" s2", -1},
		{" message", -1},
		{" S0", -1},
		{"  s0", -1}, // one space is the field's, the second the name's
		{"", -1},
		{" :s0", -1},
	} {
		if got := memberOfType([]byte(tc.v), index); got != tc.want {
			t.Errorf("event:%q: member %d, want %d", tc.v, got, tc.want)
		}
	}
}

func TestMemberOfNchanID(t *testing.T) {
	for _, tc := range []struct {
		v    string
		n    int
		want int
	}{
		// As nchan 1.3.6 sends them to a subscriber of ten channels.
		{" 1796655004:[0],-,-,-,-,-,-,-,-,-", 10, 0},
		{" 1796655004:0,-,-,[0],-,-,-,-,-,-", 10, 3},
		{" 1796655004:1,-,-,1,-,-,-,-,-,[1]", 10, 9},
		{" 1796655021:-,[0],-,-", 4, 1},
		{"1796655021:[12],0,-,-", 4, 0},
		{" 1796655004:[0],-,-", 10, -1},    // not one part per member
		{" 1796655004:[0],[1],-,-", 4, -1}, // two in brackets
		{" 1796655004:0,1,-,-", 4, -1},     // none
		{" 1796655004:0,[1,-,-", 4, -1},
		{" :0,[1],-,-", 4, -1}, // no time
		{" 42", 1, -1},         // sseorigin's own id
		{" 7,3,", 3, -1},       // sse_fanout's composite cursor
		{" [0]", 1, -1},
		{"", 1, -1},
	} {
		if got := memberOfNchanID([]byte(tc.v), tc.n); got != tc.want {
			t.Errorf("id:%q of %d: member %d, want %d", tc.v, tc.n, got, tc.want)
		}
	}
}

// muxLoad is a load of pages of the members a, b and c, multiplexed,
// measuring, and one of its clients.
func muxLoad() (*load, *client) {
	cfg := &config{membersList: "a,b,c"}
	cfg.members, _ = parseMembers(cfg.membersList)
	l := &load{cfg: cfg, members: map[string]int{"a": 0, "b": 1, "c": 2}}
	l.measuring.Store(true)
	c := &client{lasts: make([]uint64, 3)}
	c.memberDelivered = make([]atomic.Uint64, 3)
	return l, c
}

func TestReadMultiplexedPage(t *testing.T) {
	now := time.Now().UnixNano()
	for _, tc := range []struct {
		name                 string
		stream               string
		delivered, lost, dup uint64
		foreign              uint64
		perMember            [3]uint64
	}{
		{
			name: "sse_fanout's renamed events, each member with its own ids",
			stream: ": ok\n\nid: ,,\n\n" + // an id-only block fires nothing
				"id: 1,,\nevent: a\ndata: 1 %[1]d x\n\n" +
				"id: 1,1,\nevent: b:tick\ndata: 1 %[1]d x\n\n" +
				"id: 1,1,5\nevent: c\ndata: 5 %[1]d x\n\n" +
				"id: 2,1,5\nevent: a\ndata: 2 %[1]d x\n\n" +
				"id: 2,3,5\r\nevent: b\r\ndata: 3 %[1]d x\r\n\r\n" + // b lost 2
				"id: 2,3,6\nevent: c\ndata: 6 %[1]d x\n\n" +
				"id: 2,3,6\nevent: c\ndata: 6 %[1]d x\n\n", // c again
			delivered: 7, lost: 1, dup: 1, perMember: [3]uint64{2, 2, 3},
		},
		{
			name: "nchan's multiplexed ids, the event's channel in brackets",
			stream: ": hi\n\n" +
				"id: 1796655004:[0],-,-\ndata: 1 %[1]d x\n\n" +
				"id: 1796655004:0,-,[0]\ndata: 1 %[1]d x\n\n" +
				"id: 1796655005:-,[0],-\ndata: 1 %[1]d x\n\n" +
				"id: 1796655005:[0],0,-\ndata: 2 %[1]d x\n\n" +
				"id: 1796655006:-,-,[0]\ndata: 3 %[1]d x\n\n", // c lost 2
			delivered: 5, lost: 1, perMember: [3]uint64{2, 1, 2},
		},
		{
			name: "events whose member cannot be told",
			stream: "id: 1\ndata: 1 %[1]d x\n\n" + // a single stream's
				"event: d\ndata: 1 %[1]d x\n\n" + // a member not of the page
				"id: 1796655004:[0],-\ndata: 1 %[1]d x\n\n" + // two channels, not three
				"event: a\nid: 1796655004:-,[0],-\ndata: 1 %[1]d x\n\n", // the type wins
			delivered: 1, foreign: 3, perMember: [3]uint64{1, 0, 0},
		},
	} {
		l, c := muxLoad()
		err := l.read(strings.NewReader(fmt.Sprintf(tc.stream, now)), c)
		if err != io.EOF {
			t.Errorf("%s: read ended with %v", tc.name, err)
		}
		if c.delivered.Load() != tc.delivered || c.lost.Load() != tc.lost || c.dup.Load() != tc.dup || l.foreign.Load() != tc.foreign {
			t.Errorf("%s: delivered %d lost %d dup %d foreign %d, want %d %d %d %d", tc.name,
				c.delivered.Load(), c.lost.Load(), c.dup.Load(), l.foreign.Load(), tc.delivered, tc.lost, tc.dup, tc.foreign)
		}
		for m, want := range tc.perMember {
			if got := c.memberDelivered[m].Load(); got != want {
				t.Errorf("%s: member %d delivered %d, want %d", tc.name, m, got, want)
			}
		}
	}
}

// muxPageServer serves a multiplexed page of the members listed in
// ?streams=: every 5 ms an event of each member, its sequence numbers its
// own, named as sse_fanout names them, or, with nchan, without a type and
// with nchan's multiplexed id. Single streams are served on any other path.
func muxPageServer(t *testing.T, nchan, tlsH2 bool) *httptest.Server {
	t.Helper()
	single := newAddrServer(t, false)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		members := strings.Split(r.URL.Query().Get("streams"), ",")
		if members[0] == "" {
			single.Config.Handler.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			var b strings.Builder
			for m, name := range members {
				if nchan {
					tags := make([]string, len(members))
					for k := range tags {
						tags[k] = "-"
					}
					tags[m] = fmt.Sprintf("[%d]", seq)
					fmt.Fprintf(&b, "id: 1796655004:%s\n", strings.Join(tags, ","))
				} else {
					fmt.Fprintf(&b, "id: %d\nevent: %s\n", seq, name)
				}
				fmt.Fprintf(&b, "data: %d %d xxxx\n\n", seq, time.Now().UnixNano())
			}
			if _, err := io.WriteString(w, b.String()); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
	srv := httptest.NewUnstartedServer(h)
	if tlsH2 {
		cert, _ := selfSigned(t)
		srv.EnableHTTP2 = true
		srv.TLS = newTLSConfig(cert)
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestRunPages(t *testing.T) {
	const members = "s0,s1,s2,s3"
	for _, tc := range []struct {
		name   string
		nchan  bool
		proto  string
		split  bool
		path   string
		conns  int64
		pages  int
		perCon int
	}{
		{"sse_fanout multiplexed, h1", false, protoH1, false, "/events/?streams={members}", 6, 6, 1},
		{"nchan multiplexed, h1", true, protoH1, false, "/events/?streams={members}", 6, 6, 1},
		{"multiplexed, h2, 2 pages a connection", false, protoH2, false, "/events/?streams={members}", 3, 6, 2},
		{"split, h1: a connection per member", false, protoH1, true, "/events/{member}", 24, 6, 1},
		{"split, h2: a page's streams on its connection", false, protoH2, true, "/events/{member}", 6, 6, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := muxPageServer(t, tc.nchan, tc.proto == protoH2)
			cfg := &config{
				url: srv.URL + tc.path, membersList: members, split: tc.split, clients: tc.pages, ramp: 1000,
				proto: tc.proto, streamsPerConn: tc.perCon, insecure: tc.proto != protoH1,
				duration: 400 * time.Millisecond, connectTimeout: 5 * time.Second,
			}
			if err := cfg.check(); err != nil {
				t.Fatal(err)
			}
			rep, err := run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			streams := tc.pages
			if tc.split {
				streams *= 4
			}
			p := rep.Pages
			if p == nil || p.Wanted != tc.pages || p.Held != int64(tc.pages) || p.Members != 4 || p.Split != tc.split || p.SilentMembers != 0 {
				t.Fatalf("pages %+v, want all %d held, none silent; errors %v", p, tc.pages, rep.Errors)
			}
			if c := rep.Clients; c.Wanted != streams || c.Held != int64(streams) || c.Failed != 0 {
				t.Errorf("clients (streams) %+v, want %d", c, streams)
			}
			if n := rep.Conns; n.Wanted != int(tc.conns) || n.Opened != tc.conns {
				t.Errorf("connections %+v, want %d", n, tc.conns)
			}
			e := rep.Events
			if e.Delivered == 0 || e.Lost != 0 || e.Duplicate != 0 || e.Foreign != 0 {
				t.Errorf("events %+v: want some, none lost, repeated or foreign", e)
			}
			// 4 members, an event each every 5 ms: about 800 a page a
			// second, less on a busy machine.
			if p.PerPagePerSecond < 200 || p.PerPagePerSecond > 900 {
				t.Errorf("%.0f deliveries per page per second, want about 800", p.PerPagePerSecond)
			}
		})
	}
}

func TestMergeAndTableOfPages(t *testing.T) {
	page := func(held int64, split bool) *report {
		return &report{
			Labels:   labels{Workload: "M1", System: map[bool]string{false: "mux", true: "each"}[split], Round: 1},
			Clients:  clientCounts{Wanted: 100, Held: 100},
			Pages:    &pageCounts{Members: 10, Split: split, Wanted: 50, Held: held},
			Events:   eventCounts{Delivered: 1000},
			Procs:    []procResult{{proc: proc{Name: "server", PID: 1}, CPUSeconds: 1, CPUPerMillion: 1000, RSSBeforeKiB: 1000, RSSKiB: 2000}},
			Duration: 1,
		}
	}
	m, err := mergeReports([]*report{page(50, false), page(50, false)})
	if err != nil {
		t.Fatal(err)
	}
	if p := m.Pages; p.Wanted != 100 || p.Held != 100 || p.PerPagePerSecond != 20 || m.Procs[0].RSSPerClientKiB != 10 {
		t.Errorf("merged pages %+v, RSS per page %v: want 100 held, 2000 deliveries / 100 pages, 1000 KiB / 100 pages",
			p, m.Procs[0].RSSPerClientKiB)
	}
	if _, err := mergeReports([]*report{page(50, false), page(50, true)}); err == nil {
		t.Error("merged pages read in two ways")
	}

	dir := t.TempDir()
	mux, each := page(50, false), page(40, true)
	mux.Pages.PerPagePerSecond, each.Pages.PerPagePerSecond = 10, 10
	mux.Procs[0].RSSPerClientKiB, each.Procs[0].RSSPerClientKiB = 20, 25
	files := []string{writeReport(t, dir, "mux.json", *mux), writeReport(t, dir, "each.json", *each)}
	var b strings.Builder
	if err := printTable(&b, files, "mux each"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| M1 | mux (page: 1 stream of 10) | h1 | 50 pages, 10.0 ev/s each |",
		"| M1 | each (page: 10 streams) | h1 | 40 of 50 pages, 10.0 ev/s each |",
		"| 20.0 KiB per page |",
		"| **mux ÷ each** | h1 | | | — | — | 1× | 0.80× |",
		"A workload of pages (M1) counts pages",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var text strings.Builder
	mux.writeText(&text)
	if !strings.Contains(text.String(), "pages:    50 wanted, 50 held, of 10 members multiplexed on one stream; 10.00 deliveries per page per second") ||
		!strings.Contains(text.String(), "KiB per page)") {
		t.Errorf("text lacks the pages:\n%s", text.String())
	}
}
