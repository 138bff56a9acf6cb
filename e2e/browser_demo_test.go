package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/examples/demo/demoapp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// demoSnapshot is what the demo page shows, read in one go.
type demoSnapshot struct {
	State             string `json:"state"`
	StateName         string `json:"stateName"`
	Messages          string `json:"messages"`
	Ticks             string `json:"ticks"`
	LastID            string `json:"lastId"`
	OriginConnections string `json:"originConnections"`
	Latency           string `json:"latency"`
	Items             []struct {
		Class string `json:"class"`
		Text  string `json:"text"`
	} `json:"items"` // newest first
}

const demoSnapshotJS = `(() => {
	const text = (id) => document.getElementById(id).textContent;
	return {
		state: text("state"),
		stateName: text("state-name"),
		messages: text("count-message"),
		ticks: text("count-tick"),
		lastId: text("last-id"),
		originConnections: text("origin-connections"),
		latency: text("latency"),
		items: [...document.querySelectorAll("#events li")].map((li) => ({class: li.className, text: li.textContent})),
	};
})()`

// demoItem matches one line of the demo page's event list:
// "<time>  <type>  id=<JSON string>  <data>".
var demoItem = regexp.MustCompile(`  (message|tick)  id=("(?:[^"\\]|\\.)*")  (.*)$`)

