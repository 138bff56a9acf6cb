package ssefanout

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/goleak"
)

// waitTimeout bounds every wait in these tests; nothing waits forever.
const waitTimeout = 10 * time.Second

// testLogLevel is the tests' Caddy log level; SSEFANOUT_TEST_LOG=DEBUG shows more.
var testLogLevel = cmp.Or(os.Getenv("SSEFANOUT_TEST_LOG"), "ERROR")

// caddyStorage is where the tests' Caddy keeps its state, instead of the
// user's data directory.
var caddyStorage string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssefanout-caddy-")
	if err != nil {
		panic(err)
	}
	caddyStorage = dir
	goleak.VerifyTestMain(m,
		goleak.Cleanup(func(exitCode int) {
			os.RemoveAll(dir)
			os.Exit(exitCode)
		}),
		// The HTTP/2 and keep-alive machinery of net/http winds down on its own.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// Caddy's storage cleaner holds a lock file for a moment after a
		// config starts; it is Caddy's, and it ends on its own.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	)
}

// testOrigin is a scriptable SSE origin on 127.0.0.1. Every upstream
// request becomes an originConn that the test writes to.
type testOrigin struct {
	srv   *httptest.Server
	conns chan *originConn // every accepted SSE connection, in order
	total atomic.Int64     // requests seen
	// contentType, when set to a non-empty string, replaces text/event-stream.
	contentType atomic.Value
	status      atomic.Int64 // status to answer; 0 means 200 and a stream
	mu          sync.Mutex
	headers     []http.Header // request headers, in order
	onRequest   func()        // if set, called on every request
}

// originConn is one upstream connection as the origin sees it.
type originConn struct {
	path   string // request URI
	header http.Header
	out    chan string   // raw bytes for the origin to write
	end    chan struct{} // close to end the response from the origin's side
	closed chan struct{} // closed once the response is over, whoever ended it
}

func newTestOrigin(t *testing.T) *testOrigin {
	t.Helper()
	o := &testOrigin{conns: make(chan *originConn, 1000)}
	o.srv = httptest.NewServer(o)
	t.Cleanup(o.srv.Close)
	return o
}

func (o *testOrigin) URL() string { return o.srv.URL }

func (o *testOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.total.Add(1)
	o.mu.Lock()
	o.headers = append(o.headers, r.Header.Clone())
	hook := o.onRequest
	o.mu.Unlock()
	if hook != nil {
		hook()
	}
	if st := o.status.Load(); st != 0 {
		w.WriteHeader(int(st))
		return
	}
	if ct, _ := o.contentType.Load().(string); ct != "" {
		w.Header().Set("Content-Type", ct)
		io.WriteString(w, "<p>not a stream</p>")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	c := &originConn{
		path:   r.URL.RequestURI(),
		header: r.Header.Clone(),
		out:    make(chan string, 10000),
		end:    make(chan struct{}),
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
		case <-c.end:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// nextConn waits for the origin's next SSE connection.
func (o *testOrigin) nextConn(t *testing.T) *originConn {
	t.Helper()
	select {
	case c := <-o.conns:
		return c
	case <-time.After(waitTimeout):
		t.Fatal("origin got no connection")
		return nil
	}
}

// noNewConn fails if the origin has a connection the test has not taken.
func (o *testOrigin) noNewConn(t *testing.T) {
	t.Helper()
	select {
	case c := <-o.conns:
		t.Fatalf("origin got an unexpected connection for %s", c.path)
	default:
	}
}

func (c *originConn) send(s string) { c.out <- s }

// waitClosed waits until the connection is over.
func (c *originConn) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(waitTimeout):
		t.Fatalf("upstream connection for %s was not closed", c.path)
	}
}

// startCaddy runs Caddy in this process with the given site body on a free
// 127.0.0.1 port, and returns the site's base URL. The test's cleanup stops it.
func startCaddy(t *testing.T, siteBody string) string {
	t.Helper()
	port := freePort(t)
	startCaddyfile(t, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, siteBody))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// startCaddyfile runs Caddy in this process with the given sites, under the
// tests' global options. The test's cleanup stops it.
func startCaddyfile(t testing.TB, sites string) {
	t.Helper()
	loadCaddyfile(t, testGlobalOptions()+sites)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		waitHandlersDone(t)
	})
}

