package ssefanout

// Taking plain HTTP/1 connections over.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestPlainHTTP1ClientIsDetached(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach on\n}")
	rc := dialRaw(t, base, "/detach")
	up := origin.NextConn(t)
	if rc.status != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", rc.status)
	}
	// The body is delimited by the connection's end, not chunked, so the
	// shared writer can put frames on the wire as they are.
	if te := rc.header.Get("Transfer-Encoding"); te != "" {
		t.Fatalf("Transfer-Encoding: %s, want none", te)
	}
	if c := rc.header.Get("Connection"); c != "close" {
		t.Fatalf("Connection: %q, want close", c)
	}
	testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })

	for i := 1; i <= 3; i++ {
		up.Send(fmt.Sprintf("id: %d\ndata: event %d\n\n", i, i))
		if ev := rc.readEvent(t); ev.ID != strconv.Itoa(i) || ev.Data != fmt.Sprintf("event %d", i) {
			t.Fatalf("got %+v, want event %d", ev, i)
		}
	}

	rc.conn.Close()
	testkit.Eventually(t, "the hung-up client to leave", func() bool {
		return detachedClients() == 0 && counterValue(t, origin.URL(), "clients") == 0
	})
}

func TestDetachOffKeepsClientsInTheirRequests(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach off\n}")
	rc := dialRaw(t, base, "/attached")
	up := origin.NextConn(t)
	if te := rc.header.Get("Transfer-Encoding"); te != "chunked" {
		t.Fatalf("Transfer-Encoding: %q, want chunked", te)
	}
	c := testkit.OpenClient(t, base+"/attached", nil)
	up.Send("id: 1\ndata: hello\n\n")
	if ev := c.NextData(t); ev.Data != "hello" {
		t.Fatalf("got %+v", ev)
	}
	if n := detachedClients(); n != 0 {
		t.Fatalf("%d clients detached with detach off", n)
	}
}

// An idle detached client costs one goroutine, the one that notices when
// it hangs up; a client served in its request costs two.
func TestDetachedClientsCostOneGoroutineEach(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach on\n}")
	first := testkit.OpenClient(t, base+"/idle", nil)
	origin.NextConn(t)
	testkit.Eventually(t, "the first client to be detached", func() bool { return detachedClients() == 1 })
	runtime.GC()
	before := runtime.NumGoroutine()

	const n = 100
	for i := 0; i < n; i++ {
		rawDial(t, base, "/idle")
	}
	testkit.Eventually(t, "every client to be detached", func() bool { return detachedClients() == n+1 })
	// Each client: our watch goroutine. The test's own side of each
	// connection is a bare socket, with no goroutine. A few more are
	// allowed for shared writers and runtime helpers.
	if grown := runtime.NumGoroutine() - before; grown > n+runtime.GOMAXPROCS(0)+4 {
		t.Fatalf("%d idle clients added %d goroutines, want about %d", n, grown, n)
	}
	first.Close()
}

func TestDetachedClientThatSendsDataIsCut(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach on\n}")
	rc := dialRaw(t, base, "/chatty")
	origin.NextConn(t)
	testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
	fmt.Fprintf(rc.conn, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := rc.r.Read(buf); err != nil {
			break // the proxy closed the connection
		}
	}
	testkit.Eventually(t, "the client to leave", func() bool { return detachedClients() == 0 })
}

// Where Caddy does something to the bytes of a response, or must bound its
// writes, the client stays in its request: over TLS (HTTP/1.1 and HTTP/2),
// when encode compresses the response, and when the server has a hard
// write timeout. Each still gets its events.
func TestClientsThatAreNotDetached(t *testing.T) {
	tlsClient := func(h2 bool) *http.Client {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
			ForceAttemptHTTP2: h2,
		}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: tr}
	}
	for _, tc := range []struct {
		name      string
		caddyfile func(port int, origin string) string
		scheme    string
		client    *http.Client
		proto     string
	}{
		{"HTTP/2", tlsSite, "https", tlsClient(true), "HTTP/2.0"},
		{"encode gzip", func(port int, origin string) string {
			return testkit.GlobalOptions() + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tencode gzip\n\tsse_fanout %s {\n\t\tdetach on\n\t}\n}\n", port, origin)
		}, "http", testkit.HTTPClient, "HTTP/1.1"},
		{"write timeout", func(port int, origin string) string {
			options := strings.Replace(testkit.GlobalOptions(), "\tadmin off\n", "\tadmin off\n\tservers {\n\t\ttimeouts {\n\t\t\twrite 1m\n\t\t}\n\t}\n", 1)
			return options + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\tdetach on\n\t}\n}\n", port, origin)
		}, "http", testkit.HTTPClient, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			port := testkit.FreePort(t)
			testkit.StartWholeCaddyfile(t, tc.caddyfile(port, origin.URL()))
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if tc.scheme == "https" {
				testkit.WaitCertificate(t, addr)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tc.scheme+"://"+addr+"/kept", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != tc.proto {
				t.Fatalf("got %s, want %s", resp.Proto, tc.proto)
			}
			up := origin.NextConn(t)
			up.Send("id: 1\ndata: kept\n\n")
			p := sse.NewParser(resp.Body, 1<<20)
			for {
				ev, err := p.Next()
				if err != nil {
					t.Fatal(err)
				}
				if ev.HasData {
					if ev.Data != "kept" {
						t.Fatalf("got %q", ev.Data)
					}
					break
				}
			}
			if n := detachedClients(); n != 0 {
				t.Fatalf("%d clients detached", n)
			}
			if n := counterValue(t, origin.URL(), "clients"); n != 1 {
				t.Fatalf("%v clients, want 1", n)
			}
		})
	}
}

