package ssefanout

// The cost of event-type filters: a broadcast to 1,000 clients, half of
// them filtered or none.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// filterBenchTypes are the event types a filter bench publishes in turn:
// its filtered clients want only the first.
var filterBenchTypes = [2]string{"a", "b"}

// filterBench is a stream with n clients, of which filtered want only
// events of type a, served by in-request writers (writers) or detached
// (shared writers), as in BenchmarkBroadcast1000 and
// BenchmarkBroadcastDetached1000. Each op publishes one event, of type a
// and b in turn, and waits until every client that wants it has it.
type filterBench struct {
	s          *stream
	receivers  [2]int   // clients that are sent each type
	frameLen   [2]int64 // bytes of each type's frame
	delivered  int64    // events delivered so far
	signal     atomic.Int64
	done       chan struct{}
	target     atomic.Int64 // detached: bytes read by all readers
	received   atomic.Int64
	cancel     context.CancelFunc
	peers      []net.Conn
	writers    sync.WaitGroup // in-request writers
	wg         sync.WaitGroup // readers of detached clients
	detached   bool
	events     [2]sse.Event
	publishedN int
}

func newFilterBench(tb testing.TB, n, filtered int, detached bool) *filterBench {
	tb.Helper()
	s := newTestStream(testSettings())
	fb := &filterBench{s: s, done: make(chan struct{}, 1), detached: detached}
	for i, typ := range filterBenchTypes {
		fb.events[i] = benchEvent
		fb.events[i].Type = typ
		fb.frameLen[i] = int64(len(sse.AppendEvent(nil, &fb.events[i], true)))
	}
	fb.receivers = [2]int{n, n - filtered}
	ctx, cancel := context.WithCancel(context.Background())
	fb.cancel = cancel
	for i := 0; i < n; i++ {
		c := addClient(s)
		if i%2 == 1 && i/2 < filtered {
			c = addFiltered(s, filterBenchTypes[0])
		}
		if detached {
			server, peer := socketPair(tb)
			d := attach(c, []*stream{s}, []*client{c}, server)
			if d == nil {
				tb.Fatal("attach refused")
			}
			go d.watch()
			fb.peers = append(fb.peers, peer)
			fb.wg.Add(1)
			go fb.read(peer)
			continue
		}
		w := &discardResponse{header: make(http.Header), flushes: &fb.signal, done: fb.done}
		rc := http.NewResponseController(w)
		ctx, cancel := context.WithCancel(ctx)
		fb.writers.Add(1)
		go func() {
			defer fb.writers.Done()
			defer cancel()
			if err := newRespWriter(w, rc, time.Minute, true, false, []*client{c}).serve(ctx, c); err != nil {
				tb.Errorf("client writer: %v", err)
			}
		}()
	}
	tb.Cleanup(fb.close)
	return fb
}

// read drains one detached client's socket, counting bytes.
func (fb *filterBench) read(peer net.Conn) {
	defer fb.wg.Done()
	readCounting(peer, &fb.received, &fb.target, fb.done)
}

// broadcast publishes the next event and waits until it is delivered.
func (fb *filterBench) broadcast() {
	i := fb.publishedN % 2
	fb.publishedN++
	if fb.detached {
		fb.target.Add(int64(fb.receivers[i]) * fb.frameLen[i])
	} else {
		fb.signal.Store(int64(fb.receivers[i]))
	}
	ev := fb.events[i]
	publishTo(fb.s, &ev)
	<-fb.done
	fb.delivered += int64(fb.receivers[i])
}

// close ends the bench as a server would: the requests go away (their
// writers end), then the stream closes (its shared writers end).
func (fb *filterBench) close() {
	fb.cancel()
	fb.writers.Wait()
	fb.s.close(errStreamClosed)
	for _, p := range fb.peers {
		p.Close()
	}
	fb.wg.Wait()
	fb.s.hub.wg.Wait()
}

// BenchmarkFilteredBroadcast1000 is W1's comparison in process: 1,000
// clients of one stream, events of two types in turn, every client
// unfiltered, or half of them filtered for one type, so that they are
// sent half the events. It reports the wall time (ns/delivery) and the
// process's CPU time (cpu-ns/delivery) per event delivered to a client:
// a filtered client must cost nothing for the events it is not sent.
func BenchmarkFilteredBroadcast1000(b *testing.B) {
	const n = 1000
	for _, kind := range []string{"writers", "detached"} {
		for _, filtered := range []int{0, n / 2} {
			b.Run(fmt.Sprintf("%s/filtered=%d", kind, filtered), func(b *testing.B) {
				fb := newFilterBench(b, n, filtered, kind == "detached")
				fb.broadcast() // sizes the writers' buffers
				fb.broadcast()
				fb.delivered = 0
				b.ReportAllocs()
				cpu := cpuTime(b)
				for b.Loop() {
					fb.broadcast()
				}
				cpu = cpuTime(b) - cpu
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(fb.delivered), "ns/delivery")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(fb.delivered), "cpu-ns/delivery")
			})
		}
	}
}