// waitHandlersDone waits until no request is left in our handler: clients
// that a closing stream or an unloaded config spreads out may linger for a
// moment after Caddy stops, and the next test must not see them.
func waitHandlersDone(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("caddy-sse-fanout.(*Handler).ServeHTTP")) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("requests still in sse_fanout after Caddy stopped:\n%s", buf[:n])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testGlobalOptions keeps the tests' Caddy off the admin port, out of the
// user's data directory and quiet.
func testGlobalOptions() string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	log {
		level %s
	}
}
`, caddyStorage, testLogLevel)
}

// loadCaddyfile adapts and loads a whole Caddyfile, replacing the running config.
func loadCaddyfile(t testing.TB, caddyfile string) {
	t.Helper()
	if err := loadJSON(adaptCaddyfile(t, caddyfile)); err != nil {
		t.Fatalf("loading config: %v", err)
	}
}

// adaptCaddyfile adapts a whole Caddyfile to JSON, with detaching turned
// off where the run asks for that (detachInTests).
func adaptCaddyfile(t testing.TB, caddyfile string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			t.Logf("adapt warning: %s", w.String())
		}
	}
	if !detachInTests {
		cfg = withDetachOff(t, cfg)
	}
	return cfg
}

// loadJSON loads a JSON config, replacing the running one if it loads.
func loadJSON(cfg []byte) error { return caddy.Load(cfg, true) }

// detachInTests, when false, makes loadCaddyfile turn detaching off in
// every sse_fanout handler that does not set it, so that a test runs with
// every client served in its request goroutine. SSEFANOUT_TEST_DETACH=off
// sets it for a whole run; TestInRequestWriters, for a few tests.
var detachInTests = os.Getenv("SSEFANOUT_TEST_DETACH") != "off"

// withDetachOff sets "detach": false in every sse_fanout handler of a JSON
// config that has no detach of its own.
func withDetachOff(t testing.TB, cfg []byte) []byte {
	t.Helper()
	var tree any
	if err := json.Unmarshal(cfg, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if _, set := v["detach"]; v["handler"] == "sse_fanout" && !set {
				v["detach"] = false
			}
			for _, child := range v {
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(tree)
	out, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testClient is an SSE client reading a proxied stream with our parser in
// a goroutine of its own.
type testClient struct {
	resp       *http.Response
	events     chan Event
	keepalives chan struct{}
	ended      chan struct{} // closed when the reader returns
	err        error         // why the reader returned; read after ended
	cancel     context.CancelFunc
}

// httpClient is shared by the tests' SSE clients. It keeps no connection
// idle, so a test leaves nothing behind.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// openClient connects to url and fails the test unless it gets a stream.
func openClient(t *testing.T, url string, header http.Header) *testClient {
	t.Helper()
	c, status := dialClient(t, url, header)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, status)
	}
	return c
}

// dialClient connects to url; for a non-200 answer it returns the status
// and a nil client.
func dialClient(t *testing.T, url string, header http.Header) (*testClient, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	c := &testClient{
		resp:       resp,
		events:     make(chan Event, 100000),
		keepalives: make(chan struct{}, 1000),
		ended:      make(chan struct{}),
		cancel:     cancel,
	}
	t.Cleanup(c.close)
	go c.read(header.Get("Last-Event-ID"))
	return c, resp.StatusCode
}

// read parses the stream as an EventSource that reconnected with
// lastEventID would: the stream's events without an id carry it.
func (c *testClient) read(lastEventID string) {
	defer close(c.ended)
	body := io.TeeReader(c.resp.Body, &keepaliveSpotter{found: c.keepalives})
	p := newParser(body, 16<<20)
	p.setLastID(lastEventID)
	for {
		ev, err := p.next()
		if err != nil {
			c.err = err
			return
		}
		c.events <- ev
	}
}

// close disconnects the client and waits for its reader.
func (c *testClient) close() {
	c.cancel()
	<-c.ended
	c.resp.Body.Close()
}

// nextEvent returns the next block that fires an event or moves the cursor.
func (c *testClient) nextEvent(t *testing.T) Event {
	t.Helper()
	for {
		ev := c.nextBlock(t)
		if ev.HasData || ev.HasID {
			return ev
		}
	}
}

// nextBlock returns the next block of any kind, retry-only ones included.
func (c *testClient) nextBlock(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-c.ended:
		select {
		case ev := <-c.events:
			return ev
		default:
		}
		t.Fatalf("stream ended while waiting for an event: %v", c.err)
	case <-time.After(waitTimeout):
		t.Fatal("no event arrived")
	}
	return Event{}
}

// waitKeepalive waits for a keepalive comment.
func (c *testClient) waitKeepalive(t *testing.T) {
	t.Helper()
	select {
	case <-c.keepalives:
	case <-time.After(waitTimeout):
		t.Fatal("no keepalive arrived")
	}
}

// waitEnded waits until the server ends the stream.
func (c *testClient) waitEnded(t *testing.T) {
	t.Helper()
	select {
	case <-c.ended:
	case <-time.After(waitTimeout):
		t.Fatal("stream was not ended")
	}
}

// keepaliveSpotter is an io.Writer that signals each ": keepalive" comment
// in the bytes written to it, wherever reads split them.
type keepaliveSpotter struct {
	carry []byte
	found chan<- struct{}
}

func (k *keepaliveSpotter) Write(b []byte) (int, error) {
	pattern := []byte(": keepalive\n")
	buf := append(k.carry, b...)
	for {
		i := bytes.Index(buf, pattern)
		if i < 0 {
			break
		}
		select {
		case k.found <- struct{}{}:
		default:
		}
		buf = buf[i+len(pattern):]
	}
	if keep := len(pattern) - 1; len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	k.carry = append(k.carry[:0], buf...)
	return len(b), nil
}

// publishTo publishes ev on s as its upstream reader would.
func publishTo(s *stream, ev *Event) {
	if f := s.frameOf(ev); f != nil {
		s.publish(f)
	}
}