// TestBrowserDemoPage starts the demo (examples/demo) as its command does,
// with a faster clock, and opens its page in two browsers: each must load,
// show live events, and count them right, in each of its three columns
// (every event, ticks only, a late joiner sent the last 10 events at
// once), plot the latency, and the origin must still have one connection.
// Each page must then show what the proxy reports on its admin API (its
// clients, the events and bytes it sent, its origin connection, the
// events it rewound) and plot it; and after the reload button cuts every
// client, each column of each page must resume, from the proxy's buffer,
// over the same origin connection, with no gap and no duplicate in the
// events its cursor covers (the messages, which have ids; the ticks in the
// ticks-only column) and no tick twice. (A tick has no id: one sent as the
// client was cut, after its last message, may be missed.)
func TestBrowserDemoPage(t *testing.T) {
	demo, err := demoapp.Start(demoapp.Options{
		Listen:        fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		Origin:        "127.0.0.1:0",
		Admin:         "127.0.0.1:0",
		MessageEvery:  100 * time.Millisecond,
		TickEvery:     350 * time.Millisecond,
		GlobalOptions: fmt.Sprintf("storage file_system %s\n\t%s", testkit.Storage(), testkit.LogOptions()),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := demo.Close(); err != nil {
			t.Errorf("stopping the demo: %v", err)
		}
	})
	// Two browsers, each a viewer of its own. (A second tab of one headless
	// Chromium driven by chromedp does not answer here.)
	viewers := []context.Context{newBrowser(t), newBrowser(t)}
	for _, tab := range viewers {
		navigate(t, tab, demo.PageURL+"/")
	}
	for i, tab := range viewers {
		waitPage(t, tab, "live events on the demo page",
			`+document.getElementById("count-message").textContent >= 12 && +document.getElementById("count-tick").textContent >= 2`)
		checkDemoPage(t, fmt.Sprintf("viewer %d", i+1), evalPage[demoSnapshot](t, tab, demoSnapshotJS))
		waitPage(t, tab, "ticks in the ticks-only column", `+document.getElementById("filtered-count-tick").textContent >= 2`)
		checkDemoColumn(t, fmt.Sprintf("viewer %d, ticks only", i+1), evalPage[demoColumnSnapshot](t, tab, demoColumnJS("filtered-")), "tick")
		evalPage[bool](t, tab, `window.joinLate(), true`)
		waitPage(t, tab, "the late joiner's rewind", `+document.getElementById("late-at-once").textContent >= 10`)
		checkDemoColumn(t, fmt.Sprintf("viewer %d, late joiner", i+1), evalPage[demoColumnSnapshot](t, tab, demoColumnJS("late-")), "message", "tick")
		if n := evalPage[int](t, tab, `document.getElementById("latency-line").getAttribute("points").split(" ").filter((p) => p).length`); n < 2 {
			t.Errorf("viewer %d: the latency plot has %d points", i+1, n)
		}
		if got := evalPage[string](t, tab, `document.getElementById("sources").textContent`); got != "3" {
			t.Errorf("viewer %d: the page shows %s EventSources, want 3", i+1, got)
		}
	}
	if n := demo.Origin.Connections(); n != 1 {
		t.Errorf("the origin has %d event-stream connections with two viewers of three EventSources each, want 1", n)
	}
	for i, tab := range viewers {
		waitPage(t, tab, "a message after the late joins", fmt.Sprintf(`+document.getElementById("count-message").textContent >= %d`,
			evalPage[int](t, tab, `+document.getElementById("count-message").textContent`)+1))
		if got := evalPage[string](t, tab, `document.getElementById("origin-connections").textContent`); got != "1" {
			t.Errorf("viewer %d: origin connections shown as %q with every column open, want 1", i+1, got)
		}
	}

	// What the proxy knows, as the page reads it from the admin API. The
	// counters are the process's, summed over upstreams: other tests in
	// this process may have added to them, so they are checked from below.
	for i, tab := range viewers {
		waitPage(t, tab, "the proxy's numbers with every column open",
			`document.getElementById("proxy-streams").textContent.startsWith("/events6connected1") &&
			document.querySelectorAll("#proxy-line-sent, #proxy-line-clients").length === 2 &&
			[...document.querySelectorAll("#proxy-line-sent, #proxy-line-clients")].every((l) => l.getAttribute("points").split(" ").filter((p) => p).length >= 2)`)
		p := evalPage[demoProxySnapshot](t, tab, demoProxyJS)
		if p.Admin != demo.AdminURL || p.Error != "" {
			t.Errorf("viewer %d: the page reads the admin API at %q (error %q), want %s", i+1, p.Admin, p.Error, demo.AdminURL)
		}
		for _, c := range []struct {
			name, shown string
			min         int
		}{
			{"clients", p.Clients, 6}, // two viewers of three EventSources
			{"events sent", p.EventsSent, 1},
			{"bytes sent", p.BytesSent, 1},
			{"events rewound", p.Rewound, 20}, // two late joiners sent 10 each
		} {
			if n, err := strconv.Atoi(c.shown); err != nil || n < c.min {
				t.Errorf("viewer %d: the proxy's %s shown as %q, want at least %d", i+1, c.name, c.shown, c.min)
			}
		}
		if p.OriginConnections != "1" {
			t.Errorf("viewer %d: the proxy's origin connections shown as %q, want 1", i+1, p.OriginConnections)
		}
	}

	// The reload button cuts every client; each column comes back with its
	// Last-Event-ID and is sent what it missed from the buffer.
	replays := evalPage[int](t, viewers[0], `+document.getElementById("proxy-replay-hits").textContent`)
	evalPage[bool](t, viewers[0], `document.getElementById("reload").click(), true`)
	for i, tab := range viewers {
		for _, col := range []struct{ prefix, typ string }{{"", "message"}, {"filtered-", "tick"}, {"late-", "message"}} {
			id := func(name string) string { return fmt.Sprintf("document.getElementById(%q)", col.prefix+name) }
			waitPage(t, tab, fmt.Sprintf("column %q reconnected", col.prefix),
				fmt.Sprintf(`+%s.textContent >= 1 && %s.textContent === "1"`, id("reconnects"), id("state")))
			count := evalPage[int](t, tab, "+"+id("count-"+col.typ)+".textContent")
			waitPage(t, tab, fmt.Sprintf("a live %s in column %q after it resumed", col.typ, col.prefix),
				fmt.Sprintf(`+%s.textContent > %d`, id("count-"+col.typ), count))
			gaps, dups := evalPage[string](t, tab, id("gaps")+".textContent"), evalPage[string](t, tab, id("duplicates")+".textContent")
			if col.prefix != "filtered-" {
				if d := evalPage[string](t, tab, id("other-duplicates")+".textContent"); d != "0" {
					dups += " (and " + d + " ticks)"
				}
			}
			if gaps != "0" || dups != "0" {
				t.Errorf("viewer %d, column %q: %s gaps and %s duplicates shown after the reload, want 0; its events, newest first:\n%s",
					i+1, col.prefix, gaps, dups, strings.Join(evalPage[demoColumnSnapshot](t, tab, demoColumnJS(col.prefix)).Texts, "\n"))
			}
		}
		waitPage(t, tab, "the reload and the resumed clients in the proxy's numbers", fmt.Sprintf(
			`+document.getElementById("proxy-reloads").textContent >= 1 && +document.getElementById("proxy-replay-hits").textContent >= %d &&
			document.getElementById("proxy-streams").textContent.startsWith("/events6connected1")`, replays+6))
	}
	if n := demo.Origin.Connections(); n != 1 {
		t.Errorf("the origin has %d event-stream connections after the reload, want 1: the reload keeps the stream", n)
	}
}

// demoProxySnapshot is what the demo page shows of the proxy.
type demoProxySnapshot struct {
	Admin             string `json:"admin"`
	Error             string `json:"error"`
	Clients           string `json:"clients"`
	OriginConnections string `json:"originConnections"`
	EventsSent        string `json:"eventsSent"`
	BytesSent         string `json:"bytesSent"`
	Rewound           string `json:"rewound"`
}

const demoProxyJS = `(() => {
	const text = (id) => document.getElementById(id).textContent;
	return {
		admin: text("proxy-admin"),
		error: text("proxy-error"),
		clients: text("proxy-clients"),
		originConnections: text("proxy-origin-connections"),
		eventsSent: text("proxy-events-sent"),
		bytesSent: text("proxy-bytes-sent"),
		rewound: text("proxy-rewound"),
	};
})()`

// demoColumnSnapshot is what a column of the demo page other than the
// first shows.
type demoColumnSnapshot struct {
	State    string   `json:"state"`
	Messages string   `json:"messages"`
	Ticks    string   `json:"ticks"`
	LastID   string   `json:"lastId"`
	Classes  []string `json:"classes"` // newest first
	Texts    []string `json:"texts"`
}

