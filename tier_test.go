package ssefanout

// Tiers: the Via marker, the loop check, and what a tier is sent and
// reads differently from a browser. Several sse_fanout sites in one Caddy
// config stand for several nodes here, each with a node_id of its own;
// fleet_test.go runs them as processes of their own.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// tiers is an origin, a shield that reads from it, and an edge that reads
// from the shield, as sites of one Caddy config.
type tiers struct {
	origin       *testkit.Origin
	shield, edge string // base URLs
}

// startTiers starts origin → shield → edge; shieldOpts and edgeOpts are
// more subdirectives for each.
func startTiers(t *testing.T, shieldOpts, edgeOpts string) tiers {
	t.Helper()
	origin := testkit.NewOrigin(t)
	shieldPort, edgePort := testkit.FreePort(t), testkit.FreePort(t)
	shield := fmt.Sprintf("http://127.0.0.1:%d", shieldPort)
	edge := fmt.Sprintf("http://127.0.0.1:%d", edgePort)
	testkit.StartCaddyfile(t, fmt.Sprintf(`%s {
	bind 127.0.0.1
	sse_fanout %s {
		node_id shield
		%s
	}
}
%s {
	bind 127.0.0.1
	sse_fanout %s {
		node_id edge
		%s
	}
}
`, shield, origin.URL(), shieldOpts, edge, shield, edgeOpts))
	return tiers{origin: origin, shield: shield, edge: edge}
}

// statusOf returns the admin status of the stream with the given key read
// from upstream.
func statusOf(t *testing.T, upstream, key string) (streamStatus, bool) {
	t.Helper()
	var found streamStatus
	ok := false
	registries.Range(func(_, value any) bool {
		for _, st := range value.(*registry).statuses() {
			if st.Upstream == upstream && st.Key == key {
				found, ok = st, true
			}
		}
		return true
	})
	return found, ok
}

func TestResponsesAndUpstreamRequestsCarryVia(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\t\tnode_id edge-7\n\t\tmax_clients 1\n\t}")
	c := testkit.OpenClient(t, base+"/via", http.Header{"Via": {"1.1 corp-proxy"}})
	if got := c.Resp.Header.Values("Via"); !slices.Contains(got, "1.1 edge-7 (sse_fanout)") {
		t.Errorf("response Via %q, want 1.1 edge-7 (sse_fanout)", got)
	}
	up := origin.NextConn(t)
	if got := up.Header.Values("Via"); !slices.Equal(got, []string{"1.1 edge-7 (sse_fanout)"}) {
		t.Errorf("upstream Via %q, want only this node's marker: the client's is not forwarded", got)
	}
	// A refusal is an sse_fanout response too.
	_, status := testkit.DialClient(t, base+"/via", nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("second client: status %d, want 503", status)
	}
	resp, err := testkit.HTTPClient.Get(base + "/via")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Via"); got != "1.1 edge-7 (sse_fanout)" {
		t.Errorf("503 response Via %q", got)
	}
}

