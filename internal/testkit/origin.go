package testkit

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// This file is the scriptable origin: each upstream request becomes an
// OriginConn that the test writes to.

// Origin is a scriptable SSE origin on 127.0.0.1.
type Origin struct {
	srv   *httptest.Server // replaced by Restart; only the test's goroutine touches it
	conns chan *OriginConn // every accepted SSE connection, in order

	// Total counts the requests seen.
	Total atomic.Int64
	// ContentType, when set to a non-empty string, replaces
	// text/event-stream, and the answer is not a stream.
	ContentType atomic.Value
	// Status is the status to answer; 0 means 200 and a stream.
	Status atomic.Int64

	mu        sync.Mutex
	onRequest func()                  // if set, called on every request
	answer    func(*http.Request) int // if set, a status to answer instead of a stream
}

// OriginConn is one upstream connection as the origin sees it.
type OriginConn struct {
	Path   string // request URI
	Header http.Header
	// End, closed, ends the response from the origin's side.
	End    chan struct{}
	out    chan string   // raw bytes for the origin to write
	closed chan struct{} // closed once the response is over, whoever ended it
}

// NewOrigin starts an origin; the test's cleanup stops it.
func NewOrigin(t testing.TB) *Origin {
	t.Helper()
	o := &Origin{conns: make(chan *OriginConn, 1000)}
	o.srv = NewServer(t, o)
	t.Cleanup(func() { o.srv.Close() }) // the server of the moment: Restart replaces it
	return o
}

// Restart has the origin go away and come back, as a process that is
// restarted does: its listener closes and every connection on it is cut,
// so that a proxy's attempts meanwhile are refused; then down runs, and
// the origin listens again on the same address, with the same state
// (Status, the hooks, the connections the test has not taken).
func (o *Origin) Restart(t testing.TB, down func()) {
	t.Helper()
	addr := o.srv.Listener.Addr().String()
	o.srv.Listener.Close()
	o.srv.CloseClientConnections()
	o.srv.Close() // waits for the handlers to return
	down()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the origin listening again on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(o)
	srv.Listener.Close() // the one it made, on a port of its own
	srv.Listener = ln
	srv.Start()
	o.srv = srv
}

// URL is the origin's base URL.
func (o *Origin) URL() string { return o.srv.URL }

// SetOnRequest makes the origin call f at the start of every request.
func (o *Origin) SetOnRequest(f func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.onRequest = f
}

// SetAnswer makes the origin ask f, for every request, for a status to
// answer instead of a stream (an empty body); 0 serves it as Status and
// ContentType say. A test uses it to refuse some requests only, such as
// those that carry a Last-Event-ID.
func (o *Origin) SetAnswer(f func(r *http.Request) int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.answer = f
}