// tlsSite is a Caddyfile serving sse_fanout over HTTPS with Caddy's internal
// CA, HTTP/1.1 and HTTP/2 offered.
func tlsSite(port int, origin string) string {
	return testkit.TLSGlobalOptions("h1 h2") + fmt.Sprintf("https://127.0.0.1:%d {\n\tbind 127.0.0.1\n\ttls internal\n\tsse_fanout %s {\n\t\tdetach on\n\t}\n}\n", port, origin)
}

// The server's timeouts are for requests; a detached client outlives them
// all, even those Caddy arms as the request ends.
func TestDetachedClientOutlivesServerTimeouts(t *testing.T) {
	origin := testkit.NewOrigin(t)
	port := testkit.FreePort(t)
	timeouts := "\tservers {\n\t\ttimeouts {\n\t\t\tread_header 200ms\n\t\t\tread_body 200ms\n\t\t\tread_body_idle 200ms 100\n\t\t\twrite_idle 200ms 100\n\t\t\tidle 200ms\n\t\t}\n\t}\n"
	options := strings.Replace(testkit.GlobalOptions(), "\tadmin off\n", "\tadmin off\n"+timeouts, 1)
	testkit.StartWholeCaddyfile(t, options+fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tsse_fanout %s {\n\t\tdetach on\n\t\theartbeat off\n\t}\n}\n", port, origin.URL()))
	c := testkit.OpenClient(t, fmt.Sprintf("http://127.0.0.1:%d/timeouts", port), nil)
	up := origin.NextConn(t)
	testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
	// Waiting is the point: five times every timeout, with nothing sent.
	time.Sleep(time.Second)
	up.Send("id: 1\ndata: still here\n\n")
	if ev := c.NextData(t); ev.Data != "still here" {
		t.Fatalf("got %+v", ev)
	}
}

// A client of HTTP/1.1 over TLS is detached too: its TLS connection is
// taken over, and a shared writer writes its records.
func TestTLSHTTP1ClientIsDetached(t *testing.T) {
	origin := testkit.NewOrigin(t)
	port := testkit.FreePort(t)
	testkit.StartWholeCaddyfile(t, tlsSite(port, origin.URL()))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	testkit.WaitCertificate(t, addr)
	c := testkit.OpenClient(t, "https://"+addr+"/tls", nil)
	if c.Resp.Proto != "HTTP/1.1" {
		t.Fatalf("got %s, want HTTP/1.1", c.Resp.Proto)
	}
	if te := c.Resp.TransferEncoding; len(te) != 0 {
		t.Fatalf("Transfer-Encoding %v, want none: the body ends with the connection", te)
	}
	up := origin.NextConn(t)
	testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
	testkit.SendIDs(up, 1, 50)
	c.ExpectIDs(t, 1, 50)
	c.Close()
	testkit.Eventually(t, "the hung-up client to leave", func() bool {
		return detachedClients() == 0 && counterValue(t, origin.URL(), "clients") == 0
	})
}

// A detached client keeps nothing of its request: not its response
// writer, whose buffers would outlive the request goroutine it was
// detached to free. The request lets go of it once its client is on a
// shard, so the test waits for that.
func TestDetachedClientKeepsNoResponse(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach on\n}")
	testkit.OpenClient(t, base+"/kept", nil)
	origin.NextConn(t)
	testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
	testkit.Eventually(t, "the detached client to let go of its response writer", func() bool {
		holding := 0
		eachLiveStream(func(s *stream) {
			s.shared.mu.Lock()
			defer s.shared.mu.Unlock()
			for _, sh := range s.shared.shards {
				sh.mu.Lock()
				for _, d := range sh.clients {
					if d.cs[0].abort.Load() != nil {
						holding++
					}
				}
				sh.mu.Unlock()
			}
		})
		return holding == 0
	})
}

