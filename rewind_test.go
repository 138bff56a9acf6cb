package ssefanout

// Rewind: the last events of the buffer for a client that joins without
// a cursor.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestRewindSendsTheLastEventsFirst(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 3\n}")
	up, _ := testkit.StartStream(t, origin, base+"/r", 10)

	c := testkit.OpenClient(t, base+"/r", nil)
	c.ExpectIDs(t, 8, 10) // with their ids, at once
	testkit.SendIDs(up, 11, 12)
	c.ExpectIDs(t, 11, 12)
	origin.NoNewConn(t)

	// It resumes exactly where it was, not rewound again.
	back := testkit.OpenClient(t, base+"/r", testkit.LastEventID("11"))
	back.ExpectIDs(t, 12, 12)
	testkit.SendIDs(up, 13, 13)
	back.ExpectIDs(t, 13, 13)
}

func TestRewindLeavesClientsWithACursorAlone(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 5\n}")
	up, _ := testkit.StartStream(t, origin, base+"/c", 10)
	for _, c := range []*testkit.Client{
		testkit.OpenClient(t, base+"/c", testkit.LastEventID("9")),
		testkit.OpenClient(t, base+"/c?last_event_id=9", nil),
	} {
		c.ExpectIDs(t, 10, 10)
	}
	testkit.SendIDs(up, 11, 11)
}

// TestRewindCountsEventsThatFire: rewind 2 is the last two events a
// browser would fire, whatever blocks that fire nothing came after them.
func TestRewindCountsEventsThatFire(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 2\n}")
	up, witness := testkit.StartStream(t, origin, base+"/f", 5)
	up.Send("id: 6\n\nevent: nodata\nid: 7\n\n")
	witness.NextEvent(t)
	witness.NextEvent(t)

	c := testkit.OpenClient(t, base+"/f", nil)
	c.ExpectIDs(t, 4, 5)
	up.Send("id: 8\ndata: event 8\n\n")
	if ev := c.NextData(t); ev.Data != "event 8" {
		t.Fatalf("got %+v", ev)
	}
}

// TestRewindWithAFilter: rewind counts the events the client's filter
// passes, so rewind 1 with events=price is the latest price.
func TestRewindWithAFilter(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 1\n\tfilter_param events\n}")
	witness := testkit.OpenClient(t, base+"/p", nil)
	up := origin.NextConn(t)
	up.Send(mixedScript)
	firedUntil(t, witness, "u2")

	price := testkit.OpenClient(t, base+"/p?events=price", nil)
	if ev := price.NextData(t); ev.Type != "price" || ev.Data != "p1" || ev.ID != "4" {
		t.Fatalf("rewind 1 with events=price sent %+v first, want p1", ev)
	}
	up.Send("event: tick\ndata: t3\nid: 10\n\nevent: price\ndata: p2\nid: 11\n\n")
	if ev := price.NextData(t); ev.Data != "p2" {
		t.Fatalf("then %+v, want p2", ev)
	}
}

// TestRewindIsNoLag: a rewound client is not cut for the events it was
// placed behind, however few client_queue allows.
func TestRewindIsNoLag(t *testing.T) {
	origin := testkit.NewOrigin(t)
	drops, rewound := counterValue(t, origin.URL(), "slow_client_drops"), counterValue(t, origin.URL(), "events_rewound")
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tbuffer 40\n\tclient_queue 2\n\trewind 40\n}")
	witness := testkit.OpenClient(t, base+"/lag", nil)
	up := origin.NextConn(t)
	for i := 1; i <= 40; i += 2 { // in steps, so that the witness never lags
		testkit.SendIDs(up, i, i+1)
		witness.ExpectIDs(t, i, i+1)
	}
	c := testkit.OpenClient(t, base+"/lag", nil)
	c.ExpectIDs(t, 1, 40)
	testkit.SendIDs(up, 41, 42)
	c.ExpectIDs(t, 41, 42)
	if n := counterValue(t, origin.URL(), "slow_client_drops") - drops; n != 0 {
		t.Fatalf("%v clients cut", n)
	}
	if n := counterValue(t, origin.URL(), "events_rewound") - rewound; n != 40 {
		t.Fatalf("events_rewound grew by %v, want 40", n)
	}
}

