package ssefanout

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// This file measures the broadcast path: one event published to many
// in-memory clients, with the frames written to nowhere.

// benchEvent is a 256-byte-ish event with an id, like the bench origin's.
var benchEvent = Event{Data: strings.Repeat("x", 220), HasData: true, ID: "1234567", HasID: true}

// discardResponse stands in for a client's connection: an
// http.ResponseWriter that drops what is written, and whose flushes
// count down flushes, signaling done when it reaches zero.
type discardResponse struct {
	header  http.Header
	flushes *atomic.Int64
	done    chan struct{}
}

func (d *discardResponse) Header() http.Header         { return d.header }
func (d *discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardResponse) WriteHeader(int)             {}

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

func newFanOutBench(tb testing.TB, n int) *fanOutBench {
	return newFanOutBenchStop(tb, n, make(chan struct{}))
}

// newFanOutBenchStop is newFanOutBench with the given stop channel, which
// ServeHTTP passes every client of a config (nil: none).
func newFanOutBenchStop(tb testing.TB, n int, stop chan struct{}) *fanOutBench {
	tb.Helper()
	s := newStream(newRegistry(testSettings(), 0, "bench"), streamRequest{key: "/bench", label: "/bench", upstreamURL: "http://127.0.0.1:1/bench"})
	ctx, cancel := context.WithCancel(context.Background())
	fb := &fanOutBench{s: s, n: n, done: make(chan struct{}, 1), cancel: cancel}
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = newClient(s)
		clients[i].stop = stop
		s.clients[clients[i]] = struct{}{}
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
			if err := c.serve(ctx, newClientWriter(w, rc, s)); err != nil {
				tb.Errorf("client writer: %v", err)
			}
		}()
	}
	tb.Cleanup(fb.close)
	return fb
}

// broadcast publishes one event and waits until every client has written
// and flushed it.
func (fb *fanOutBench) broadcast(ev *Event) {
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
// publishing goroutine: take the wake-up, copy the frames after the
// cursor, write them to io.Discard, move the cursor.
//
// writers: the real client writers (client.serve), one goroutine each,
// writing to an http.ResponseWriter that discards; an op ends when all
// 1,000 have flushed the event.
func BenchmarkBroadcast1000(b *testing.B) {
	const n = 1000
	b.Run("inline", func(b *testing.B) {
		s := newStream(newRegistry(testSettings(), 0, "bench"), streamRequest{key: "/bench", label: "/bench", upstreamURL: "http://127.0.0.1:1/bench"})
		clients := make([]*client, n)
		for i := range clients {
			clients[i] = newClient(s)
			s.clients[clients[i]] = struct{}{}
		}
		batch := make([]*frame, 0, 16)
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
				var ok bool
				batch, ok = s.framesAfter(batch[:0], c.cursor.Load())
				if !ok || len(batch) != 1 {
					b.Fatalf("client got %d frames (ok=%v), want 1", len(batch), ok)
				}
				_, _ = io.Discard.Write(batch[0].bytes)
				c.cursor.Store(batch[0].seq)
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
	// As writers, but without the stop channel that ServeHTTP hands every
	// client of a config: what selecting on one shared channel costs.
	b.Run("writers-nostop", func(b *testing.B) {
		fb := newFanOutBenchStop(b, n, nil)
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
	allocs := func(n int) float64 {
		fb := newFanOutBench(t, n)
		ev := benchEvent
		fb.broadcast(&ev) // the first batch sizes each writer's buffers
		a := testing.AllocsPerRun(200, func() { fb.broadcast(&ev) })
		fb.close()
		return a
	}
	few, many := allocs(10), allocs(1000)
	t.Logf("allocations per event: %.0f with 10 clients, %.0f with 1,000", few, many)
	// A margin of 2 absorbs the runtime's own stray allocations; one
	// allocation per client per event would show as 990.
	if many > few+2 {
		t.Fatalf("publishing one event allocates %.0f times with 1,000 clients and %.0f with 10: something allocates per client", many, few)
	}
}
