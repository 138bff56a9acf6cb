package ssefanout

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// This file is the shared writer: for each stream, up to one goroutine per
// CPU that writes every frame to its share of the stream's detached
// clients (detach.go), in turn.
//
// A write never waits: the socket takes what fits in its send buffer, and
// a client whose socket is full gets a goroutine of its own (drain) until
// it has caught up. So one slow client never delays the others, and a
// client costs no goroutine of its own while it keeps up.

// clientsPerShard is how many detached clients a stream gathers before it
// adds another shared writer, up to one per CPU.
const clientsPerShard = 256

// detachedClient is a client that a shared writer serves, with its
// connection, taken over from net/http.
type detachedClient struct {
	*client
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

// end ends the client with cause and closes its connection, which ends its
// watch (detach.go). The TCP connection is closed, not the TLS one, whose
// Close would first wait to write an alert.
func (d *detachedClient) end(cause error) {
	d.client.end(cause)
	d.tcp.Close()
}

// endWithin ends the client and closes its connection at a moment of its
// own (client.endWithin).
func (d *detachedClient) endWithin(cause error) {
	d.client.endWithin(cause, func() { d.tcp.Close() })
}

// writerShard is one of a stream's shared writers.
type writerShard struct {
	s     *stream
	wakeC chan struct{} // holds one token when there may be work

	mu      sync.Mutex
	clients []*detachedClient // each client's index is its place here

	// Used by the shard's goroutine only.
	visit  []*detachedClient
	out    []byte
	writer nonblockingWriter
}

// attach moves c, whose connection was taken over, from the clients served
// in their request goroutines to a shared writer. It returns nil if c was
// ended meanwhile, or the stream was closed: no shared writer would ever
// end such a client.
func (s *stream) attach(c *client, conn net.Conn) *detachedClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[c]; !ok || s.closed {
		return nil
	}
	delete(s.clients, c)
	d := &detachedClient{client: c, conn: conn, tcp: conn}
	if tc, ok := conn.(*tls.Conn); ok {
		d.tcp = tc.NetConn()
	}
	d.raw = rawConnOf(d.tcp)
	if d.tcp != conn && d.raw != nil {
		d.tls = newTLSRoom(d.raw)
	}
	d.shard = s.shardForLocked()
	d.shard.add(d)
	s.detached++
	s.hub.wg.Add(1) // for its watch
	select {
	case <-c.stop:
		// Its config was unloaded while it started: endClientsOf has
		// passed it over, so it ends here, as the others do.
		d.endWithin(errHandlerStopped)
	default:
	}
	return d
}

// shardForLocked returns the shard a newly detached client joins: the
// least loaded, after adding one if the stream has outgrown its shards.
// s.mu must be held.
func (s *stream) shardForLocked() *writerShard {
	if len(s.shards) < runtime.GOMAXPROCS(0) && s.detached >= len(s.shards)*clientsPerShard {
		sh := &writerShard{s: s, wakeC: make(chan struct{}, 1)}
		sh.writer.init()
		s.shards = append(s.shards, sh)
		s.hub.wg.Add(1)
		go sh.run()
	}
	best, fewest := s.shards[0], -1
	for _, sh := range s.shards {
		sh.mu.Lock()
		n := len(sh.clients)
		sh.mu.Unlock()
		if fewest < 0 || n < fewest {
			best, fewest = sh, n
		}
	}
	return best
}

// endDetached ends, each at a moment of its own, the detached clients that
// the handler with this stop channel served.
func (s *stream) endDetached(stop <-chan struct{}) {
	s.mu.RLock()
	shards := append([]*writerShard(nil), s.shards...)
	s.mu.RUnlock()
	for _, sh := range shards {
		sh.mu.Lock()
		for _, d := range sh.clients {
			if d.stop == stop {
				d.endWithin(errHandlerStopped)
			}
		}
		sh.mu.Unlock()
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
	select {
	case sh.wakeC <- struct{}{}:
	default:
	}
}

// run serves the shard's clients until the stream closes, then sends them
// what the stream published before it closed and ends each at a moment of
// its own.
func (sh *writerShard) run() {
	defer sh.s.hub.wg.Done()
	for {
		select {
		case <-sh.wakeC:
			sh.pass()
		case <-sh.s.done:
			sh.pass()
			sh.mu.Lock()
			for _, d := range sh.clients {
				d.endWithin(errStreamClosed)
			}
			sh.mu.Unlock()
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
		// Its drain may be stuck in a write: the lag rule still applies.
		queue := uint64(sh.s.hub.settings.Load().clientQueue)
		d.ring.mu.RLock()
		lagging := d.client.cutIfLagging(queue)
		d.ring.mu.RUnlock()
		if lagging {
			d.tcp.Close()
		}
		return
	}
	out, more, err := d.client.next(sh.out[:0], maxBatchWrite)
	if err != nil {
		d.tcp.Close()
		return
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
	d.sent.bytes.Add(int64(written))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) && d.tls == nil:
		// A deadline that the server's request handling left: the
		// drain writes under a deadline of its own, then lifts it.
	case err != nil:
		d.end(err) // the client is gone
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
		out, _, err = d.client.next(out[:0], maxBatchWrite)
		if err != nil || len(out) == 0 {
			break
		}
		err = sh.writeBlocking(d, out)
	}
	if err != nil {
		d.end(err)
		return
	}
	if d.tls != nil {
		d.tls.forget()
	}
	d.draining.Store(false)
	sh.wake() // for what was published while it drained
}

// writeBlocking writes b to d's connection within write_timeout.
func (sh *writerShard) writeBlocking(d *detachedClient, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	timeout := sh.s.hub.settings.Load().writeTimeout
	if err := d.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	n, err := d.conn.Write(b)
	d.sent.bytes.Add(int64(n))
	if err != nil {
		return err
	}
	return d.conn.SetWriteDeadline(time.Time{})
}
