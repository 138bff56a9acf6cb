package ssefanout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// TestRefusalsSayWhyAndLogNoSecret provokes every refusal with a client
// that carries credentials in its query, its Authorization header and a
// cookie, as the README's per-user recipes have it. Each refusal is
// answered by the handler with its status and a short text that says why,
// and no log line, at any level, Caddy's own included, holds any of the
// credentials: a refusal returned to Caddy as a handler error would be
// logged with the request's URI, query and all.
func TestRefusalsSayWhyAndLogNoSecret(t *testing.T) {
	secrets := []string{"SECRET1", "SECRET2", "SECRET3"}
	credentials := http.Header{
		"Authorization": {"Bearer " + secrets[1]},
		"Cookie":        {"s=" + secrets[2]},
	}
	origin := testkit.NewOrigin(t)
	dir := t.TempDir()
	logFile, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	handler := `sse_fanout %s {
			key {http.request.uri.query.token} {http.request.header.Authorization} {http.request.cookie.s}
			key_ignore_query token
			header_up Authorization "Bearer {http.request.uri.query.token}"
			header_up X-Client-Authorization {http.request.header.Authorization}
			header_up Cookie "s={http.request.cookie.s}"
			filter_param events
			max_clients 1
			max_streams 2
		}`
	port := testkit.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	testkit.StartCaddyfileWith(t, testkit.GlobalOptionsLoggingTo(logFile), fmt.Sprintf(`%s {
	bind 127.0.0.1
	log {
		output file %s
		format filter {
			request>uri query {
				delete token
			}
		}
	}
	route /buffered* {
		log_append rbody {http.response.body}
		%s
	}
	%s
}
`, base, accessLog, fmt.Sprintf(handler, origin.URL()+"/other"), fmt.Sprintf(handler, origin.URL())))

	get := func(t *testing.T, path string, extra ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = credentials.Clone()
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Set(extra[i], extra[i+1])
		}
		resp, err := testkit.HTTPClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp, string(body)
	}
	token := "?token=" + secrets[0]
	first := testkit.OpenClient(t, base+"/a"+token, credentials) // the stream's one client
	testkit.OpenClient(t, base+"/b"+token, credentials)          // the handler's second stream
	for _, tc := range []struct {
		name, path string
		header     []string
		status     int
		reason     string
		retryAfter bool
	}{
		{"max_clients", "/a" + token, nil, http.StatusServiceUnavailable, "max_clients", true},
		{"max_streams", "/c" + token, nil, http.StatusServiceUnavailable, "max_streams", true},
		{"loop", "/d" + token, []string{"Via", first.Resp.Header.Get("Via")}, http.StatusLoopDetected, "loop", false},
		{"bad cursor", "/a" + token + "&last_event_id=%01", nil, http.StatusBadRequest, "Last-Event-ID", false},
		{"bad filter", "/a" + token + "&events=%00", nil, http.StatusBadRequest, "event filter", false},
		// The handler answers 500, but log_append in front holds the head
		// of the event stream it began: the client gets that status.
		{"response buffered in front", "/buffered" + token, nil, http.StatusOK, "buffers the response", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, tc.path, tc.header...)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.reason) {
				t.Errorf("status %d, body %q; want %d and a body that says %q", resp.StatusCode, body, tc.status, tc.reason)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("Content-Type %q, X-Content-Type-Options %q; want text/plain and nosniff", ct, resp.Header.Get("X-Content-Type-Options"))
			}
			if got := resp.Header.Get("Retry-After") != ""; got != tc.retryAfter {
				t.Errorf("Retry-After %q; want one: %v", resp.Header.Get("Retry-After"), tc.retryAfter)
			}
		})
	}

	// Every refused request is in the access log, and so everything each
	// caused has been logged.
	testkit.Eventually(t, "the requests to be logged", func() bool {
		b, _ := os.ReadFile(accessLog)
		return strings.Count(string(b), `"uri":"/`) >= 6
	})
	for _, file := range []string{logFile, accessLog} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if file == logFile && (strings.Count(string(b), `"msg":"client refused"`) != 5 || !strings.Contains(string(b), "buffers the response")) {
			t.Errorf("the log does not say that five clients were refused and why the sixth was:\n%s", b)
		}
		for line := range strings.Lines(string(b)) {
			for _, secret := range secrets {
				if strings.Contains(line, secret) {
					t.Errorf("%s holds %s:\n%s", filepath.Base(file), secret, line)
				}
			}
		}
	}
}