func TestDefaultNodeIDIsOnePerProcess(t *testing.T) {
	origin := testkit.NewOrigin(t)
	portA, portB := testkit.FreePort(t), testkit.FreePort(t)
	testkit.StartCaddyfile(t, fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		header_up X-Other b
	}
}
`, portA, origin.URL(), portB, origin.URL()))
	a := testkit.OpenClient(t, fmt.Sprintf("http://127.0.0.1:%d/a", portA), nil)
	b := testkit.OpenClient(t, fmt.Sprintf("http://127.0.0.1:%d/b", portB), nil)
	viaA, viaB := a.Resp.Header.Get("Via"), b.Resp.Header.Get("Via")
	if !regexp.MustCompile(`^1\.1 [0-9a-f]{8} \(sse_fanout\)$`).MatchString(viaA) || viaA != viaB {
		t.Fatalf("Via %q and %q, want the same random name of this process", viaA, viaB)
	}
}

func TestNodeIDIsChecked(t *testing.T) {
	for _, id := range []string{"has space", "a,b", "(x)", strings.Repeat("n", 65), "{env.SSEFANOUT_TEST_BAD_NODE}"} {
		t.Setenv("SSEFANOUT_TEST_BAD_NODE", "two words")
		h := &Handler{Upstream: "http://127.0.0.1:9", NodeID: id}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		err := h.Provision(ctx)
		h.Cleanup()
		cancel()
		if err == nil || !strings.Contains(err.Error(), "node_id") {
			t.Errorf("node_id %q: got %v, want an error naming node_id", id, err)
		}
	}
}

func TestNodeIDTakesGlobalPlaceholders(t *testing.T) {
	t.Setenv("SSEFANOUT_TEST_NODE", "edge-from-env")
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\t\tnode_id {env.SSEFANOUT_TEST_NODE}\n\t}")
	c := testkit.OpenClient(t, base+"/env", nil)
	if got := c.Resp.Header.Get("Via"); got != "1.1 edge-from-env (sse_fanout)" {
		t.Fatalf("Via %q", got)
	}
}

func TestSelfLoopIsRefused(t *testing.T) {
	port := testkit.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The upstream is this very site, under a prefix: without the loop
	// check every hop would open a new stream.
	testkit.StartCaddyfile(t, fmt.Sprintf("%s {\n\tbind 127.0.0.1\n\tsse_fanout %s/up {\n\t\tmax_streams 20\n\t}\n}\n", base, base))
	// The first client is refused with the stream's first answer, 508 from
	// this very node: a 502.
	first, err := testkit.HTTPClient.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	first.Body.Close()
	if first.StatusCode != http.StatusBadGateway {
		t.Fatalf("the first client: status %d, want 502", first.StatusCode)
	}
	via := first.Header.Get("Via")
	testkit.Eventually(t, "the stream's upstream to be refused as a loop", func() bool {
		st, ok := statusOf(t, base+"/up", "/events")
		return ok && strings.Contains(st.UpstreamError, "loop")
	})
	if n := openStreams(); n != 1 {
		t.Fatalf("%d streams open, want 1: the looped request opened none", n)
	}
	if got := counterValue(t, base+"/up", "refused_loop"); got < 1 {
		t.Errorf("refused_total{reason=loop} = %v, want at least 1", got)
	}

	// A request that carries this node's marker gets 508, and its Via.
	resp := getWithVia(t, base+"/other", via)
	if resp.StatusCode != http.StatusLoopDetected || resp.Header.Get("Via") != via {
		t.Fatalf("status %d Via %q, want 508 and %q", resp.StatusCode, resp.Header.Get("Via"), via)
	}
}

// getWithVia sends a GET with the given Via and returns the response, closed.
func getWithVia(t *testing.T, url, via string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Via", via)
	resp, err := testkit.HTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestLoopOfTwoTiersIsRefused(t *testing.T) {
	portA, portB := testkit.FreePort(t), testkit.FreePort(t)
	a, b := fmt.Sprintf("http://127.0.0.1:%d", portA), fmt.Sprintf("http://127.0.0.1:%d", portB)
	// Each reads from the other, under a prefix, so each hop is a new stream.
	testkit.StartCaddyfile(t, fmt.Sprintf(`%s {
	bind 127.0.0.1
	sse_fanout %s/b {
		node_id a
		max_streams 20
	}
}
%s {
	bind 127.0.0.1
	sse_fanout %s/a {
		node_id b
		max_streams 20
	}
}
`, a, b, b, a))
	// The first client is refused: the loop is found as the stream opens.
	if c, _ := testkit.DialClient(t, a+"/events", nil); c != nil {
		c.Close()
	}
	testkit.Eventually(t, "both tiers to refuse each other as a loop", func() bool {
		stA, okA := statusOf(t, b+"/b", "/events")
		stB, okB := statusOf(t, a+"/a", "/b/events")
		return okA && okB && strings.Contains(stA.UpstreamError, "loop") && strings.Contains(stB.UpstreamError, "loop")
	})
	if n := openStreams(); n > 4 {
		t.Fatalf("%d streams open: the loop multiplied them", n)
	}
	stA, _ := statusOf(t, b+"/b", "/events")
	if stA.UpstreamTier != "b" || stA.Node != "a" {
		t.Errorf("a's stream: node %q upstream_tier %q, want a and b", stA.Node, stA.UpstreamTier)
	}
}

// TestTierLearnedWhileAJoinWaitsStillRefusesTheLoop: a request from node
// N passes the registry's loop check, and before it locks its stream the
// stream learns that it reads from N: the request is refused.
func TestTierLearnedWhileAJoinWaitsStillRefusesTheLoop(t *testing.T) {
	const node = "n1"
	r, sr, s := registryWithStream(t, "/s")
	cfg := r.settings.Load()
	testHookStreamFound = func(found *stream) {
		if found == s {
			r.learnTier(s, node)
		}
	}
	defer func() { testHookStreamFound = nil }()
	looped := sr
	looped.via = []string{node}
	_, c, err := r.join(looped, cfg, nil)
	if err == nil {
		s.mu.RLock()
		_, kept := s.clients[c]
		s.mu.RUnlock()
		t.Fatalf("a request from %s joined a stream that reads from %s (kept: %v)", node, node, kept)
	}
	if !errors.Is(err, errLoop) {
		t.Fatalf("%v, want a loop refusal", err)
	}
}

func TestForgedMarkersOnlyRefuseTheirSender(t *testing.T) {
	tr := startTiers(t, "", "")
	c := testkit.OpenClient(t, tr.edge+"/forge", nil)
	up := tr.origin.NextConn(t)
	testkit.SendIDs(up, 1, 3)
	c.ExpectIDs(t, 1, 3)

	// The edge's own marker, and the marker of the tier it reads from.
	for _, via := range []string{"1.1 edge (sse_fanout)", "1.1 shield (sse_fanout), 1.1 lb"} {
		if resp := getWithVia(t, tr.edge+"/forge", via); resp.StatusCode != http.StatusLoopDetected {
			t.Errorf("Via %q: status %d, want 508", via, resp.StatusCode)
		}
	}
	// The stream and its client go on as before, and so does a new client.
	testkit.SendIDs(up, 4, 6)
	c.ExpectIDs(t, 4, 6)
	other := testkit.OpenClient(t, tr.edge+"/forge", testkit.LastEventID("5"))
	other.ExpectIDs(t, 6, 6)
	tr.origin.NoNewConn(t)
}

func TestAdminAndMetricsShowUpstreamTiers(t *testing.T) {
	tr := startTiers(t, "", "")
	testkit.OpenClient(t, tr.edge+"/tiered", nil)
	tr.origin.NextConn(t)
	testkit.Eventually(t, "the edge's stream to know its upstream tier", func() bool {
		st, ok := statusOf(t, tr.shield, "/tiered")
		return ok && st.UpstreamTier == "shield"
	})
	edge, _ := statusOf(t, tr.shield, "/tiered")
	shield, ok := statusOf(t, tr.origin.URL(), "/tiered")
	if !ok || shield.UpstreamTier != "" || shield.Node != "shield" || edge.Node != "edge" {
		t.Fatalf("shield %+v, edge %+v", shield, edge)
	}
	if got := counterValue(t, tr.shield, "upstream_tier_streams"); got != 1 {
		t.Errorf("upstream_tier_streams{upstream=shield} = %v, want 1", got)
	}
	if got := counterValue(t, tr.origin.URL(), "upstream_tier_streams"); got != 0 {
		t.Errorf("upstream_tier_streams{upstream=origin} = %v, want 0", got)
	}
}

func TestStaleAtTheShieldIsTheEdgesStaleEvent(t *testing.T) {
	// The shield can serve the cursor from neither its buffer nor the
	// origin, and names another stale event: the edge's client gets the
	// edge's, as from one node.
	tr := startTiers(t, "buffer 4\n\t\tclient_queue 4\n\t\tcatch_up off\n\t\tstale_event shield-stale",
		"buffer 4\n\t\tclient_queue 4\n\t\tstale_event gone")
	up, _ := testkit.StartStream(t, tr.origin, tr.edge+"/stale", 20)

	c := testkit.OpenClient(t, tr.edge+"/stale", testkit.LastEventID("5"))
	if ev := c.NextData(t); ev.Type != "gone" || ev.Data != "5" {
		t.Fatalf("first event %+v, want the edge's stale event with data 5", ev)
	}
	testkit.SendIDs(up, 21, 22)
	c.ExpectIDs(t, 21, 22)
	tr.origin.NoNewConn(t)
}

func TestTiersGetTheExactRetry(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\t\tretry 1s\n\t\tretry_jitter 50\n\t}")
	for i := 0; i < 5; i++ {
		rc := dialRaw(t, base, "/retry", "Via: 1.1 edge-3 (sse_fanout)")
		line, err := rc.r.ReadString('\n')
		if err != nil || line != "retry: 1000\n" {
			t.Fatalf("a tier's first line %q (%v), want retry: 1000: the edge spreads it for its own clients", line, err)
		}
	}
}

func TestNodeIDsKeepNodesApart(t *testing.T) {
	origin := testkit.NewOrigin(t)
	portA, portB := testkit.FreePort(t), testkit.FreePort(t)
	testkit.StartCaddyfile(t, fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		node_id a
	}
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s {
		node_id b
	}
}
`, portA, origin.URL(), portB, origin.URL()))
	testkit.OpenClient(t, fmt.Sprintf("http://127.0.0.1:%d/apart", portA), nil)
	testkit.OpenClient(t, fmt.Sprintf("http://127.0.0.1:%d/apart", portB), nil)
	a, b := origin.NextConn(t), origin.NextConn(t) // one connection per node
	nodes := []string{a.Header.Get("Via"), b.Header.Get("Via")}
	slices.Sort(nodes)
	if want := []string{"1.1 a (sse_fanout)", "1.1 b (sse_fanout)"}; !slices.Equal(nodes, want) {
		t.Fatalf("upstream Via %q, want %q", nodes, want)
	}
}

