package ssefanout

// The writer in a client's request goroutine.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

func TestOwnDeadlinesOnlyWithoutCaddysIdleWriter(t *testing.T) {
	plain := httptest.NewRecorder()
	if !ownDeadlines(plain) {
		t.Error("a plain writer needs deadlines of our own")
	}
	idle := &caddyhttp.IdleTimeoutWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: plain}}
	wrapped := &caddyhttp.ResponseWriterWrapper{ResponseWriter: idle}
	if ownDeadlines(wrapped) {
		t.Error("Caddy's write_idle_timeout writer already bounds every write")
	}
}

func TestBufferingHandlerInFrontIsNeverDetached(t *testing.T) {
	for _, tc := range []struct{ name, before string }{
		{"log_append of the response body", "log_append rbody {http.response.body}"},
		{"intercept", "intercept {\n\t\t\thandle_response {\n\t\t\t\trespond \"intercepted\"\n\t\t\t}\n\t\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := testkit.NewOrigin(t)
			base := testkit.StartCaddy(t, fmt.Sprintf("route {\n\t\t%s\n\t\tsse_fanout %s {\n\t\t\tdetach on\n\t\t}\n\t}", tc.before, origin.URL()))
			conn := rawDial(t, base, "/buffered")
			conn.SetReadDeadline(time.Now().Add(testkit.WaitTimeout))
			head := make([]byte, 9)
			if _, err := io.ReadFull(conn, head); err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			if string(head) != "HTTP/1.1 " {
				t.Fatalf("the response begins %q, not with a status line", head)
			}
			if n := detachedClients(); n != 0 {
				t.Fatalf("%d clients detached behind a buffering handler", n)
			}
		})
	}
	t.Run("intercept that lets events through", func(t *testing.T) {
		origin := testkit.NewOrigin(t)
		base := testkit.StartCaddy(t, fmt.Sprintf("route {\n\t\tintercept {\n\t\t\t@err status 5xx\n\t\t\thandle_response @err {\n\t\t\t\trespond \"oops\"\n\t\t\t}\n\t\t}\n\t\tsse_fanout %s {\n\t\t\tdetach on\n\t\t}\n\t}", origin.URL()))
		rc := dialRaw(t, base, "/streamed")
		if rc.status != "HTTP/1.1 200 OK" {
			t.Fatalf("status %q", rc.status)
		}
		up := origin.NextConn(t)
		testkit.Eventually(t, "the client to be detached", func() bool { return detachedClients() == 1 })
		up.Send("id: 1\ndata: through\n\n")
		if ev := rc.readEvent(t); ev.Data != "through" {
			t.Fatalf("got %+v", ev)
		}
	})
}

// TestInRequestWriters runs tests of the client writer's behaviour with
// detaching off, so that the writer that serves a client in its request
// goroutine (HTTP/2, TLS, encode, detach off) is held to them too; the
// rest of the suite runs with plain HTTP/1 clients, which are detached.
func TestInRequestWriters(t *testing.T) {
	saved := testkit.DetachInTests
	testkit.DetachInTests = false
	defer func() { testkit.DetachInTests = saved }()
	for name, test := range map[string]func(*testing.T){
		"FanOutToManyClientsOverOneUpstream":    TestFanOutToManyClientsOverOneUpstream,
		"HeartbeatOnSilentStream":               TestHeartbeatOnSilentStream,
		"RetryIsInjectedAndRewritten":           TestRetryIsInjectedAndRewritten,
		"SlowClientIsCutOthersKeepGoing":        TestSlowClientIsCutOthersKeepGoing,
		"StalledClientIsCutOthersGetEverything": TestStalledClientIsCutOthersGetEverything,
		"ConnectDisconnectCyclesLeakNothing":    TestConnectDisconnectCyclesLeakNothing,
		"ReplayFromBufferByLastEventID":         TestReplayFromBufferByLastEventID,
		"CursorPrimingLosesNothing":             TestCursorPrimingLosesNothing,
		"CatchUpPastTheBuffer":                  TestCatchUpPastTheBuffer,
		"ReloadThroughAdminAPIKeepsUpstream":    TestReloadThroughAdminAPIKeepsUpstream,
		"ClosingStreamSpreadsItsClientsOut":     TestClosingStreamSpreadsItsClientsOut,
	} {
		t.Run(name, test)
	}
}

// benchEvent is a 256-byte-ish event with an id, like the bench origin's.
var benchEvent = sse.Event{Data: strings.Repeat("x", 220), HasData: true, ID: "1234567", HasID: true}

// discardResponse stands in for a client's connection: an
// http.ResponseWriter that drops what is written, and whose flushes
// count down flushes, signaling done when it reaches zero.
type discardResponse struct {
	header  http.Header
	flushes *atomic.Int64
	done    chan struct{}
}

func (d *discardResponse) Header() http.Header { return d.header }

func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }

func (d *discardResponse) WriteHeader(int) {}

// FlushError is what http.ResponseController.Flush calls.
func (d *discardResponse) FlushError() error {
	if d.flushes.Add(-1) == 0 {
		d.done <- struct{}{}
	}
	return nil
}

