package ssefanout

// The shared writers of detached clients.

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"github.com/sse-fanout/caddy-sse-fanout/internal/testkit"
)

// detachedBench is a stream with n detached clients.
type detachedBench struct {
	s        *stream
	n        int
	frameLen int64           // bytes each client receives per event, if not compressed
	chain    chainCompressor // compressed: the stream's chain, as each client gets it
	head     []byte          // compressed: what a client is sent before its first piece
	received atomic.Int64    // bytes read by all readers together
	target   atomic.Int64    // when received reaches it, done receives
	done     chan struct{}
	peers    []net.Conn // the readers' ends
	wg       sync.WaitGroup
}

// socketPair returns the two ends of a connected Unix stream socket pair.
func socketPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			tb.Fatal(err)
		}
	}
	return conns[0], conns[1]
}

func newDetachedBench(tb testing.TB, n int) *detachedBench { return newDetachedBenchIn(tb, n, nil) }

// newDetachedBenchIn is newDetachedBench with clients compressed in enc,
// which broadcast only benchEvent.
func newDetachedBenchIn(tb testing.TB, n int, enc *encoding) *detachedBench {
	tb.Helper()
	s := newTestStream(testSettings())
	db := &detachedBench{s: s, n: n, done: make(chan struct{}, 1)}
	ev := benchEvent
	db.frameLen = int64(len(sse.AppendEvent(nil, &ev, true)))
	if enc != nil {
		// Every client follows the chain from its first piece: each gets
		// what this chain makes of the same events.
		head, _ := enc.ends()
		db.chain, db.head = enc.newChain(), head
		tb.Cleanup(db.chain.release)
	}
	for i := 0; i < n; i++ {
		server, peer := socketPair(tb)
		c := addClientIn(s, enc, "")
		d := attach(c, []*stream{s}, []*client{c}, server)
		if d == nil {
			tb.Fatal("attach refused")
		}
		go d.watch()
		db.peers = append(db.peers, peer)
		db.wg.Add(1)
		go db.read(peer)
	}
	tb.Cleanup(db.close)
	return db
}

// read drains one client's socket, counting bytes.
func (db *detachedBench) read(peer net.Conn) {
	defer db.wg.Done()
	readCounting(peer, &db.received, &db.target, db.done)
}

// readCounting drains peer into a fixed buffer until it is closed, adding
// the bytes it reads to received, which its fellow readers share; the
// reader that brings received to target sends on done.
func readCounting(peer net.Conn, received, target *atomic.Int64, done chan<- struct{}) {
	buf := make([]byte, 4096)
	for {
		n, err := peer.Read(buf)
		if err != nil {
			return
		}
		if received.Add(int64(n)) == target.Load() {
			done <- struct{}{}
		}
	}
}

// broadcast publishes one event and waits until every reader has read it.
func (db *detachedBench) broadcast(ev *sse.Event) {
	perClient := db.frameLen
	if db.chain != nil {
		perClient = int64(len(db.head) + len(db.chain.add(nil, sse.AppendEvent(nil, ev, true))))
		db.head = nil
	}
	db.target.Add(int64(db.n) * perClient)
	publishTo(db.s, ev)
	<-db.done
}

// close hangs every client up, and closes the stream once they have all
// left: a stream closed with clients ends them over closeSpread, and they
// would end, and allocate, during the next measurement.
func (db *detachedBench) close() {
	for _, p := range db.peers {
		p.Close()
	}
	db.wg.Wait()
	for {
		left := db.s.shared.count()
		if left == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	db.s.close(errStreamClosed)
	db.s.hub.wg.Wait()
}

// BenchmarkBroadcastDetached1000 publishes one event to 1,000 detached
// clients per op; an op ends when every reader has read it.
func BenchmarkBroadcastDetached1000(b *testing.B) {
	const n = 1000
	db := newDetachedBench(b, n)
	ev := benchEvent
	b.ReportAllocs()
	for b.Loop() {
		db.broadcast(&ev)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// TestSharedWriterAllocatesNothingPerClient is
// TestBroadcastAllocatesNothingPerClient for detached clients: their
// shared writers gather and write each client's frames with buffers they
// keep, and a write that never waits allocates nothing.
func TestSharedWriterAllocatesNothingPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 socket pairs")
	}
	allocsPerClient(t, "shared writers", 1, 100, func(n int) broadcaster { return newDetachedBench(t, n) })
}

// TestCompressedSharedWriterAllocatesNothingPerClient is
// TestSharedWriterAllocatesNothingPerClient for compressed clients.
func TestCompressedSharedWriterAllocatesNothingPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 socket pairs")
	}
	for _, enc := range encodings {
		// The first passes size the writers' buffers, and have the runtime
		// start the threads that the socket writes need.
		allocsPerClient(t, enc.name, 20, 100, func(n int) broadcaster { return newDetachedBenchIn(t, n, enc) })
	}
}

func TestNoClientAttachesToAClosedStream(t *testing.T) {
	s := newTestStream(testSettings())
	c := addClient(s)
	s.close(errStreamClosed)
	s.mu.Lock()
	s.clients[c] = struct{}{} // as a join racing the close would have it
	s.mu.Unlock()
	server, _ := socketPair(t)
	if attach(c, []*stream{s}, []*client{c}, server) != nil {
		t.Fatal("a client attached to a closed stream, where no shared writer would end it")
	}
}

// A detached page's drain, held in a write to a full socket, holds every
// member's client in it (client.writing): a member that falls behind in
// its own stream, whichever it is, is cut at once by that stream's
// publish, and the page with it, as a single client's drain is.
func TestDetachedPageDrainIsWatchedInEveryMembersStream(t *testing.T) {
	cfg := testSettings()
	cfg.clientQueue = 2
	s1, s2 := newTestStream(cfg), newTestStream(cfg)
	a, b := addClient(s1), addClient(s2)
	m := newMuxClient([]string{"a", "b"}, []string{"", ""}, []*client{a, b}, nil)
	server, peer := socketPair(t) // the peer reads nothing: the socket fills
	defer peer.Close()
	d := attach(m, []*stream{s1, s2}, []*client{a, b}, server)
	if d == nil {
		t.Fatal("attach refused")
	}
	go d.watch()
	defer func() {
		s1.close(errStreamClosed)
		s2.close(errStreamClosed)
		s1.hub.wg.Wait() // the shard, the drain and the watch
	}()

	// An event far larger than the socket's buffers: its shard writes what
	// fits, and a drain blocks on the rest.
	publishTo(s1, &sse.Event{Data: strings.Repeat("x", 4<<20), HasData: true})
	testkit.Eventually(t, "the drain to hold both members in its write", func() bool {
		return a.writing.Load() != 0 && b.writing.Load() != 0
	})
	for i := 1; i <= 3; i++ {
		publishTo(s2, &sse.Event{Data: strconv.Itoa(i), HasData: true})
	}
	wantPageCut(t, m, "a detached page 3 events behind in its second member's stream, with client_queue 2 and its drain held in a write")
}