func TestTierStaleOnTheSharedStreamIsDropped(t *testing.T) {
	// An upstream tier that could not resume the stream from 6 says so;
	// the event is the tier's, not the origin's, and goes to no client.
	// From an origin that is not sse_fanout, the same event type is an
	// event.
	for _, tc := range []struct {
		name, via string
		want      []string
	}{
		{"tier", "1.1 shield (sse_fanout)", []string{"six", "eight"}},
		{"origin", "", []string{"six", "6", "eight"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := newFakeTier(t, tc.via, "id: 6\ndata: six\n\n", "event: "+tierStaleEvent+"\ndata: 6\n\nid: 8\ndata: eight\n\n")
			base := testkit.StartCaddy(t, "sse_fanout "+upstream)
			c := testkit.OpenClient(t, base+"/tierstale", nil)
			for _, want := range tc.want {
				if ev := c.NextData(t); ev.Data != want {
					t.Fatalf("got %+v, want data %q", ev, want)
				}
			}
		})
	}
}

// TestOriginEventsNamedLikeTheTierStaleMarkerPassTiers: an origin's own
// events of the type a tier's stale marker has reach an edge's clients as
// they reach the shield's, on the edge's stream and in its catch-up from
// the shield's buffer. The marker is only ever a tier's first block after
// a cursor, without an id.
func TestOriginEventsNamedLikeTheTierStaleMarkerPassTiers(t *testing.T) {
	tr := startTiers(t, "buffer 64", "buffer 4\n\t\tclient_queue 4")
	c := testkit.OpenClient(t, tr.edge+"/named", nil)
	up := tr.origin.NextConn(t)
	up.Send("event: " + tierStaleEvent + "\ndata: before any id\n\n")
	up.Send("id: 1\ndata: one\n\n")
	up.Send("event: " + tierStaleEvent + "\ndata: two\nid: 2\n\n")
	for _, w := range []string{"before any id", "one", "two"} {
		if ev := c.NextData(t); ev.Data != w {
			t.Fatalf("the edge's client got %+v, want data %q", ev, w)
		}
	}
	for i := 3; i <= 10; i += 4 { // in steps, so the client never lags
		testkit.SendIDs(up, i, i+3)
		c.ExpectIDs(t, i, i+3)
	}
	// The edge holds 7 to 10: cursor 1 is a catch-up from the shield's
	// buffer, which begins with the origin's event 2.
	late := testkit.OpenClient(t, tr.edge+"/named", testkit.LastEventID("1"))
	if ev := late.NextData(t); ev.Type != tierStaleEvent || ev.Data != "two" || ev.ID != "2" {
		t.Fatalf("the catching-up client got %+v, want the origin's event 2", ev)
	}
	late.ExpectIDs(t, 3, 10)
}