// fanOutBench is a stream with n clients, each served by its own writer
// goroutine, as ServeHTTP would run them, into a discardResponse.
type fanOutBench struct {
	s       *stream
	n       int
	flushes atomic.Int64  // flushes still expected for the event in flight
	done    chan struct{} // receives when they have all happened
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newFanOutBench(tb testing.TB, n int) *fanOutBench { return newFanOutBenchIn(tb, n, nil) }

// newFanOutBenchIn is newFanOutBench with clients compressed in enc.
func newFanOutBenchIn(tb testing.TB, n int, enc *encoding) *fanOutBench {
	tb.Helper()
	s := newTestStream(testSettings())
	ctx, cancel := context.WithCancel(context.Background())
	fb := &fanOutBench{s: s, n: n, done: make(chan struct{}, 1), cancel: cancel}
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = addClientIn(s, enc, "")
	}
	for _, c := range clients {
		w := &discardResponse{header: make(http.Header), flushes: &fb.flushes, done: fb.done}
		rc := http.NewResponseController(w)
		// Each request has a context of its own.
		ctx, cancel := context.WithCancel(ctx)
		fb.wg.Add(1)
		go func() {
			defer fb.wg.Done()
			defer cancel()
			if err := newRespWriter(w, rc, time.Minute, true, false, []*client{c}).serve(ctx, c); err != nil {
				tb.Errorf("client writer: %v", err)
			}
		}()
	}
	tb.Cleanup(fb.close)
	return fb
}

// broadcast publishes one event and waits until every client has written
// and flushed it.
func (fb *fanOutBench) broadcast(ev *sse.Event) {
	fb.flushes.Store(int64(fb.n))
	publishTo(fb.s, ev)
	<-fb.done
}

func (fb *fanOutBench) close() {
	fb.cancel()
	fb.wg.Wait()
}

// BenchmarkBroadcast1000 publishes one event to 1,000 clients per op.
//
// inline: the hub's side alone. Each client's writer is emulated in the
// publishing goroutine: take the wake-up, take what it is sent next
// (client.next), write it to io.Discard.
//
// writers: the real in-request writers (respWriter.serve), one goroutine each,
// writing to an http.ResponseWriter that discards; an op ends when all
// 1,000 have flushed the event.
func BenchmarkBroadcast1000(b *testing.B) {
	const n = 1000
	b.Run("inline", func(b *testing.B) {
		s := newTestStream(testSettings())
		clients := make([]*client, n)
		for i := range clients {
			clients[i] = addClient(s)
		}
		var out []byte
		ev := benchEvent
		b.ReportAllocs()
		for b.Loop() {
			publishTo(s, &ev)
			for _, c := range clients {
				select {
				case <-c.wakeC:
				default:
					b.Fatal("client not woken")
				}
				var err error
				out, _, err = c.next(out[:0], maxBatchWrite)
				if err != nil || len(out) == 0 {
					b.Fatalf("client got %d bytes (err=%v)", len(out), err)
				}
				_, _ = io.Discard.Write(out)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	})
	b.Run("writers", func(b *testing.B) {
		fb := newFanOutBench(b, n)
		ev := benchEvent
		b.ReportAllocs()
		for b.Loop() {
			fb.broadcast(&ev)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	})
}

// TestBroadcastAllocatesNothingPerClient checks that publishing an event
// and writing it to every client allocates as much with 1,000 clients as
// with 10: encoding is once per event, and each client's share is a
// wake-up and a write of the shared frame.
func TestBroadcastAllocatesNothingPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 1,000 client writers")
	}
	allocsPerClient(t, "in-request writers", 1, 200, func(n int) broadcaster { return newFanOutBench(t, n) })
}

// TestCompressedBroadcastAllocatesNothingPerClient is
// TestBroadcastAllocatesNothingPerClient for compressed clients: each
// follows its stream's chain, and is sent the frame's piece of it, made
// once for all.
func TestCompressedBroadcastAllocatesNothingPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 1,000 client writers")
	}
	for _, enc := range encodings {
		// The first publish also begins the chain.
		allocsPerClient(t, enc.name, 1, 200, func(n int) broadcaster { return newFanOutBenchIn(t, n, enc) })
	}
}

// TestStalledHTTP2ClientIsEndedAtOnce has an HTTP/2 client stop reading,
// so that its stream's flow-control window (4 MiB in Go's client) closes
// and its writer blocks in a write. When it falls client_queue events
// behind, it is cut, and its write in flight ends with it: its request
// leaves at once, not when some deadline fires.
func TestStalledHTTP2ClientIsEndedAtOnce(t *testing.T) {
	origin := testkit.NewOrigin(t)
	addr, client := startHTTP2Caddy(t, origin.URL(), "client_queue 600")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/stall", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("got %s, want HTTP/2", resp.Proto)
	}
	up := origin.NextConn(t)
	payload := strings.Repeat("x", 16<<10)
	sent := 0
	for counterValue(t, origin.URL(), "slow_client_drops") == 0 {
		if sent >= 2000 {
			t.Fatal("the stalled client was never cut")
		}
		sent++
		up.Send(fmt.Sprintf("id: %d\ndata: %s\n\n", sent, payload))
		if sent%64 == 0 {
			// Let the origin's events reach the hub before more come.
			testkit.Eventually(t, "the events to be published", func() bool {
				return counterValue(t, origin.URL(), "events_received") >= float64(sent-8)
			})
		}
	}
	testkit.Eventually(t, "the cut client's request to leave", func() bool {
		return counterValue(t, origin.URL(), "clients") == 0
	})
}
