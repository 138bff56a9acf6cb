package ssefanout

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// This file is the shared writer: for each stream, up to one goroutine per
// CPU that writes every frame to its share of the stream's detached
// clients (detach.go), in turn, and to the detached multiplexed pages whose
// first member is a client of the stream (mux.go).
//
// A write never waits: the socket takes what fits in its send buffer, and
// a client whose socket is full gets a goroutine of its own (drain) until
// it has caught up. So one slow client never delays the others, and a
// client costs no goroutine of its own while it keeps up.

// clientsPerShard is how many detached clients a stream gathers before it
// adds another shared writer, up to one per CPU.
const clientsPerShard = 256

// detachedClient is a client, or a multiplexed page, that a shared writer
// serves, with its connection, taken over from net/http. It is the writer
// of what it serves (client.writer, muxClient.writer): its shard serves
// many such.
type detachedClient struct {
	x  served    // a client, or a multiplexed page (muxClient)
	cs []*client // x's clients: x itself, or the page's members; its bytes are counted as cs[0]'s
	ss []*stream // the stream of each of cs; its shard is one of ss[0]'s

	conn net.Conn        // what its bytes are written to: its TCP connection, or its TLS connection over it
	tcp  net.Conn        // its TCP connection: closing it ends the client at once, whatever waits on it
	raw  syscall.RawConn // tcp's, for writes that never wait; nil where unsupported
	tls  *tlsRoom        // for a TLS connection, the room in its socket; nil otherwise

	shard *writerShard
	index int // its index in shard.clients; shard.mu guards it

	// draining is set while a goroutine of the client's own writes what
	// its socket would not take at once (drain); its shard leaves the
	// client alone until then. pending holds those bytes.
	draining atomic.Bool
	pending  []byte
}

// wake wakes the client's shard, which looks at each of its clients in
// turn.
func (d *detachedClient) wake() { d.shard.wake() }

// end closes the client's connection, which ends its watch (detach.go):
// the client (a page: its members) was ended. The TCP connection is
// closed, not the TLS one, whose Close would first wait to write an alert.
func (d *detachedClient) end() { d.tcp.Close() }

// sharedWriters are a stream's shared writers.
type sharedWriters struct {
	mu     sync.Mutex
	shards []*writerShard
}

// writerShard is one of a stream's shared writers.
type writerShard struct {
	s     *stream
	wakeC chan struct{} // holds one token when there may be work
	ended chan struct{} // closed when run has returned, its last pass made
	// signalled is set by the first wake since the shard's last pass
	// began: publish wakes each client's writer, and this shard is the
	// writer of many, so the others cost a load, not a channel send.
	signalled atomic.Bool

	mu      sync.Mutex
	clients []*detachedClient // each client's index is its place here

	// Used by the shard's goroutine only.
	visit  []*detachedClient
	out    []byte
	writer nonblockingWriter
}

// attach moves x, whose connection was taken over, from its request
// goroutine to a shared writer of its first client's stream: x is a
// client (cs holds it alone), or a multiplexed page, whose members cs are
// each a client of the stream ss[i]; the page's end, whichever member
// ends it, closes the connection. It returns nil if cs[0] left ss[0]
// meanwhile (it was cut), or ss[0] was closed: no shared writer would
// ever end x.
func attach(x served, ss []*stream, cs []*client, conn net.Conn) *detachedClient {
	s, c := ss[0], cs[0]
	d := &detachedClient{x: x, cs: cs, ss: ss, conn: conn, tcp: conn}
	if tc, ok := conn.(*tls.Conn); ok {
		d.tcp = tc.NetConn()
	}
	d.raw = rawConnOf(d.tcp)
	if d.tcp != conn && d.raw != nil {
		d.tls = newTLSRoom(d.raw)
	}
	bound := s.rebind(c, x, func() writer {
		d.shard = s.shared.pick(s)
		d.shard.add(d)
		s.hub.wg.Add(1) // for its watch
		return d
	})
	if !bound {
		return nil
	}
	select {
	case <-x.ended():
		// Ended as it moved: its end closed nothing of d's.
		d.end()
	default:
	}
	select {
	case <-c.stop:
		// Its config was unloaded while it started: endClientsOf has
		// passed it over, so it ends here, as the others do.
		c.endWithin(errHandlerStopped)
	default:
	}
	return d
}

// pick returns the shard a newly detached client of s joins: the least
// loaded, after adding one if the stream has outgrown its shards. s.mu
// must be held, s open.
func (sw *sharedWriters) pick(s *stream) *writerShard {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if len(sw.shards) < runtime.GOMAXPROCS(0) && sw.countLocked() >= len(sw.shards)*clientsPerShard {
		sh := &writerShard{s: s, wakeC: make(chan struct{}, 1), ended: make(chan struct{})}
		sh.writer.init()
		sw.shards = append(sw.shards, sh)
		s.hub.wg.Add(1)
		go sh.run()
	}
	best, fewest := sw.shards[0], -1
	for _, sh := range sw.shards {
		sh.mu.Lock()
		n := len(sh.clients)
		sh.mu.Unlock()
		if fewest < 0 || n < fewest {
			best, fewest = sh, n
		}
	}
	return best
}