// newFakeTier serves its nth request bodies[n] as an event stream, with
// the given Via (none if empty), and ends it; the last body, which every
// later request is served too, it holds open until the test ends. It
// returns its URL.
func newFakeTier(t *testing.T, via string, bodies ...string) string {
	t.Helper()
	done := make(chan struct{})
	var served atomic.Int64
	srv := testkit.NewServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if via != "" {
			w.Header().Set("Via", via)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		n := min(int(served.Add(1))-1, len(bodies)-1)
		io.WriteString(w, bodies[n])
		http.NewResponseController(w).Flush()
		if n < len(bodies)-1 {
			return
		}
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	return srv.URL
}

func TestEdgeResumeAtTheShieldAddsNoBlock(t *testing.T) {
	// The edge's upstream goes silent and reconnects with its cursor; the
	// shield has nothing to replay. No block reaches the edge's clients:
	// a priming block would become a frame of the edge's stream.
	tr := startTiers(t, "heartbeat off", "upstream_timeout 300ms")
	c := testkit.OpenClient(t, tr.edge+"/resume", nil)
	up := tr.origin.NextConn(t)
	testkit.SendIDs(up, 1, 3)
	for _, id := range []string{"1", "2", "3"} {
		if ev := c.NextEvent(t); ev.ID != id || !ev.HasData {
			t.Fatalf("got %+v, want event %s", ev, id)
		}
	}
	testkit.Eventually(t, "the edge to reconnect to the shield", func() bool {
		st, ok := statusOf(t, tr.shield, "/resume")
		return ok && st.UpstreamConnect >= 2 && st.UpstreamState == stateConnected
	})
	testkit.SendIDs(up, 4, 4)
	if ev := c.NextEvent(t); ev.ID != "4" || !ev.HasData {
		t.Fatalf("got %+v, want event 4 and no block before it", ev)
	}
}

func TestViaMarks(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   []string
	}{
		{[]string{"1.1 edge-1 (sse_fanout)"}, []string{"edge-1"}},
		{[]string{"1.0 fred, 1.1 a (sse_fanout)", "HTTP/2 b  (sse_fanout) , 1.1 Caddy"}, []string{"a", "b"}},
		{[]string{"1.1 x (comment, 1.1 hidden (sse_fanout))"}, nil}, // inside another entry's comment
		{[]string{"1.1 (sse_fanout)", "1.1 bad,name (sse_fanout)", "1.1 c (sse_fanout) extra", "1.1 d"}, nil},
		{[]string{strings.Repeat("1.1 n (sse_fanout),", 10)}, []string{"n", "n", "n", "n"}}, // at most maxViaMarks
	} {
		if got := viaMarks(tc.values, maxViaMarks); !slices.Equal(got, tc.want) {
			t.Errorf("viaMarks(%q) = %q, want %q", tc.values, got, tc.want)
		}
	}
}

