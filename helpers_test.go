package ssefanout

// Helpers that several test files use; the rest is in internal/testkit.

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	runCaddyIfAsked() // fleet_test.go: the binary as the caddy command
	testkit.Main(m)
}

// newTestStream returns a stream, not started, of a registry of its own
// with the given settings.
func newTestStream(cfg *settings) *stream {
	r := newRegistry(cfg, "test", "")
	return newStream(&r.hub, streamRequest{key: "/t", label: "/t", upstreamURL: "http://127.0.0.1:1/t"})
}

// addClient adds a client to s with no cursor, as join would.
func addClient(s *stream) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(s.hub.settings.Load(), streamRequest{}, nil)
}

// counterValue reads the named metric of an upstream.
func counterValue(t testing.TB, upstream string, name string) float64 {
	t.Helper()
	m := newUpstreamMetrics(upstream)
	collector, ok := map[string]prometheus.Collector{
		"clients":               m.clients,
		"streams":               m.streams,
		"events_received":       m.eventsReceived,
		"events_sent":           m.eventsSent,
		"slow_client_drops":     m.slowClientDrops,
		"upstream_connects":     m.upstreamConnects,
		"upstream_errors":       m.upstreamErrors,
		"replay_hits":           m.replayHits,
		"replay_misses":         m.replayMisses,
		"catch_ups":             m.catchUps,
		"catch_ups_refused":     m.catchUpsRefused,
		"refused_full":          m.refusedFull,
		"refused_streams":       m.refusedStreams,
		"refused_loop":          m.refusedLoop,
		"upstream_tier_streams": m.upstreamTierStreams,
		"events_filtered":       m.eventsFiltered,
		"events_rewound":        m.eventsRewound,
	}[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return testutil.ToFloat64(collector)
}

// detachedClients counts the clients that shared writers serve, over every
// live registry.
func detachedClients() int {
	n := 0
	registries.Range(func(_, value any) bool {
		for _, st := range value.(*registry).statuses() {
			n += st.DetachedClients
		}
		return true
	})
	return n
}

// openStreams counts the streams of every live registry.
func openStreams() int {
	n := 0
	registries.Range(func(_, value any) bool {
		n += len(value.(*registry).statuses())
		return true
	})
	return n
}

// publishTo publishes ev on s as its upstream reader would.
func publishTo(s *stream, ev *sse.Event) {
	s.publish(ev, &resend{})
}

// testSettings returns defaults as Provision would resolve them.
func testSettings() *settings {
	h := &Handler{logger: zap.NewNop()}
	return h.settings()
}

// sameEvent reports whether two events look the same to an EventSource.
func sameEvent(a, b sse.Event) bool {
	return a.Type == b.Type && a.Data == b.Data && a.HasData == b.HasData && a.ID == b.ID
}

// seenEvent is what an EventSource reports of one fired event.
type seenEvent struct{ typ, data, lastEventID string }

func (e seenEvent) String() string {
	return fmt.Sprintf("(%q, %q, id %q)", e.typ, e.data, e.lastEventID)
}

// readFired reads n fired events from c, as an EventSource reports them.
func readFired(t *testing.T, c *testkit.Client, n int) []seenEvent {
	t.Helper()
	var got []seenEvent
	for len(got) < n {
		ev := c.NextData(t)
		got = append(got, seenEvent{ev.Type, ev.Data, ev.ID})
	}
	return got
}

func sameSeen(a, b []seenEvent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// rawClient is an SSE client on a bare TCP connection, to see the bytes on
// the wire: the response head, then the body as it comes.
type rawClient struct {
	conn   net.Conn
	r      *bufio.Reader
	status string
	header http.Header
}

// dialRaw sends a GET for path over HTTP/1.1 and reads the response head.
func dialRaw(t *testing.T, base, path string, headers ...string) *rawClient {
	t.Helper()
	conn := rawDial(t, base, path, headers...)
	conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
	rc := &rawClient{conn: conn, r: bufio.NewReader(conn), header: make(http.Header)}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the status line: %v", err)
	}
	rc.status = strings.TrimSpace(line)
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the header: %v", err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return rc
		}
		name, value, _ := strings.Cut(line, ":")
		rc.header.Add(name, strings.TrimSpace(value))
	}
}

// readEvent parses the next event that carries data from the body.
func (rc *rawClient) readEvent(t *testing.T) sse.Event {
	t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
	p := sse.NewParser(rc.r, 16<<20)
	for {
		ev, err := p.Next()
		if err != nil {
			t.Fatalf("reading an event: %v", err)
		}
		if ev.HasData {
			return ev
		}
	}
}

// rawDial sends a GET for path, with the given header lines ("Name:
// value"), on a bare TCP connection, and returns the connection.
func rawDial(t *testing.T, base, path string, headers ...string) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var extra strings.Builder
	for _, h := range headers {
		extra.WriteString(h + "\r\n")
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n", path, addr, extra.String())
	return conn
}

// startHTTP2Caddy starts Caddy serving sse_fanout on origin over HTTPS,
// with HTTP/2 and HTTP/1.1, and the subdirectives given (one per line,
// none if empty). It returns the server's address and a client that speaks
// HTTP/2 to it.
func startHTTP2Caddy(t testing.TB, origin string, subdirectives string) (string, *http.Client) {
	t.Helper()
	port := testkit.FreePort(t)
	block := ""
	if subdirectives != "" {
		block = " {\n\t\t" + strings.ReplaceAll(subdirectives, "\n", "\n\t\t") + "\n\t}"
	}
	testkit.StartWholeCaddyfile(t, testkit.TLSGlobalOptions("h1 h2")+fmt.Sprintf(
		"https://127.0.0.1:%d {\n\tbind 127.0.0.1\n\ttls internal\n\tsse_fanout %s%s\n}\n", port, origin, block))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testkit.WaitCertificate(t, addr)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return addr, &http.Client{Transport: tr}
}