func TestRewindOfAStreamThatHasNothingYet(t *testing.T) {
	origin := testkit.NewOrigin(t)
	rewound := counterValue(t, origin.URL(), "events_rewound")
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 5\n}")
	c := testkit.OpenClient(t, base+"/new", nil)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 2)
	c.ExpectIDs(t, 1, 2)
	if n := counterValue(t, origin.URL(), "events_rewound") - rewound; n != 0 {
		t.Fatalf("events_rewound grew by %v, want 0", n)
	}
}

func TestRewindBeyondTheBufferIsRefused(t *testing.T) {
	for _, tc := range []struct {
		sub string
		ok  bool
	}{
		{"buffer 10\n\t\trewind 11", false},
		{"buffer 0\n\t\trewind 1", false},
		{"rewind 1025", false}, // past the default buffer
		{"buffer 10\n\t\trewind 10", true},
		{"rewind 1024", true},
	} {
		caddyfile := testkit.GlobalOptions() + "http://127.0.0.1:1 {\n\tsse_fanout http://127.0.0.1:2 {\n\t\t" + tc.sub + "\n\t}\n}\n"
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
		if err == nil { // the parser lets it by: Provision must not
			err = caddy.Validate(mustConfig(t, cfg))
		}
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q: %v", tc.sub, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "rewind")):
			t.Errorf("%q: got %v, want an error naming rewind", tc.sub, err)
		}
	}
}

func TestRingRewindStart(t *testing.T) {
	r := newRing(8, 0)
	for i := 1; i <= 6; i++ {
		ev := &sse.Event{Data: "x", HasData: i != 4, ID: fmt.Sprint(i), HasID: true} // 4 fires nothing
		if i == 5 {
			ev.Type = "price"
		}
		r.push(newFrame(ev, true))
	}
	for _, tc := range []struct {
		n, window  int
		filter     eventFilter
		seq        uint64
		wantEvents int
	}{
		{1, 8, nil, 5, 1},
		{2, 8, nil, 4, 2},
		{3, 8, nil, 2, 3}, // 4 fires nothing: 3, 5, 6
		{10, 8, nil, 0, 5},
		{10, 3, nil, 4, 2}, // the newest 3 frames only, of which 4 fires nothing
		{1, 8, eventFilter{"price"}, 4, 1},
		{2, 8, eventFilter{"price"}, 4, 1},
		{0, 8, nil, 6, 0},
	} {
		seq, events := r.rewindStart(tc.n, tc.window, tc.filter)
		if seq != tc.seq || events != tc.wantEvents {
			t.Errorf("rewindStart(%d, %d, %q) = %d, %d; want %d, %d", tc.n, tc.window, tc.filter, seq, events, tc.seq, tc.wantEvents)
		}
	}
}

// TestRewindIsPerHandler: two handlers with the same upstream share their
// streams, and so the origin connection, but each rewinds its own clients
// as it is configured (the demo's late joiner is served so).
func TestRewindIsPerHandler(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, fmt.Sprintf(`handle_path /late/* {
		sse_fanout %s {
			rewind 2
		}
	}
	handle {
		sse_fanout %s
	}`, origin.URL(), origin.URL()))
	up, _ := testkit.StartStream(t, origin, base+"/s", 5)
	late := testkit.OpenClient(t, base+"/late/s", nil)
	late.ExpectIDs(t, 4, 5)
	plain := testkit.OpenClient(t, base+"/s", nil)
	testkit.SendIDs(up, 6, 6)
	plain.ExpectIDs(t, 6, 6)
	late.ExpectIDs(t, 6, 6)
	origin.NoNewConn(t)
}

// TestRewindSparesTiers: the upstream connection of another sse_fanout
// tier is not rewound, which would put events from before its clients
// joined into its stream as live ones.
func TestRewindSparesTiers(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\trewind 3\n}")
	up, _ := testkit.StartStream(t, origin, base+"/t", 10)
	tier := testkit.OpenClient(t, base+"/t", http.Header{"Via": {viaEntry("edge-1")}})
	page := testkit.OpenClient(t, base+"/t", nil)
	page.ExpectIDs(t, 8, 10)
	testkit.SendIDs(up, 11, 11)
	page.ExpectIDs(t, 11, 11)
	tier.ExpectIDs(t, 11, 11) // and nothing before it
}