// TestResetStreamsLogNoErrors: an HTTP/2 client that resets its stream as
// its response starts has left; that is no error of the server's, and a
// client that opens and resets streams by the thousand on one connection
// must not write a line per stream into the error log. What a client's
// leaving costs is logged at debug level, as for any other client.
func TestResetStreamsLogNoErrors(t *testing.T) {
	origin := testkit.NewOrigin(t)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	addr, _ := startHTTP2CaddyWith(t, testkit.TLSGlobalOptionsLoggingTo("h1 h2", logFile), origin.URL(), "")
	witness := testkit.OpenClient(t, "https://"+addr+"/reset", nil)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 1)
	witness.ExpectIDs(t, 1, 1)

	c, _ := dialH2(t, addr)
	for id := uint32(1); id < 2*1000; id += 2 {
		if c.open(id, "/reset") != nil || c.reset(id) != nil {
			t.Fatalf("the server closed the connection at stream %d", id)
		}
	}
	if !c.sync() {
		t.Fatal("the server closed the connection")
	}
	c.close()
	testkit.Eventually(t, "the reset streams' clients to leave", func() bool {
		return counterValue(t, origin.URL(), "clients") == 1
	})
	testkit.SendIDs(up, 2, 2)
	witness.ExpectIDs(t, 2, 2)

	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	errorLines := 0
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, `"level":"error"`) {
			if errorLines == 0 {
				t.Errorf("a reset stream was logged as an error:\n%s", line)
			}
			errorLines++
		}
	}
	if errorLines > 0 {
		t.Errorf("%d error lines for 1000 streams opened and reset", errorLines)
	}
}

// TestOnOwnStackRaisesPanicsInTheCaller: a panic on start's goroutine
// reaches the request goroutine, where net/http recovers it, instead of
// ending the process.
func TestOnOwnStackRaisesPanicsInTheCaller(t *testing.T) {
	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the panic of f", p)
		}
	}()
	onOwnStack(func() { panic("boom") })
	t.Fatal("onOwnStack returned after f panicked")
}

// TestOnOwnStackRunsFToTheEnd: what f sets is there when onOwnStack
// returns, and f ran on another goroutine, whose stack is not the
// caller's.
func TestOnOwnStackRunsFToTheEnd(t *testing.T) {
	var mine, its []byte
	mine = stackTop()
	onOwnStack(func() { its = stackTop() })
	if its == nil {
		t.Fatal("f did not run")
	}
	if string(mine) == string(its) {
		t.Fatalf("f ran on the caller's goroutine (%s)", mine)
	}
}

// stackTop is the first line of the calling goroutine's stack trace:
// "goroutine N [running]:".
func stackTop() []byte {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	line, _, _ := strings.Cut(string(buf), "\n")
	return []byte(line)
}