// ServeHTTP answers a request as Status and ContentType say; a stream is
// an OriginConn, handed to the test by NextConn.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.Total.Add(1)
	o.mu.Lock()
	hook, answer := o.onRequest, o.answer
	o.mu.Unlock()
	if hook != nil {
		hook()
	}
	if answer != nil {
		if st := answer(r); st != 0 {
			w.WriteHeader(st)
			return
		}
	}
	if st := o.Status.Load(); st != 0 {
		w.WriteHeader(int(st))
		return
	}
	if ct, _ := o.ContentType.Load().(string); ct != "" {
		w.Header().Set("Content-Type", ct)
		io.WriteString(w, "<p>not a stream</p>")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	c := &OriginConn{
		Path:   r.URL.RequestURI(),
		Header: r.Header.Clone(),
		End:    make(chan struct{}),
		out:    make(chan string, 10000),
		closed: make(chan struct{}),
	}
	defer close(c.closed)
	o.conns <- c
	for {
		select {
		case s := <-c.out:
			if _, err := io.WriteString(w, s); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-c.End:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// NextConn waits for the origin's next SSE connection.
func (o *Origin) NextConn(t testing.TB) *OriginConn {
	t.Helper()
	select {
	case c := <-o.conns:
		return c
	case <-time.After(WaitTimeout):
		t.Fatal("origin got no connection")
		return nil
	}
}

// NextConnOr waits for the origin's next SSE connection until done is
// closed, and then returns nil: for a goroutine of a test that serves
// connections as they come, which must not call t.Fatal.
func (o *Origin) NextConnOr(done <-chan struct{}) *OriginConn {
	select {
	case c := <-o.conns:
		return c
	case <-done:
		return nil
	}
}

// NextStreamAndCatchUp waits for the origin's next two connections: a
// stream's own, which carries no Last-Event-ID, and a client's catch-up,
// which carries cursor, in whichever order they come, and fails unless
// they are those two.
func (o *Origin) NextStreamAndCatchUp(t testing.TB, cursor string) (stream, catchUp *OriginConn) {
	t.Helper()
	stream, catchUp = o.NextConn(t), o.NextConn(t)
	if stream.Header.Get("Last-Event-ID") != "" {
		stream, catchUp = catchUp, stream
	}
	if got, ok := stream.Header["Last-Event-Id"]; ok {
		t.Fatalf("the stream's own upstream request asked with Last-Event-ID %q, want none", got)
	}
	if got := catchUp.Header.Get("Last-Event-ID"); got != cursor {
		t.Fatalf("the catch-up asked with Last-Event-ID %q, want %q", got, cursor)
	}
	return stream, catchUp
}

// NoNewConn fails if the origin has a connection the test has not taken.
func (o *Origin) NoNewConn(t testing.TB) {
	t.Helper()
	select {
	case c := <-o.conns:
		t.Fatalf("origin got an unexpected connection for %s", c.Path)
	default:
	}
}

// Drain lets go of every connection the test has not taken, and returns
// how many there were: a test that has the proxy open many streams and
// takes none keeps each one's write queue otherwise.
func (o *Origin) Drain() int {
	for n := 0; ; n++ {
		select {
		case <-o.conns:
		default:
			return n
		}
	}
}

// Send has the origin write s on the connection.
func (c *OriginConn) Send(s string) { c.out <- s }

// WaitClosed waits until the connection is over.
func (c *OriginConn) WaitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(WaitTimeout):
		t.Fatalf("upstream connection for %s was not closed", c.Path)
	}
}

// SendIDs has the origin send events from to to, each with its number as
// id and "event N" as data.
func SendIDs(up *OriginConn, from, to int) {
	for i := from; i <= to; i++ {
		up.Send(fmt.Sprintf("id: %d\ndata: event %d\n\n", i, i))
	}
}

// script is a stream with the shapes that trip proxies up, and the
// events an EventSource reads from it.
var script = []struct {
	raw  string
	want []sse.Event
}{
	{": hello, this comment is not forwarded\n\n", nil},
	{"data: first\n\n", []sse.Event{{Data: "first", HasData: true}}},
	{"event: update\r\ndata: {\"a\":1}\r\nid: 1\r\n\r\n", []sse.Event{{Type: "update", Data: `{"a":1}`, HasData: true, ID: "1", HasID: true}}},
	{"data: line one\ndata:line two\ndata\n\n", []sse.Event{{Data: "line one\nline two\n", HasData: true, ID: "1"}}},
	{"data:\n\n", []sse.Event{{Data: "", HasData: true, ID: "1"}}},
	{"id: 2\rdata:  leading space\r\r", []sse.Event{{Data: " leading space", HasData: true, ID: "2", HasID: true}}},
	{"event: ünïcödé\ndata: 日本語 ✓\nunknown: field\n\n", []sse.Event{{Type: "ünïcödé", Data: "日本語 ✓", HasData: true, ID: "2"}}},
	{"id: 3\n\n", []sse.Event{{ID: "3", HasID: true}}},
	{"event: ignored-no-data\nid: 4\n\n", []sse.Event{{Type: "ignored-no-data", ID: "4", HasID: true}}},
	{"id\ndata: cursor reset\n\n", []sse.Event{{Data: "cursor reset", HasData: true, ID: "", HasID: true}}},
}

// SendScript writes script, then n numbered events, and returns
// every event a client must read.
func SendScript(c *OriginConn, n int) []sse.Event {
	var want []sse.Event
	for _, step := range script {
		c.Send(step.raw)
		want = append(want, step.want...)
	}
	for i := 1; i <= n; i++ {
		c.Send(fmt.Sprintf("id: n%d\ndata: event %d\n\n", i, i))
		want = append(want, sse.Event{Data: fmt.Sprintf("event %d", i), HasData: true, ID: fmt.Sprintf("n%d", i), HasID: true})
	}
	return want
}

// NewServer starts an httptest server of h at an address no earlier
// server or origin of this process had (as NewOrigin); the test's cleanup
// stops it.
func NewServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close() // the one it made, at an address perhaps used before
	srv.Listener = listenFresh(t)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}
