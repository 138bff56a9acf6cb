package ssefanout

import (
	"errors"
	"os"
	"runtime"
	"sync"
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

// writerShard is one of a stream's shared writers.
type writerShard struct {
	s     *stream
	wakeC chan struct{} // holds one token when there may be work

	mu      sync.Mutex
	clients []*client // each client's shardIndex is its index here

	// Used by the shard's goroutine only.
	visit  []*client
	frames []*frame
	out    []byte
	writer nonblockingWriter
}

// shardForLocked returns the shard a newly detached client joins: the
// least loaded, after adding one if the stream has outgrown its shards.
// s.mu must be held.
func (s *stream) shardForLocked() *writerShard {
	if len(s.shards) < runtime.GOMAXPROCS(0) && s.detached >= len(s.shards)*clientsPerShard {
		sh := &writerShard{s: s, wakeC: make(chan struct{}, 1)}
		sh.writer.init()
		s.shards = append(s.shards, sh)
		s.reg.wg.Add(1)
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

// add makes the shard serve c.
func (sh *writerShard) add(c *client) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.shardIndex = len(sh.clients)
	sh.clients = append(sh.clients, c)
}

// remove stops serving c.
func (sh *writerShard) remove(c *client) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	last := len(sh.clients) - 1
	moved := sh.clients[last]
	sh.clients[c.shardIndex] = moved
	moved.shardIndex = c.shardIndex
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
	defer sh.s.reg.wg.Done()
	for {
		select {
		case <-sh.wakeC:
			sh.pass()
		case <-sh.s.done:
			sh.pass()
			sh.mu.Lock()
			for _, c := range sh.clients {
				c.endWithin(errStreamClosed)
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
	queue := uint64(sh.s.reg.settings.Load().clientQueue)
	events, size := 0, 0
	for _, c := range sh.visit {
		n, b := sh.serve(c, queue)
		events += n
		size += b
	}
	clear(sh.visit)
	sh.s.reg.metrics.countSent(events, size)
}

// serve writes to c what it has yet to be sent, as far as its socket takes
// it now, and hands the rest to a drain. A client more than queue frames
// behind is cut. It returns how many frames it sent, and their size.
func (sh *writerShard) serve(c *client, queue uint64) (events, size int) {
	s := sh.s
	if c.conn.draining.Load() {
		if s.behind(c, queue) {
			sh.cutSlow(c)
		}
		return 0, 0
	}
	frames, ok := s.framesFor(c, sh.frames[:0], queue)
	if !ok {
		sh.cutSlow(c)
		return 0, 0
	}
	out, n, size := c.appendPending(sh.out[:0], frames, maxBatchWrite)
	clear(frames)
	sh.frames = frames[:0]
	if len(out) == 0 {
		return 0, 0
	}
	written := 0
	if c.conn.raw != nil {
		var err error
		written, err = sh.writer.write(c.conn.raw, out)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A deadline that the server's request handling left: the
			// drain writes under a deadline of its own, then lifts it.
		case err != nil:
			c.end(err) // the client is gone
			return n, size
		}
	}
	if written < len(out) || n < len(frames) {
		c.conn.pending = append([]byte(nil), out[written:]...)
		c.conn.draining.Store(true)
		s.reg.wg.Add(1)
		go c.drain()
	}
	if cap(out) <= maxBatchWrite {
		sh.out = out[:0]
	}
	return n, size
}

// cutSlow cuts a client that fell more than client_queue frames behind.
func (sh *writerShard) cutSlow(c *client) {
	sh.s.reg.metrics.slowClientDrops.Inc()
	c.end(errSlowClient)
}

// drain writes, from a goroutine of the client's own, what the client's
// socket would not take at once: the rest of a batch, then whatever else
// the client is behind, with blocking writes bounded by write_timeout.
// Once the client has caught up it goes back to its shard.
func (c *client) drain() {
	defer c.s.reg.wg.Done()
	dc := c.conn
	err := c.writeBlocking(dc.pending)
	dc.pending = nil
	var frames []*frame
	var out []byte
	for err == nil {
		var ok bool
		frames, ok = c.s.framesAfter(frames[:0], c.cursor.Load())
		if !ok {
			c.s.reg.metrics.slowClientDrops.Inc()
			err = errSlowClient
			break
		}
		if len(frames) == 0 {
			break
		}
		var n, size int
		out, n, size = c.appendPending(out[:0], frames, maxBatchWrite)
		c.s.reg.metrics.countSent(n, size)
		clear(frames)
		err = c.writeBlocking(out)
	}
	if err != nil {
		c.end(err)
		return
	}
	dc.draining.Store(false)
	c.shard.wake() // for what was published while it drained
}

// writeBlocking writes b to a detached client's connection within
// write_timeout.
func (c *client) writeBlocking(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	dc := c.conn
	timeout := c.s.reg.settings.Load().writeTimeout
	if err := dc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := dc.Write(b); err != nil {
		return err
	}
	return dc.SetWriteDeadline(time.Time{})
}
