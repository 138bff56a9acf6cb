package ssefanout

// The adversarial layer (issue 10), at the HTTP level: hostile clients and
// careless origins. Each case asserts that no client sees bytes the origin
// did not send for it, that the stream keeps flowing, and that streams,
// catch-ups and goroutines stay within their bounds.

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
	"golang.org/x/net/http2"
)

// hostileConfig bounds what clients can make the proxy do, small enough
// to reach in a test.
const hostileConfig = `{
	buffer 4
	client_queue 8
	idle_close 0
	max_streams 20
	max_catch_ups 2 4
}`

func TestHostileClients(t *testing.T) {
	for _, tc := range []struct {
		name string
		// attack runs against the proxy's base URL while a witness reads
		// /h; it may assert on what the attacker itself gets.
		attack func(t *testing.T, base string, origin *testkit.Origin)
	}{
		{"cursors with CR, LF or NUL are refused", func(t *testing.T, base string, _ *testkit.Origin) {
			for _, q := range []string{
				"last_event_id=1%0D%0Aevent:%20pwn%0D%0Adata:%20x%0D%0A%0D%0A",
				"last_event_id=%0A%0Adata:%20x",
				"last_event_id=a%00b",
				"last%5Fevent%5Fid=%0Adata:%20x",
				"LAST_EVENT_ID=%0Adata:%20x&last_event_id=%0D",
			} {
				if _, status := testkit.DialClient(t, base+"/h?"+q, nil); status != http.StatusBadRequest {
					t.Fatalf("?%s: status %d, want 400", q, status)
				}
			}
		}},
		{"huge, odd and invalid UTF-8 cursors are served alone", func(t *testing.T, base string, _ *testkit.Origin) {
			for _, h := range []http.Header{
				testkit.LastEventID(strings.Repeat("7", 16<<10)),
				testkit.LastEventID("\xff\xfe\xfd"),
				testkit.LastEventID("a\tb c"),
			} {
				c := testkit.OpenClient(t, base+"/h", h)
				c.Close()
			}
			c := testkit.OpenClient(t, base+"/h?last_event_id="+strings.Repeat("8", 8<<10), nil)
			c.Close()
		}},
		{"a query that tries a header on the upstream request", func(t *testing.T, base string, origin *testkit.Origin) {
			c := testkit.OpenClient(t, base+"/h2?x=%0D%0AInjected:%201", nil)
			up := origin.NextConn(t)
			if up.Header.Get("Injected") != "" {
				t.Fatal("a client's query became an upstream header")
			}
			c.Close()
		}},
		{"thousands of distinct query strings", func(t *testing.T, base string, origin *testkit.Origin) {
			var held []*rawClient
			refused := 0
			for i := 0; i < 1000; i++ {
				rc := dialRaw(t, base, "/q?n="+strconv.Itoa(i))
				switch rc.status {
				case "HTTP/1.1 200 OK":
					held = append(held, rc)
				case "HTTP/1.1 503 Service Unavailable":
					refused++
					rc.conn.Close()
				default:
					t.Fatalf("status %q", rc.status)
				}
				if i == 500 { // let the held ones go: idle streams give way
					for _, rc := range held {
						rc.conn.Close()
					}
					held = nil
				}
				if n := openStreams(); n > 20 {
					t.Fatalf("%d streams open, max_streams is 20", n)
				}
			}
			if refused == 0 {
				t.Fatal("no request was refused past max_streams")
			}
			for _, rc := range held {
				rc.conn.Close()
			}
		}},
		{"thousands of distinct cursors", func(t *testing.T, base string, origin *testkit.Origin) {
			before := origin.Total.Load()
			var held []*rawClient
			for i := 0; i < 1000; i++ {
				rc := dialRaw(t, base, "/h", "Last-Event-ID: bogus-"+strconv.Itoa(i))
				if rc.status != "HTTP/1.1 200 OK" {
					t.Fatalf("status %q", rc.status)
				}
				held = append(held, rc)
			}
			// The origin holds every catch-up open, so none ends early.
			if n := origin.Total.Load() - before; n > 2 {
				t.Fatalf("%d catch-up requests for one stream, max_catch_ups is 2", n)
			}
			for _, rc := range held {
				rc.conn.Close()
			}
		}},
		{"a client that sends data after its request", func(t *testing.T, base string, _ *testkit.Origin) {
			conn := rawDial(t, base, "/h")
			io.WriteString(conn, "event: pwn\ndata: INJECTED\n\n")
			conn.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" "+hostileConfig)
			witness := testkit.OpenClient(t, base+"/h", nil)
			up := origin.NextConn(t)
			testkit.SendIDs(up, 1, 2)
			witness.ExpectIDs(t, 1, 2)
			runtime.GC()
			goroutines := runtime.NumGoroutine()

			tc.attack(t, base, origin)

			testkit.SendIDs(up, 3, 5)
			up.Send("id: end\ndata: end\n\n")
			want := []seenEvent{{"", "event 3", "3"}, {"", "event 4", "4"}, {"", "event 5", "5"}, {"", "end", "end"}}
			if got := readFired(t, witness, len(want)); !sameSeen(got, want) {
				t.Fatalf("the witness saw %v, want %v", got, want)
			}
			testkit.Eventually(t, "goroutines to come back", func() bool {
				return runtime.NumGoroutine() <= goroutines+4
			})
		})
	}
}

