package ssefanout

// The Prometheus metrics.

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestMetricsAndAdminReportTrueNumbers(t *testing.T) {
	origin := testkit.NewOrigin(t)
	adminPort := testkit.FreePort(t)
	port := testkit.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loadWithAdmin(t, adminPort, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s\n}\n", port, origin.URL()))

	const clients, events = 7, 12
	var cs []*testkit.Client
	for i := 0; i < clients; i++ {
		cs = append(cs, testkit.OpenClient(t, base+"/m?x=1", nil))
	}
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, events)
	for _, c := range cs {
		c.ExpectIDs(t, 1, events)
	}
	replay := testkit.OpenClient(t, base+"/m?x=1", testkit.LastEventID("10"))
	replay.ExpectIDs(t, 11, events)

	u := origin.URL()
	checks := map[string]float64{
		"clients":         clients + 1,
		"streams":         1,
		"events_received": events,
		"replay_hits":     1,
		"replay_misses":   0,
	}
	for name, want := range checks {
		if got := counterValue(t, u, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got, want := counterValue(t, u, "events_sent"), float64(clients*events+2); got != want {
		t.Errorf("events_sent = %v, want %v (the replay client got 2)", got, want)
	}

	resp, err := testkit.HTTPClient.Get(fmt.Sprintf("http://127.0.0.1:%d/sse_fanout/streams", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var statuses []streamStatus
	if err := json.NewDecoder(resp.Body).Decode(&statuses); err != nil {
		t.Fatal(err)
	}
	if len(statuses) != 1 {
		t.Fatalf("admin lists %d streams, want 1: %+v", len(statuses), statuses)
	}
	st := statuses[0]
	if st.Key != "/m?x=1" || st.UpstreamURL != u+"/m?x=1" || st.Clients != clients+1 ||
		st.Buffered != events || st.FirstID != "1" || st.LastID != strconv.Itoa(events) ||
		st.UpstreamState != stateConnected || st.EventsReceived != events || st.UpstreamConnect != 1 {
		t.Fatalf("admin status %+v", st)
	}
}

// loadWithAdmin runs Caddy with its admin API on adminPort and the given
// sites; the test's cleanup turns the admin API off again and stops Caddy.
func loadWithAdmin(t *testing.T, adminPort int, sites string) {
	t.Helper()
	global := strings.Replace(testkit.GlobalOptions(), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	testkit.LoadCaddyfile(t, global+sites)
	t.Cleanup(func() {
		testkit.LoadCaddyfile(t, testkit.GlobalOptions()) // replaces the admin server with none
		testkit.StopCaddy(t)
	})
}

// TestMetricsCountFilteredAndRewoundEvents: events_filtered counts, per
// client, the events its filter left out, whether its writer skipped them
// or publish passed it over, and events_rewound the events rewind placed
// before a joining client; neither counts as sent.
func TestMetricsCountFilteredAndRewoundEvents(t *testing.T) {
	for _, detach := range []bool{true, false} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			saved := testkit.DetachInTests
			testkit.DetachInTests = detach
			defer func() { testkit.DetachInTests = saved }()
			origin := testkit.NewOrigin(t)
			u := origin.URL()
			// From the counts of an earlier origin on the same port, if any.
			before := map[string]float64{}
			for _, name := range []string{"events_filtered", "events_rewound", "events_sent"} {
				before[name] = counterValue(t, u, name)
			}
			base := testkit.StartCaddy(t, "sse_fanout "+u+" {\n\tfilter_param events\n\trewind 3\n}")
			witness := testkit.OpenClient(t, base+"/m", nil)
			filtered := testkit.OpenClient(t, base+"/m?events=update", nil)
			up := origin.NextConn(t)
			for i := 1; i <= 10; i++ {
				typ := "tick"
				if i%5 == 0 {
					typ = "update"
				}
				up.Send(fmt.Sprintf("event: %s\ndata: %d\nid: %d\n\n", typ, i, i))
			}
			for i := 1; i <= 10; i++ {
				if ev := witness.NextData(t); ev.ID != strconv.Itoa(i) {
					t.Fatalf("witness got %+v", ev)
				}
			}
			for _, want := range []string{"5", "10"} {
				if ev := filtered.NextData(t); ev.ID != want {
					t.Fatalf("filtered client got %+v, want update %s", ev, want)
				}
			}
			late := testkit.OpenClient(t, base+"/m", nil)
			for _, want := range []string{"8", "9", "10"} {
				if ev := late.NextData(t); ev.ID != want {
					t.Fatalf("rewound client got %+v, want %s", ev, want)
				}
			}
			testkit.Eventually(t, "the filtered events to be counted", func() bool {
				return counterValue(t, u, "events_filtered")-before["events_filtered"] == 8
			})
			for name, want := range map[string]float64{"events_rewound": 3, "events_sent": 10 + 2 + 3} {
				if got := counterValue(t, u, name) - before[name]; got != want {
					t.Errorf("%s grew by %v, want %v", name, got, want)
				}
			}
		})
	}
}

// TestGrafanaDashboardNamesExportedMetrics holds examples/grafana-dashboard.json
// to the metrics the module registers: every query in it (each panel's
// expr, each query variable) names at least one metric, only metrics that
// are exported, as they are exported (a histogram's _bucket, _sum and
// _count), and every exported metric is shown by some panel.
func TestGrafanaDashboardNamesExportedMetrics(t *testing.T) {
	exported := map[string]bool{}
	for _, c := range allCollectors() {
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names := []string{m[1]}
			switch c.(type) {
			case *prometheus.HistogramVec, prometheus.Histogram:
				names = []string{m[1] + "_bucket", m[1] + "_sum", m[1] + "_count"}
			case *prometheus.SummaryVec, prometheus.Summary:
				names = append(names, m[1]+"_sum", m[1]+"_count")
			}
			for _, n := range names {
				exported[n] = false
			}
		}
	}
	if len(exported) == 0 {
		t.Fatal("no collectors")
	}

	raw, err := os.ReadFile("examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("examples/grafana-dashboard.json: %v", err)
	}
	var queries []string
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				queries = append(queries, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
		}
		queries = append(queries, q.Query)
	}
	if len(queries) < 10 {
		t.Fatalf("%d queries in the dashboard, want a panel for each metric", len(queries))
	}

	metricName := regexp.MustCompile(`\bcaddy_[a-zA-Z0-9_:]*`)
	selector := regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)
	for _, q := range queries {
		names := metricName.FindAllString(q, -1)
		for _, m := range selector.FindAllStringSubmatch(q, -1) {
			names = append(names, m[1])
		}
		if len(names) == 0 {
			t.Errorf("query %q names no metric", q)
		}
		for _, n := range names {
			if _, ok := exported[n]; !ok {
				t.Errorf("query %q names %s, which the module does not export", q, n)
				continue
			}
			exported[n] = true
		}
	}
	for n, shown := range exported {
		if !shown {
			t.Errorf("no panel shows %s", n)
		}
	}
}

// dashboardPanel is what the dashboard test reads of a Grafana panel: its
// queries, and the panels of a collapsed row.
type dashboardPanel struct {
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}