// TestEdgeMultiplexesStreamsItReadsFromTheShield has an edge that
// multiplexes serve a page whose members it reads from the shield, which
// does not multiplex: the edge asks the shield for each member's stream
// as any stream, so the shield has one ordinary stream per member, whose
// one client is the edge, and the page gets every member's events.
func TestEdgeMultiplexesStreamsItReadsFromTheShield(t *testing.T) {
	tr := startTiers(t, "", "multiplex_param streams\n\t\tmultiplex_members /events/*")
	names := []string{"a", "b", "c"}
	page := testkit.OpenClient(t, muxURL(tr.edge, names...), nil)
	conns := memberConns(t, tr.origin, len(names))
	from, to := make(map[string]int), make(map[string]int)
	for _, name := range names {
		if conns[name] == nil {
			t.Fatalf("the origin has no connection for the member %s: %v", name, conns)
		}
		testkit.SendIDs(conns[name], 1, 3)
		from[name], to[name] = 1, 3
	}
	expectMux(t, page, names, from, to)

	for _, name := range names {
		key := "/events/" + name
		edge, ok := statusOf(t, tr.shield, key)
		if !ok || edge.UpstreamURL != tr.shield+key || edge.UpstreamConnect != 1 || edge.UpstreamTier != "shield" || edge.Clients != 1 {
			t.Errorf("the edge's stream %s: %+v, want one upstream request, for %s%s, answered by the shield, and the page as its client", key, edge, tr.shield, key)
		}
		shield, ok := statusOf(t, tr.origin.URL(), key)
		if !ok || shield.Node != "shield" || shield.Clients != 1 {
			t.Errorf("the shield's stream %s: %+v, want one, with the edge as its one client", key, shield)
		}
	}
	if n := openStreams(); n != 2*len(names) {
		t.Errorf("%d streams open, want %d: one per member at each tier, and none for the page's own URL", n, 2*len(names))
	}
	tr.origin.NoNewConn(t)
}