// demoColumnJS reads the column whose element ids start with prefix.
func demoColumnJS(prefix string) string {
	return fmt.Sprintf(`(() => {
	const text = (id) => document.getElementById(%[1]q + id).textContent;
	const items = [...document.querySelectorAll("#%[1]sevents li")];
	return {
		state: text("state"),
		messages: text("count-message"),
		ticks: text("count-tick"),
		lastId: text("last-id"),
		classes: items.map((li) => li.className),
		texts: items.map((li) => li.textContent),
	};
})()`, prefix)
}

// checkDemoColumn checks a column of the demo page: open, showing only
// events of the given types, its counters counting what it lists, with no
// gap or duplicate in the messages' ids and the ticks' numbers.
func checkDemoColumn(t *testing.T, column string, s demoColumnSnapshot, types ...string) {
	t.Helper()
	if s.State != "1" {
		t.Errorf("%s: readyState %s", column, s.State)
	}
	if len(s.Texts) >= 50 {
		t.Fatalf("%s: the page lists %d events, its maximum: the counters cannot be checked against it", column, len(s.Texts))
	}
	count := map[string]int{}
	var ns = map[string][]int{} // newest first
	for i, text := range s.Texts {
		m := demoItem.FindStringSubmatch(text)
		if m == nil || m[1] != s.Classes[i] || !slices.Contains(types, m[1]) {
			t.Fatalf("%s: list item %q (class %q), want only %v", column, text, s.Classes[i], types)
		}
		var payload struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal([]byte(m[3]), &payload); err != nil {
			t.Fatalf("%s: list item %q: %v", column, text, err)
		}
		count[m[1]]++
		ns[m[1]] = append(ns[m[1]], payload.N)
	}
	if s.Messages != strconv.Itoa(count["message"]) || s.Ticks != strconv.Itoa(count["tick"]) {
		t.Errorf("%s: counters show %s messages and %s ticks, the column lists %d and %d", column, s.Messages, s.Ticks, count["message"], count["tick"])
	}
	for typ, n := range ns {
		for i := 1; i < len(n); i++ {
			if n[i] != n[i-1]-1 {
				t.Errorf("%s: a gap or duplicate in the %s events: %v", column, typ, n)
				break
			}
		}
	}
}

// checkDemoPage checks that a snapshot of the demo page is consistent: its
// counters count the events it lists, its ids have no gap, and what it
// shows of the last event and the origin is right.
func checkDemoPage(t *testing.T, tab string, s demoSnapshot) {
	t.Helper()
	if s.State != "1" || s.StateName != "OPEN" {
		t.Errorf("%s: readyState shown as %s %s, want 1 OPEN", tab, s.State, s.StateName)
	}
	if s.OriginConnections != "1" {
		t.Errorf("%s: origin connections shown as %q, want 1", tab, s.OriginConnections)
	}
	if !regexp.MustCompile(`^-?\d+ ms$`).MatchString(s.Latency) {
		t.Errorf("%s: latency shown as %q", tab, s.Latency)
	}
	var messages, ticks []int // ids of the messages, tick numbers; newest first
	for i, item := range s.Items {
		m := demoItem.FindStringSubmatch(item.Text)
		if m == nil || m[1] != item.Class {
			t.Fatalf("%s: list item %d is %q (class %q)", tab, i, item.Text, item.Class)
		}
		var lastEventID string
		if err := json.Unmarshal([]byte(m[2]), &lastEventID); err != nil {
			t.Fatalf("%s: list item %q: %v", tab, item.Text, err)
		}
		if i == 0 && lastEventID != s.LastID {
			t.Errorf("%s: last id shown as %q, but the newest event has lastEventId %q", tab, s.LastID, lastEventID)
		}
		var payload struct {
			N                 int    `json:"n"`
			Stream            string `json:"stream"`
			OriginConnections int    `json:"origin_connections"`
		}
		if err := json.Unmarshal([]byte(m[3]), &payload); err != nil {
			t.Fatalf("%s: list item %q: data is not JSON: %v", tab, item.Text, err)
		}
		if item.Class == "tick" {
			ticks = append(ticks, payload.N)
			continue
		}
		if strconv.Itoa(payload.N) != lastEventID || payload.Stream != "/events" || payload.OriginConnections != 1 {
			t.Errorf("%s: message %q: want n = its id, stream /events, one origin connection", tab, item.Text)
		}
		messages = append(messages, payload.N)
	}
	if len(s.Items) >= 50 {
		t.Fatalf("%s: the page lists %d events, its maximum: the counters cannot be checked against it", tab, len(s.Items))
	}
	if s.Messages != strconv.Itoa(len(messages)) || s.Ticks != strconv.Itoa(len(ticks)) {
		t.Errorf("%s: counters show %s messages and %s ticks, the page lists %d and %d",
			tab, s.Messages, s.Ticks, len(messages), len(ticks))
	}
	for _, ns := range [][]int{messages, ticks} {
		for i := 1; i < len(ns); i++ {
			if ns[i] != ns[i-1]-1 {
				t.Errorf("%s: a gap or duplicate in the events listed: %v", tab, ns)
				break
			}
		}
	}
}
