package ssefanout

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

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
// here, and about 16 KiB without (README, Where we stand).
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