// oddOrigin serves each upstream request with the next step of a script.
type oddOrigin struct {
	srv   *httptest.Server
	steps []func(w http.ResponseWriter, r *http.Request)
	n     atomic.Int64
	hold  chan struct{} // closed at the end of the test: held responses end
}

func newOddOrigin(t *testing.T, steps ...func(w http.ResponseWriter, r *http.Request)) *oddOrigin {
	t.Helper()
	o := &oddOrigin{steps: steps, hold: make(chan struct{})}
	o.srv = testkit.NewServer(t, o)
	t.Cleanup(func() {
		close(o.hold)
		o.srv.Close()
	})
	return o
}

func (o *oddOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(o.n.Add(1)) - 1
	if i < len(o.steps) {
		o.steps[i](w, r)
		return
	}
	// Past the script: an open stream with nothing to say.
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	select {
	case <-o.hold:
	case <-r.Context().Done():
	}
}

// sends answers with an event stream of the given blocks, then ends it.
func sends(blocks ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, b := range blocks {
			io.WriteString(w, b)
			http.NewResponseController(w).Flush()
		}
	}
}

func TestOddOrigins(t *testing.T) {
	byteByByte := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, b := range []byte("event: t\ndata: a\nid: 1\n\ndata: b\n\n") {
			w.Write([]byte{b})
			http.NewResponseController(w).Flush()
		}
	}
	resetEveryEvent := func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
		sends(fmt.Sprintf("retry: 1\nid: %d\ndata: e%d\n\n", n+1, n+1))(w, r)
	}
	var reset []func(http.ResponseWriter, *http.Request)
	for i := 0; i < 5; i++ {
		reset = append(reset, resetEveryEvent)
	}
	for _, tc := range []struct {
		name    string
		options string
		steps   []func(w http.ResponseWriter, r *http.Request)
		want    []seenEvent
	}{
		{"the same id on every event", "", []func(http.ResponseWriter, *http.Request){
			sends("id: v1\ndata: 1\n\n", "id: v1\ndata: 2\n\n"),
			sends("id: v1\ndata: 3\n\n", "data: 4\n\n"),
		}, []seenEvent{{"", "1", "v1"}, {"", "2", "v1"}, {"", "3", "v1"}, {"", "4", "v1"}}},
		{"cycling ids", "", []func(http.ResponseWriter, *http.Request){
			sends("id: 0\ndata: 1\n\n", "id: 1\ndata: 2\n\n", "id: 0\ndata: 3\n\n"),
			sends("id: 1\ndata: 4\n\n", "id: 0\ndata: 5\n\n"),
		}, []seenEvent{{"", "1", "0"}, {"", "2", "1"}, {"", "3", "0"}, {"", "4", "1"}, {"", "5", "0"}}},
		{"counting again from 1 after a restart", "", []func(http.ResponseWriter, *http.Request){
			sends("id: 1\ndata: a\n\n", "id: 2\ndata: b\n\n"),
			sends("id: 1\ndata: c\n\n", "id: 2\ndata: d\n\n"),
		}, []seenEvent{{"", "a", "1"}, {"", "b", "2"}, {"", "c", "1"}, {"", "d", "2"}}},
		{"no ids at all", "", []func(http.ResponseWriter, *http.Request){
			sends("data: x1\n\n", "data: x2\n\n"),
			sends("data: y1\n\n", "data: y2\n\n"),
		}, []seenEvent{{"", "x1", ""}, {"", "x2", ""}, {"", "y1", ""}, {"", "y2", ""}}},
		{"a stream, then not an event stream, then one again", "", []func(http.ResponseWriter, *http.Request){
			sends("id: 0\ndata: before\n\n"),
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "data: <p>not a stream</p>\n\n")
			},
			sends("id: 1\ndata: ok\n\n"),
		}, []seenEvent{{"", "before", "0"}, {"", "ok", "1"}}},
		{"gzip, which the proxy asks for", "", []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) {
				if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
					sends("id: 1\ndata: not asked for gzip\n\n")(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", "gzip")
				zw := gzip.NewWriter(w)
				io.WriteString(zw, "id: 1\ndata: unzipped\n\n")
				zw.Close()
			},
		}, []seenEvent{{"", "unzipped", "1"}}},
		{"a stream, then an encoding it was not asked for, then none", "", []func(http.ResponseWriter, *http.Request){
			sends("id: 0\ndata: before\n\n"),
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", "br") // bytes the proxy would read as text
				io.WriteString(w, "id: 1\ndata: read as text\n\n")
			},
			sends("id: 2\ndata: plain\n\n"),
		}, []seenEvent{{"", "before", "0"}, {"", "plain", "2"}}},
		{"a redirect within the origin", "", []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/moved", http.StatusFound) },
			sends("id: 1\ndata: moved\n\n"),
		}, []seenEvent{{"", "moved", "1"}}},
		{"one byte per write", "", []func(http.ResponseWriter, *http.Request){byteByByte},
			[]seenEvent{{"t", "a", "1"}, {"", "b", "1"}}},
		{"a connection that resets after every event", "", reset,
			[]seenEvent{{"", "e1", "1"}, {"", "e2", "2"}, {"", "e3", "3"}, {"", "e4", "4"}, {"", "e5", "5"}}},
		{"an event over max_event_size", "{\n\tmax_event_size 64KiB\n}", []func(http.ResponseWriter, *http.Request){
			sends("data: " + strings.Repeat("x", 100<<10) + "\n\n"),
			sends("id: 1\ndata: after\n\n"),
		}, []seenEvent{{"", "after", "1"}}},
		{"a BOM, bare CRs, invalid UTF-8 and an id with NUL", "", []func(http.ResponseWriter, *http.Request){
			sends("\xef\xbb\xbfdata: \xff\xfe\r\r", "id: a\x00b\rdata: c\r\r", "id: d\r\nevent: e\r\ndata: f\r\n\r\n"),
		}, []seenEvent{{"", "\xff\xfe", ""}, {"", "c", ""}, {"e", "f", "d"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOddOrigin(t, tc.steps...)
			base := testkit.StartCaddy(t, "sse_fanout "+o.srv.URL+" "+tc.options)
			c := testkit.OpenClient(t, base+"/odd", nil)
			if got := readFired(t, c, len(tc.want)); !sameSeen(got, tc.want) {
				t.Fatalf("the client saw %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzProxy drives the whole proxy: an origin that sends the fuzzed bytes,
// a client that joins with the fuzzed cursor and opens the stream, and a
// second client with no cursor. Each must see exactly the (type, data,
// lastEventId) sequence a browser would read from the origin directly,
// whatever the cursor holds: the first with its own cursor as its starting
// lastEventId, the second with none. Its seed corpus runs with the tests.
func FuzzProxy(f *testing.F) {
	for _, seed := range []struct{ body, cursor string }{
		{"data: a\n\n", ""},
		{"id: 1\ndata: a\n\ndata: b\n\n", "0"},
		{"data: no id\n\nid: 5\ndata: five\n\n", "999999999"},
		{"event: t\ndata: a\r\ndata: b\r\rid: \x00\ndata: c\n\n", "x"},
		{"retry: 10\n: comment\nid:\ndata: empty id\n\n", "y"},
		{"data: x\n\n", "x\nevent: pwn\ndata: INJECTED\n\n"},
		{"data: partial", "\xff"},
		{"\xef\xbb\xbfid: a\rdata: bom\r\r", strings.Repeat("z", maxCursorLen+1)},
	} {
		f.Add(seed.body, seed.cursor)
	}
	origin := &fuzzOrigin{bodies: make(map[string]string)}
	srv := testkit.NewServer(f, origin)
	defer srv.Close()
	port := testkit.FreePort(f)
	testkit.StartCaddyfile(f, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\tidle_close 0\n\t\tcatch_up off\n\t}\n}\n", port, srv.URL))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var n atomic.Int64

	f.Fuzz(func(t *testing.T, body, cursor string) {
		if len(body) > 16<<10 {
			return
		}
		path := "/fuzz/" + strconv.FormatInt(n.Add(1), 10)
		full := body + "\n\nid: fuzz-end\ndata: fuzz-end\n\n" // a last event, after whatever body left open
		if refusedByProxy(full) {
			return // on purpose: TestOriginIDOverCursorLimitBreaksUpstream
		}
		gate := make(chan struct{})
		origin.set(path, full, gate)

		header := http.Header{}
		if cursor != "" {
			header.Set("Last-Event-ID", cursor)
		}
		first, status := dialFuzzClient(t, base+path, header)
		if _, _, err := parseCursor(cursor); err != nil {
			if status != http.StatusBadRequest {
				t.Fatalf("cursor %q: status %d, want 400", cursor, status)
			}
			close(gate)
			return
		}
		if first == nil {
			t.Fatalf("status %d", status)
		}
		second := testkit.OpenClient(t, base+path, nil)
		close(gate) // both have joined: the origin speaks

		firstWant := browserView(full, cursor)
		secondWant := browserView(full, "")
		if got := readFired(t, first, len(firstWant)); !sameSeen(got, firstWant) {
			t.Fatalf("the client with the cursor saw %v, want %v", got, firstWant)
		}
		if got := readFired(t, second, len(secondWant)); !sameSeen(got, secondWant) {
			t.Fatalf("the client without one saw %v, want %v", got, secondWant)
		}
		first.Close()
		second.Close()
	})
}

// dialFuzzClient is dialClient for a header the transport may refuse.
func dialFuzzClient(t *testing.T, url string, header http.Header) (*testkit.Client, int) {
	t.Helper()
	if cursor := header.Get("Last-Event-ID"); cursor != "" {
		if _, _, err := parseCursor(cursor); err != nil {
			// No HTTP client sends that in a header; the query parameter can.
			return testkit.DialClient(t, url+"?last_event_id="+queryEscape(cursor), nil)
		}
	}
	return testkit.DialClient(t, url, header)
}

func queryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// refusedByProxy reports whether the proxy breaks the upstream connection
// on body where a browser reading the origin would go on: at an id longer
// than a client could resume from.
func refusedByProxy(body string) bool {
	p := newOriginParser(strings.NewReader(body), &settings{maxEventSize: 1 << 20})
	for {
		if _, err := p.Next(); err != nil {
			return errors.Is(err, sse.ErrIDTooLong)
		}
	}
}

// browserView is what an EventSource that starts with lastEventID fires
// while it reads body.
func browserView(body, lastEventID string) []seenEvent {
	p := sse.NewParser(strings.NewReader(body), 1<<20)
	p.SetLastID(lastEventID)
	var seen []seenEvent
	for {
		ev, err := p.Next()
		if err != nil {
			return seen
		}
		if ev.HasData {
			seen = append(seen, seenEvent{ev.Type, ev.Data, ev.ID})
		}
	}
}

// fuzzOrigin serves, for each path, its body once the gate is open, then
// holds the stream open; a reconnect gets an empty stream.
type fuzzOrigin struct {
	mu     sync.Mutex
	bodies map[string]string
	gates  map[string]chan struct{}
}

func (o *fuzzOrigin) set(path, body string, gate chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gates == nil {
		o.gates = make(map[string]chan struct{})
	}
	o.bodies[path], o.gates[path] = body, gate
}

func (o *fuzzOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	body, gate := o.bodies[r.URL.Path], o.gates[r.URL.Path]
	delete(o.bodies, r.URL.Path)
	o.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	io.WriteString(w, body)
	http.NewResponseController(w).Flush()
	select {
	case <-r.Context().Done():
	case <-time.After(testkit.WaitTimeout):
	}
}

// TestHTTP2StreamFloods opens thousands of streams on one HTTP/2
// connection, against a stream a witness reads over HTTP/1.1. Go's HTTP/2
// server, which Caddy uses (golang.org/x/net/http2 with its defaults),
// advertises SETTINGS_MAX_CONCURRENT_STREAMS 250 and runs at most that many
// handlers per connection: a stream past it is refused with RST_STREAM, and
// a client that resets streams faster than their handlers end has them
// queued, up to 4×250, then its connection closed with ENHANCE_YOUR_CALM.
// The proxy must hold its side: never more clients than the server lets
// handlers run, every client gone with its stream, goroutines and heap
// back where they were, and the witness served throughout by one upstream
// connection.
func TestHTTP2StreamFloods(t *testing.T) {
	const streams = 4000 // HEADERS frames sent on the one connection
	openAndReset := func(t *testing.T, c *h2Conn, n int, path func(id uint32) string) {
		sent := 0
		for id := uint32(1); sent < n; id += 2 {
			if c.open(id, path(id)) != nil || c.reset(id) != nil {
				break // the server closed the connection
			}
			sent++
		}
		c.sync() // the server has acted on every reset
		code, calmed := c.goAway.Load().(http2.ErrCode)
		t.Logf("%d streams opened and reset; GOAWAY %v (%v)", sent, calmed, code)
		if sent < n && !calmed {
			t.Fatalf("the connection failed after %d streams without a GOAWAY", sent)
		}
	}
	for _, tc := range []struct {
		name       string
		options    string
		maxStreams int // the handler's max_streams
		flood      func(t *testing.T, c *h2Conn, maxStreams uint32, upstream string)
	}{
		{"rapid open and reset", "", defaultMaxStreams, func(t *testing.T, c *h2Conn, _ uint32, _ string) {
			openAndReset(t, c, streams, func(uint32) string { return "/flood" })
		}},
		// Each reset stream asks for a stream of its own: max_streams
		// bounds how many the origin serves at once. (The origin's
		// NextConn queue holds 1000, so this flood stays under it.)
		{"rapid open and reset on distinct paths", "max_streams 20\nidle_close 0", 20, func(t *testing.T, c *h2Conn, _ uint32, _ string) {
			openAndReset(t, c, 600, func(id uint32) string { return "/flood?n=" + strconv.Itoa(int(id)) })
		}},
		{"thousands of streams held open", "", defaultMaxStreams, func(t *testing.T, c *h2Conn, maxStreams uint32, upstream string) {
			for i := range uint32(streams) {
				if err := c.open(2*i+1, "/flood"); err != nil {
					t.Fatalf("opening stream %d: %v", i, err)
				}
			}
			testkit.Eventually(t, "the server to answer or refuse every stream", func() bool {
				return c.responses.Load()+c.resets.Load() == streams
			})
			if got := c.responses.Load(); got != int64(maxStreams) {
				t.Fatalf("%d streams answered, want SETTINGS_MAX_CONCURRENT_STREAMS %d", got, maxStreams)
			}
			testkit.Eventually(t, "the answered streams to join", func() bool {
				return counterValue(t, upstream, "clients") == float64(maxStreams)+1
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			var witnessConns atomic.Int64 // upstream requests for the witness's stream
			origin.SetAnswer(func(r *http.Request) int {
				if r.URL.RequestURI() == "/flood" {
					witnessConns.Add(1)
				}
				return 0
			})
			addr, _ := startHTTP2Caddy(t, origin.URL(), tc.options)
			witness := testkit.OpenClient(t, "https://"+addr+"/flood", nil)
			up := origin.NextConn(t)
			testkit.SendIDs(up, 1, 2)
			witness.ExpectIDs(t, 1, 2)
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			// The proxy's upstream transport keeps idle connections to the
			// origin, each two goroutines, within its bound per host: they
			// are not the flood's.
			goroutines := goroutinesButHTTPClientConns()

			c, maxStreams := dialH2(t, addr)
			if maxStreams != 250 {
				t.Errorf("the server advertises %d concurrent streams; this test and the README say 250", maxStreams)
			}
			// Watch the stream's clients and the handler's streams while
			// the flood runs.
			var peakClients, peakStreams atomic.Int64
			stop, watched := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(watched)
				for {
					peakClients.Store(max(peakClients.Load(), int64(counterValue(t, origin.URL(), "clients"))))
					peakStreams.Store(max(peakStreams.Load(), int64(openStreams())))
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}()
			tc.flood(t, c, maxStreams, origin.URL())
			var during runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&during)
			t.Logf("after the flood, with the connection open: %d clients, %d goroutines more, heap in use %+d KiB",
				int(counterValue(t, origin.URL(), "clients")), goroutinesButHTTPClientConns()-goroutines, (int64(during.HeapInuse)-int64(before.HeapInuse))>>10)
			c.close()
			testkit.Eventually(t, "the flood's clients and streams to leave", func() bool {
				return counterValue(t, origin.URL(), "clients") == 1 && openStreams() == 1
			})
			close(stop)
			<-watched
			t.Logf("at most %d clients and %d streams at once (the witness's included); the origin saw %d requests",
				peakClients.Load(), peakStreams.Load(), origin.Total.Load())
			if peakClients.Load() > int64(maxStreams)+1 {
				t.Fatalf("%d clients at once, want at most %d HTTP/2 streams and the witness", peakClients.Load(), maxStreams)
			}
			if peakStreams.Load() > int64(tc.maxStreams) {
				t.Fatalf("%d streams at once, want at most max_streams %d", peakStreams.Load(), tc.maxStreams)
			}

			testkit.SendIDs(up, 3, 5)
			witness.ExpectIDs(t, 3, 5)
			if n := witnessConns.Load(); n != 1 {
				t.Fatalf("%d upstream requests for the witness's stream, want 1", n)
			}
			drained := 0
			testkit.Eventually(t, "the origin's other connections to be let go", func() bool {
				drained += origin.Drain()
				return int64(drained) == origin.Total.Load()-1
			})
			testkit.Eventually(t, "goroutines to come back", func() bool {
				// The connections to the origin that the proxy keeps idle
				// (up to 16) have a goroutine each at the origin's end:
				// they are the transport's, not the flood's.
				closeIdleUpstreamConns()
				return goroutinesButHTTPClientConns() <= goroutines+4
			})
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapInuse) - int64(before.HeapInuse)
			t.Logf("heap in use grew by %d KiB", growth>>10)
			if growth > 16<<20 {
				t.Fatalf("the heap grew by %d MiB after the flood, want at most 16 MiB", growth>>20)
			}
		})
	}
}
