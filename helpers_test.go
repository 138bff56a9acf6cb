package ssefanout

// Helpers that several test files use; the rest is in internal/testkit.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
	"go.uber.org/zap"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

// eachLiveStream calls f for every stream of every live registry, with
// the registry's lock held.
func eachLiveStream(f func(s *stream)) {
	registries.Range(func(_, value any) bool {
		r := value.(*registry)
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.streams {
			f(s)
		}
		return true
	})
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
	return startHTTP2CaddyWith(t, testkit.TLSGlobalOptions("h1 h2"), origin, subdirectives)
}

// startHTTP2CaddyWith is startHTTP2Caddy under the given global options,
// such as TLSGlobalOptionsLoggingTo's; their protocols must include h2.
func startHTTP2CaddyWith(t testing.TB, global, origin string, subdirectives string) (string, *http.Client) {
	t.Helper()
	port := testkit.FreePort(t)
	block := ""
	if subdirectives != "" {
		block = " {\n\t\t" + strings.ReplaceAll(subdirectives, "\n", "\n\t\t") + "\n\t}"
	}
	testkit.StartWholeCaddyfile(t, global+fmt.Sprintf(
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

// goroutinesButHTTPClientConns counts the goroutines but the read and
// write loops of HTTP client connections: the proxy's upstream transport
// keeps up to 16 idle connections per origin (upstream.go) after answers
// such as a refused catch-up's, and closes them on its own time.
func goroutinesButHTTPClientConns() int {
	buf := make([]byte, 4<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
		if !bytes.Contains(g, []byte("net/http.(*persistConn)")) {
			count++
		}
	}
	return count
}

// closeIdleUpstreamConns closes the idle connections of every registry's
// upstream transport, so that their goroutines, and the origin's at their
// other end, end.
func closeIdleUpstreamConns() {
	registries.Range(func(_, value any) bool {
		value.(*registry).upstream.CloseIdleConnections()
		return true
	})
}

// h2Conn is one HTTP/2 connection to Caddy over TLS, spoken frame by frame
// with x/net/http2's Framer, as an attacker would: streams opened and reset
// at will, whatever the server advertised. A goroutine of its own reads
// what the server sends and keeps count.
type h2Conn struct {
	t    *testing.T
	conn *tls.Conn
	base string // the :authority

	wmu  sync.Mutex // one writer at a time, headers encoded in wire order
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder

	settings   chan uint32   // the server's SETTINGS_MAX_CONCURRENT_STREAMS, once
	pings      chan [8]byte  // the server's PING acknowledgements
	readerDone chan struct{} // closed when the reader returns
	responses  atomic.Int64  // HEADERS frames the server answered with
	resets     atomic.Int64  // RST_STREAM frames the server sent
	goAway     atomic.Value  // the GOAWAY's http2.ErrCode, if one came
}

// dialH2 opens an HTTP/2 connection to addr, sends the preface and a
// window big enough that the server never waits on flow control, and waits
// for the server's SETTINGS.
func dialH2(t *testing.T, addr string) (*h2Conn, uint32) {
	t.Helper()
	dialer := &net.Dialer{Timeout: testkit.WaitTimeout}
	conn, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		conn.Close()
		t.Fatalf("negotiated %q, want h2", p)
	}
	conn.SetDeadline(time.Now().Add(3 * testkit.WaitTimeout)) // nothing here outlives the test
	c := &h2Conn{t: t, conn: conn, base: addr, settings: make(chan uint32, 1), pings: make(chan [8]byte, 1), readerDone: make(chan struct{})}
	c.fr = http2.NewFramer(conn, conn)
	c.enc = hpack.NewEncoder(&c.hbuf)
	t.Cleanup(c.close)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.write(func() error {
		return c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	})
	c.write(func() error { return c.fr.WriteWindowUpdate(0, 1<<31-1-65535) })
	go c.read()
	select {
	case n := <-c.settings:
		return c, n
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("the server sent no SETTINGS")
		return nil, 0
	}
}

// write runs one framer write under the write lock; a write error means
// the server closed the connection, which the caller learns from the reader.
func (c *h2Conn) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return f()
}

// open sends a GET for path on stream id, with END_STREAM.
func (c *h2Conn) open(id uint32, path string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", c.base}, {":path", path}, {"accept", "text/event-stream"}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

// reset sends RST_STREAM CANCEL on stream id.
func (c *h2Conn) reset(id uint32) error {
	return c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeCancel) })
}

// read counts the server's frames until the connection ends, acknowledging
// its SETTINGS and PINGs.
func (c *h2Conn) read() {
	defer close(c.readerDone)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			n, ok := f.Value(http2.SettingMaxConcurrentStreams)
			if !ok {
				n = math.MaxUint32 // unlimited, as the spec says
			}
			select {
			case c.settings <- n:
			default:
			}
			c.write(c.fr.WriteSettingsAck)
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
				continue
			}
			select {
			case c.pings <- f.Data:
			default:
			}
		case *http2.HeadersFrame:
			c.responses.Add(1)
		case *http2.RSTStreamFrame:
			c.resets.Add(1)
		case *http2.GoAwayFrame:
			c.goAway.Store(f.ErrCode)
		}
	}
}

// sync waits until the server has acknowledged a PING sent after every
// frame so far: it has read and acted on them all, in order. It reports
// false if the connection ended first.
func (c *h2Conn) sync() bool {
	data := [8]byte{'s', 'y', 'n', 'c'}
	if c.write(func() error { return c.fr.WritePing(false, data) }) != nil {
		return false
	}
	select {
	case got := <-c.pings:
		return got == data
	case <-c.readerDone:
		return false
	case <-time.After(testkit.WaitTimeout):
		c.t.Fatal("the server did not acknowledge a PING")
		return false
	}
}

// close ends the connection and waits for the reader.
func (c *h2Conn) close() {
	c.conn.Close()
	<-c.readerDone
}

// broadcaster is a bench of clients and their writers (fanOutBench,
// detachedBench) that publishes one event to all of them.
type broadcaster interface {
	broadcast(ev *sse.Event)
	close()
}

// allocsPerClient publishes benchEvent through a bench of 10 clients and
// one of 1,000, each made by open, warm times first (to size the writers'
// buffers) and then runs times measured, and fails, naming what, if the
// many allocate more per event than the few: encoding is once per event,
// and a client's share must allocate nothing. A margin of 2 absorbs the
// runtime's own stray allocations; one allocation per client per event
// would show as 990.
func allocsPerClient(t *testing.T, what string, warm, runs int, open func(n int) broadcaster) {
	t.Helper()
	allocs := func(n int) float64 {
		b := open(n)
		ev := benchEvent
		for range warm {
			b.broadcast(&ev)
		}
		a := testing.AllocsPerRun(runs, func() { b.broadcast(&ev) })
		b.close()
		return a
	}
	// The count is the process's: a goroutine left by an earlier test
	// that allocates meanwhile adds to it, and more to the longer runs
	// with 1,000 clients. A cost per client shows in every try; such
	// noise does not, so the best of three tries is taken.
	var few, many float64
	for range 3 {
		few, many = allocs(10), allocs(1000)
		t.Logf("%s: allocations per event: %.0f with 10 clients, %.0f with 1,000", what, few, many)
		if many <= few+2 {
			return
		}
	}
	t.Errorf("%s: publishing one event allocates %.0f times with 1,000 clients and %.0f with 10, in each of three tries: something allocates per client", what, many, few)
}