// BenchmarkHTTP2ClientStack holds 500 HTTP/2 clients of one stream, each
// served in its request, and reports the goroutine stack they cost the
// process per client (stack-B/client), after each has read an event: the
// request goroutine's stack, and a share of each connection's two
// goroutines on either side. Caddy's handler chain leaves little of a
// request goroutine's first 8 KiB; with what ServeHTTP does before the
// live events run on a goroutine of its own, a client costs about 8 KiB
// here, and about 16 KiB without (docs/performance.md, Where we stand).
func BenchmarkHTTP2ClientStack(b *testing.B) {
	const n = 500
	origin := testkit.NewOrigin(b)
	addr, client := startHTTP2Caddy(b, origin.URL(), "")

	var perClient float64
	round := 0
	for b.Loop() {
		round++
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		bodies := make([]*bufio.Reader, 0, n)
		var closers []func() error
		for range n {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://%s/stack%d", addr, round), nil)
			resp, err := client.Do(req)
			if err != nil {
				cancel()
				b.Fatal(err)
			}
			if resp.ProtoMajor != 2 {
				cancel()
				b.Fatalf("got %s, want HTTP/2", resp.Proto)
			}
			bodies = append(bodies, bufio.NewReader(resp.Body))
			closers = append(closers, resp.Body.Close)
		}
		origin.NextConn(b).Send("data: x\n\n") // a stream of each round's own
		for i, br := range bodies {
			// Each reads up to its event: its writer has written it, and
			// waits for the next.
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					cancel()
					b.Fatalf("client %d: %v", i, err)
				}
				if strings.HasPrefix(line, "data: x") {
					break
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perClient = float64(after.StackInuse-before.StackInuse) / n
		cancel()
		for _, c := range closers {
			_ = c()
		}
		testkit.Eventually(b, "the clients to leave", func() bool {
			return counterValue(b, origin.URL(), "clients") == 0
		})
	}
	b.ReportMetric(perClient, "stack-B/client")
}

// TestClientLifeIsLoggedAtDebug: at debug level, each client's start and
// end are logged, with its stream, its address and protocol, whether it
// was detached and what its cursor got, then why it ended, how long it
// stayed and what it was sent, under the names Caddy's access log uses;
// none of the credentials the client sent appears in any line.
func TestClientLifeIsLoggedAtDebug(t *testing.T) {
	secrets := []string{"SECRET1", "SECRET2", "SECRET3"}
	credentials := http.Header{
		"Authorization": {"Bearer " + secrets[1]},
		"Cookie":        {"s=" + secrets[2]},
	}
	origin := testkit.NewOrigin(t)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	port := testkit.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	testkit.StartCaddyfileWith(t, testkit.GlobalOptionsLoggingTo(logFile), fmt.Sprintf(`%s {
	bind 127.0.0.1
	route /in/* {
		sse_fanout %s {
			key_ignore_query token
			detach off
		}
	}
	route /out/* {
		sse_fanout %s {
			key_ignore_query token
			detach on
		}
	}
}
`, base, origin.URL(), origin.URL()))
	token := "?token=" + secrets[0]

	in := testkit.OpenClient(t, base+"/in/a"+token, credentials)
	up := origin.NextConn(t)
	testkit.SendIDs(up, 1, 1)
	in.ExpectIDs(t, 1, 1)

	first := testkit.OpenClient(t, base+"/out/b"+token, credentials)
	up = origin.NextConn(t)
	testkit.SendIDs(up, 1, 3)
	first.ExpectIDs(t, 1, 3)
	header := credentials.Clone()
	header.Set("Last-Event-ID", "1")
	replayed := testkit.OpenClient(t, base+"/out/b"+token, header)
	replayed.ExpectIDs(t, 2, 3)
	testkit.Eventually(t, "the clients to be detached", func() bool { return detachedClients() == 2 })

	in.Close()
	first.Close()
	replayed.Close()
	var started, ended []map[string]any
	testkit.Eventually(t, "three clients to end in the log", func() bool {
		started, ended = logLines(t, logFile, "client started"), logLines(t, logFile, "client ended")
		return len(ended) == 3
	})
	if len(started) != 3 {
		t.Fatalf("%d client started lines, want 3: %v", len(started), started)
	}
	want := []struct {
		stream   string
		detached bool
		cursor   string
		events   float64
	}{
		{"/in/a", false, "none", 1},
		{"/out/b", true, "none", 3},
		{"/out/b", true, "replay", 2},
	}
	find := func(lines []map[string]any, stream string, detached bool, cursor string) map[string]any {
		for _, l := range lines {
			if l["stream"] == stream && l["detached"] == detached && l["cursor"] == cursor {
				return l
			}
		}
		return nil
	}
	for _, w := range want {
		name := fmt.Sprintf("%s detached=%v cursor=%s", w.stream, w.detached, w.cursor)
		for _, l := range []map[string]any{find(started, w.stream, w.detached, w.cursor), find(ended, w.stream, w.detached, w.cursor)} {
			if l == nil {
				t.Errorf("%s: no start or end line; started %v, ended %v", name, started, ended)
				continue
			}
			if l["level"] != "debug" || l["remote_ip"] != "127.0.0.1" || l["remote_port"] == "" || l["remote_port"] == nil || l["proto"] != "HTTP/1.1" {
				t.Errorf("%s: line %v; want level debug, remote_ip, remote_port, proto", name, l)
			}
		}
		l := find(ended, w.stream, w.detached, w.cursor)
		if l == nil {
			continue
		}
		if l["reason"] != errClientGone.Error() || l["events"] != w.events {
			t.Errorf("%s: ended %v; want reason %q and %v events", name, l, errClientGone, w.events)
		}
		if d, ok := l["duration"].(float64); !ok || d <= 0 {
			t.Errorf("%s: duration %v, want a positive number", name, l["duration"])
		}
		if size, ok := l["size"].(float64); !ok || size < w.events*float64(len("id: 1\ndata: event 1\n\n")) {
			t.Errorf("%s: size %v, want the bytes of its %v events at least", name, l["size"], w.events)
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		for _, secret := range secrets {
			if strings.Contains(line, secret) {
				t.Errorf("the log holds %s:\n%s", secret, line)
			}
		}
	}
}

// logLines returns the lines of the JSON log at path whose message is msg.
func logLines(t *testing.T, path, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var lines []map[string]any
	for line := range strings.Lines(string(b)) {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == msg {
			lines = append(lines, l)
		}
	}
	return lines
}

// The first bytes of an event stream's body go out with its head, before
// the origin has sent anything: a proxy that holds a response's head
// until its first body bytes (as HTTP/2 proxies do, waiting for a DATA
// frame) would otherwise hold a quiet stream's head, and a browser that
// fires open at the first body byte would not know it is connected.
// Each test reads the first bytes through a proxy that speaks HTTP/2 to
// Caddy while the origin has sent nothing, then an event.

func TestFirstBytesPassCaddysReverseProxyOverHTTP2(t *testing.T) {
	origin := testkit.NewOrigin(t)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	back, front := testkit.FreePort(t), testkit.FreePort(t)
	testkit.StartCaddyfileWith(t, h2cGlobalOptions(logFile), fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	sse_fanout %s
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	reverse_proxy h2c://127.0.0.1:%d
}
`, back, origin.URL(), front, back))
	firstBytesBeforeEvents(t, fmt.Sprintf("http://127.0.0.1:%d/hop", front), origin, logFile)
}

func TestFirstBytesPassHTTPUtilReverseProxyOverHTTP2(t *testing.T) {
	origin := testkit.NewOrigin(t)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	back := testkit.FreePort(t)
	testkit.StartCaddyfileWith(t, h2cGlobalOptions(logFile), fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s\n}\n", back, origin.URL()))
	target, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", back))
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true) // HTTP/2 with prior knowledge, as h2c
	transport := &http.Transport{Protocols: protocols}
	t.Cleanup(transport.CloseIdleConnections)
	proxy.Transport = transport
	srv := testkit.NewServer(t, proxy)
	t.Cleanup(srv.Close)
	firstBytesBeforeEvents(t, srv.URL+"/hop", origin, logFile)
}

// h2cGlobalOptions are the tests' global options, logging to logFile, with
// HTTP/2 over cleartext (h2c) served besides HTTP/1.1.
func h2cGlobalOptions(logFile string) string {
	return strings.Replace(testkit.GlobalOptionsLoggingTo(logFile), "\tadmin off\n", "\tadmin off\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n", 1)
}

// firstBytesBeforeEvents opens url, a proxy in front of sse_fanout, and
// fails unless the body's first bytes, a comment, arrive while the origin
// has sent nothing, and the origin's first event follows them as sent.
// It checks in sse_fanout's log that the proxy came over HTTP/2.
func firstBytesBeforeEvents(t *testing.T, url string, origin *testkit.Origin, logFile string) {
	t.Helper()
	resp := testkit.Get(t, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	up := origin.NextConn(t) // sends nothing until told
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no body bytes came before the origin sent anything: %v", err)
	}
	if !strings.HasPrefix(line, ":") {
		t.Fatalf("the body begins with %q, want a comment", line)
	}
	var started []map[string]any
	testkit.Eventually(t, "the client's start to be logged", func() bool {
		started = logLines(t, logFile, "client started")
		return len(started) > 0
	})
	if len(started) != 1 || started[0]["proto"] != "HTTP/2.0" {
		t.Fatalf("client started lines %v; want one, of an HTTP/2.0 client", started)
	}
	sent := time.Now()
	up.Send("id: 1\ndata: first\n\n")
	ev, err := sse.NewParser(br, 1<<10).Next()
	if err != nil || ev.ID != "1" || ev.Data != "first" {
		t.Fatalf("after the first bytes got %+v (%v), want the event with id 1", ev, err)
	}
	// A figure for the reader (go test -v), not a bound: the tests keep no
	// timed assertion, this machine being shared.
	t.Logf("the first event came through in %v after the origin sent it", time.Since(sent))
}