// count is how many clients the shared writers serve.
func (sw *sharedWriters) count() int {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.countLocked()
}

// countLocked is count with sw.mu held.
func (sw *sharedWriters) countLocked() int {
	n := 0
	for _, sh := range sw.shards {
		sh.mu.Lock()
		n += len(sh.clients)
		sh.mu.Unlock()
	}
	return n
}

// wait waits, once the stream is closed, until every shard has made its
// last pass: what the stream published before it closed is sent.
func (sw *sharedWriters) wait() {
	sw.mu.Lock()
	shards := slices.Clone(sw.shards)
	sw.mu.Unlock()
	for _, sh := range shards {
		<-sh.ended
	}
}

// add makes the shard serve d.
func (sh *writerShard) add(d *detachedClient) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	d.index = len(sh.clients)
	sh.clients = append(sh.clients, d)
}

// remove stops serving d.
func (sh *writerShard) remove(d *detachedClient) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	last := len(sh.clients) - 1
	moved := sh.clients[last]
	sh.clients[d.index] = moved
	moved.index = d.index
	sh.clients[last] = nil
	sh.clients = sh.clients[:last]
}

// wake tells the shard there may be something to send. It never blocks.
func (sh *writerShard) wake() {
	if sh.signalled.Load() || sh.signalled.Swap(true) {
		return // a pass is due that will see it
	}
	select {
	case sh.wakeC <- struct{}{}:
	default:
	}
}

// run serves the shard's clients until the stream closes, then sends them
// what the stream published before it closed; the stream then ends them
// (stream.close).
func (sh *writerShard) run() {
	defer sh.s.hub.wg.Done()
	defer close(sh.ended)
	for {
		select {
		case <-sh.wakeC:
			sh.signalled.Store(false) // before the pass reads: a later wake signals again
			sh.pass()
		case <-sh.s.done:
			sh.pass()
			return
		}
	}
}

// pass writes to each client what it has yet to be sent.
func (sh *writerShard) pass() {
	sh.mu.Lock()
	sh.visit = append(sh.visit[:0], sh.clients...)
	sh.mu.Unlock()
	for _, d := range sh.visit {
		sh.serve(d)
	}
	clear(sh.visit)
}

// serve writes to d what it has yet to be sent, as far as its socket takes
// it now, and hands the rest to a drain.
func (sh *writerShard) serve(d *detachedClient) {
	if d.draining.Load() {
		// Its drain may be stuck in a write: publish applies the lag
		// rule to it (client.writing).
		return
	}
	out, more, err := d.x.next(sh.out[:0], maxBatchWrite)
	if err != nil {
		return // it broke the lag rule, and was ended
	}
	if len(out) == 0 {
		return
	}
	written := 0
	switch {
	case d.tls != nil:
		written, err = d.tls.write(d.conn, d.tcp, out)
	case d.raw != nil:
		written, err = sh.writer.write(d.raw, out)
	}
	d.cs[0].sent.bytes.Add(int64(written))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && d.tls == nil:
		// A deadline that the server's request handling left: the
		// drain writes under a deadline of its own, then lifts it.
	case err != nil:
		d.x.end(err) // the client is gone
		return
	}
	if written < len(out) || more {
		d.pending = append([]byte(nil), out[written:]...)
		d.draining.Store(true)
		sh.s.hub.wg.Add(1)
		go sh.drain(d)
	}
	if cap(out) <= maxBatchWrite {
		sh.out = out[:0]
	}
}

// drain writes, from a goroutine of the client's own, what the client's
// socket would not take at once: the rest of a batch, then whatever else
// the client is behind, with blocking writes bounded by write_timeout.
// Once the client has caught up it goes back to its shard.
func (sh *writerShard) drain(d *detachedClient) {
	defer sh.s.hub.wg.Done()
	err := sh.writeBlocking(d, d.pending)
	d.pending = nil
	var out []byte
	for err == nil {
		out, _, err = d.x.next(out[:0], maxBatchWrite)
		if err != nil || len(out) == 0 {
			break
		}
		err = sh.writeBlocking(d, out)
	}
	if err != nil {
		d.x.end(err)
		return
	}
	if d.tls != nil {
		d.tls.forget()
	}
	d.draining.Store(false)
	sh.wake() // for what was published while it drained
}

// writeBlocking writes b to d's connection within write_timeout. While
// it writes, each of d's clients is marked as held in a write
// (client.writing): the stream of each, a page's members' included,
// applies the lag rule to it.
func (sh *writerShard) writeBlocking(d *detachedClient, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	timeout := sh.s.hub.settings.Load().writeTimeout
	if err := d.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	markWriting(d.cs, time.Now().UnixNano())
	n, err := d.conn.Write(b)
	markWriting(d.cs, 0)
	d.cs[0].sent.bytes.Add(int64(n))
	if err != nil {
		return err
	}
	return d.conn.SetWriteDeadline(time.Time{})
}