// A multiplexed page over plain HTTP/1.1 is detached as a single client
// is: one shared writer, of its first member's stream, serves every
// member. It reads each member's events exactly, resumes exactly, and,
// once it hangs up, leaves every stream with no goroutine left behind.
func TestMultiplexedPageIsDetached(t *testing.T) {
	origin := testkit.NewOrigin(t)
	base := testkit.StartCaddy(t, muxSite(origin, "\tdetach on\n"))
	names := []string{"a", "b", "c"}
	// Witnesses keep the streams, and their goroutines, while the page is
	// away.
	for _, name := range names {
		testkit.OpenClient(t, base+"/events/"+name, nil)
	}
	conns := memberConns(t, origin, 3)
	testkit.Eventually(t, "the witnesses to be detached", func() bool { return detachedClients() == 3 })
	before := goroutinesButHTTPClientConns()

	page := testkit.OpenClient(t, muxURL(base, names...), nil)
	if te := page.Resp.TransferEncoding; len(te) != 0 {
		t.Fatalf("Transfer-Encoding %v, want none: the body ends with the connection", te)
	}
	testkit.Eventually(t, "the page to be detached", func() bool { return detachedClients() == 4 })
	for _, name := range names {
		testkit.SendIDs(conns[name], 1, 5)
	}
	cursor := expectMux(t, page, names, map[string]int{"a": 1, "b": 1, "c": 1}, map[string]int{"a": 5, "b": 5, "c": 5})
	page.Close()
	testkit.Eventually(t, "the page to leave every stream", func() bool {
		return detachedClients() == 3 && counterValue(t, origin.URL(), "clients") == 3
	})

	testkit.SendIDs(conns["a"], 6, 8)
	testkit.SendIDs(conns["c"], 6, 6)
	again := testkit.OpenClient(t, muxURL(base, names...), testkit.LastEventID(cursor))
	testkit.Eventually(t, "the resumed page to be detached", func() bool { return detachedClients() == 4 })
	testkit.SendIDs(conns["b"], 6, 6)
	expectMux(t, again, names, map[string]int{"a": 6, "b": 6, "c": 6}, map[string]int{"a": 8, "b": 6, "c": 6})
	if n := again.Pending(); n != 0 {
		t.Fatalf("%d blocks more than the members' new events", n)
	}
	again.Close()
	testkit.Eventually(t, "the page to leave, and its goroutines to end", func() bool {
		return detachedClients() == 3 && counterValue(t, origin.URL(), "clients") == 3 &&
			goroutinesButHTTPClientConns() <= before
	})
	origin.NoNewConn(t)
}

// A detached page ends when one of its members' streams closes, the
// stream of its shared writer (its first member's) or another's: it
// reconnects with its cursor, as a page served in its request does.
func TestDetachedPageEndsWhenAMemberStreamCloses(t *testing.T) {
	for _, closing := range []string{"a", "b"} {
		t.Run(closing, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, muxSite(origin, "\tdetach on\n"))
			names := []string{"a", "b"}
			page := testkit.OpenClient(t, muxURL(base, names...), nil)
			conns := memberConns(t, origin, 2)
			testkit.Eventually(t, "the page to be detached", func() bool { return detachedClients() == 1 })
			testkit.SendIDs(conns["a"], 1, 2)
			testkit.SendIDs(conns["b"], 1, 2)
			expectMux(t, page, names, map[string]int{"a": 1, "b": 1}, map[string]int{"a": 2, "b": 2})

			// The origin says 204 to the member's reconnect: its stream
			// closes, and its clients end.
			origin.SetAnswer(func(r *http.Request) int {
				if r.URL.Path == "/events/"+closing {
					return http.StatusNoContent
				}
				return 0
			})
			close(conns[closing].End)
			page.WaitEnded(t)
			testkit.Eventually(t, "the page to leave every stream", func() bool {
				return detachedClients() == 0 && counterValue(t, origin.URL(), "clients") == 0
			})
		})
	}
}

// A GET that announces a body it does not send (Content-Length, or a
// chunked body) is answered at once: net/http would otherwise read the
// body before the head, and hold the client's start, on a stream it is
// counted in, for as long as the client keeps quiet. Once the body comes
// it is bytes after the request, and cuts a detached client; a client
// served in its request is never read from.
func TestGetThatAnnouncesABodyIsAnsweredAtOnce(t *testing.T) {
	for _, detach := range []string{"on", "off"} {
		for _, announce := range []string{"Content-Length: 5", "Transfer-Encoding: chunked"} {
			t.Run(detach+"/"+announce, func(t *testing.T) {
				origin := testkit.NewOrigin(t)
				base := testkit.StartCaddy(t, "sse_fanout "+origin.URL()+" {\n\tdetach "+detach+"\n}")
				witness := testkit.OpenClient(t, base+"/body", nil)
				up := origin.NextConn(t)
				rc := dialRaw(t, base, "/body", announce)
				if rc.status != "HTTP/1.1 200 OK" {
					t.Fatalf("status %q", rc.status)
				}
				testkit.SendIDs(up, 1, 1)
				if ev := rc.readEvent(t); ev.Data != "event 1" {
					t.Fatalf("got %+v", ev)
				}
				witness.ExpectIDs(t, 1, 1)
				if detach == "on" {
					testkit.Eventually(t, "both clients to be detached", func() bool { return detachedClients() == 2 })
					fmt.Fprintf(rc.conn, "hello")
					rc.conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
					// Cut: the connection ends, or is reset for what it
					// left unread; a timeout means it was not.
					if _, err := io.Copy(io.Discard, rc.r); errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatal("the client that sent its body was not cut")
					}
					testkit.Eventually(t, "the cut client to leave", func() bool { return detachedClients() == 1 })
				}
				testkit.SendIDs(up, 2, 2)
				witness.ExpectIDs(t, 2, 2)
			})
		}
	}
}
