package ssefanout

import (
	"bytes"
	"cmp"
	"iter"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
)

// This file is a stream's ring of encoded frames: the replay buffer and
// every client's queue at once.

// frame is one encoded block, shared by the replay buffer and every client
// that is sent it. Nobody modifies a frame once it is published.
type frame struct {
	seq       uint64      // position in the stream, from 1; set by ring.push
	id        string      // the stream's last event ID after this frame
	setsID    bool        // the frame's own block had an id field
	carriesID bool        // bytes hold an id line: the frame sets a client's lastEventId to id
	fires     bool        // the block has data: an EventSource fires an event for it
	typ       string      // the event type it dispatches as: "message" when it has none
	bytes     []byte      // the wire form, written to clients as is
	packs     *framePacks // its compressed forms (compresschain.go); nil when no client of its stream was compressed

	// size is its one size, what buffer_bytes counts: its bytes and every
	// compressed form made of it so far (grow). held is the count of the
	// ring that holds it, set by push, which grow keeps up to date too.
	size atomic.Int64
	held *atomic.Int64
}

// newFrame encodes ev once, as every client is sent it, with an id line
// when withID is set.
func newFrame(ev *sse.Event, withID bool) *frame {
	f := &frame{
		id:        ev.ID,
		setsID:    ev.HasID,
		carriesID: withID,
		fires:     ev.HasData,
		typ:       cmp.Or(ev.Type, "message"),
		bytes:     sse.AppendEvent(nil, ev, withID),
	}
	f.size.Store(int64(len(f.bytes)))
	return f
}

// grow counts n more bytes of f's compressed forms in its size, and in the
// count of the ring that holds it, if one does. Forms are made before f is
// pushed, by the upstream reader, or, once it is held, under the ring's
// read lock: never while push or eviction, under the write lock, reads it.
func (f *frame) grow(n int) {
	f.size.Add(int64(n))
	if f.held != nil {
		f.held.Add(int64(n))
	}
}

// sameEvent reports whether f and g are the same event: the same id, set
// the same way, and the same bytes (type and data).
func (f *frame) sameEvent(g *frame) bool {
	return f.setsID == g.setsID && f.id == g.id && bytes.Equal(f.bytes, g.bytes)
}

// ring holds a stream's most recent frames, oldest evicted first, bounded
// both in count and in bytes. It is at once the replay buffer and every
// client's queue: a client is a cursor into it (the seq of the last frame it
// was handed), so publishing costs no copy and no allocation per client.
//
// Its methods are NOT safe for concurrent use: mu guards the fields. The
// stream's upstream reader pushes under the write lock; clients' writers
// read under the read lock (client.next).
type ring struct {
	mu       sync.RWMutex
	slots    []*frame // the frame with seq n is in slots[n%len(slots)]
	head     uint64   // seq of the newest frame; 0 before the first
	tail     uint64   // seq of the oldest frame held; head+1 when empty
	maxBytes int      // evict the oldest while heldBytes exceeds this (0: no byte bound)
	hasIDs   bool     // some frame's block had an id: from then on every frame carries one
	// size is the sum of the sizes of the frames held (frame.size), kept
	// by push and eviction and, as a held frame's forms are made, by
	// frame.grow under the read lock.
	size atomic.Int64
}

// newRing returns a ring that holds at most count frames (at least one) and,
// when maxBytes > 0, at most maxBytes bytes, beyond the newest frame.
func newRing(count, maxBytes int) *ring {
	if count < 1 {
		count = 1
	}
	return &ring{slots: make([]*frame, count), tail: 1, maxBytes: maxBytes}
}

// push appends f, numbers it, and evicts what no longer fits.
func (r *ring) push(f *frame) {
	r.head++
	f.seq = r.head
	if r.head-r.tail+1 > uint64(len(r.slots)) {
		r.evictOldest()
	}
	r.slots[r.head%uint64(len(r.slots))] = f
	r.hasIDs = r.hasIDs || f.setsID
	f.held = &r.size
	r.size.Add(f.size.Load())
	for r.maxBytes > 0 && r.heldBytes() > r.maxBytes && r.tail < r.head {
		r.evictOldest()
	}
}

func (r *ring) evictOldest() {
	i := r.tail % uint64(len(r.slots))
	if f := r.slots[i]; f != nil {
		r.size.Add(-f.size.Load())
		r.slots[i] = nil
	}
	r.tail++
}

// heldBytes is how many bytes the frames held take, compressed forms
// included: what buffer_bytes bounds.
func (r *ring) heldBytes() int { return int(r.size.Load()) }

// lastID returns the stream's last event ID, and whether it has one: the
// id of the newest frame, once the origin has sent an id. It is only ever
// the origin's, never a client's cursor.
func (r *ring) lastID() (string, bool) {
	if !r.hasIDs {
		return "", false
	}
	return r.get(r.head).id, true
}

// get returns the frame with the given seq, or nil if it is not held.
func (r *ring) get(seq uint64) *frame {
	if seq < r.tail || seq > r.head {
		return nil
	}
	return r.slots[seq%uint64(len(r.slots))]
}

// backward yields the ring's frames with their seqs, newest first, among
// the newest window frames: the one backward walk that every lookup by id,
// event or rewind takes.
func (r *ring) backward(window int) iter.Seq2[uint64, *frame] {
	return func(yield func(uint64, *frame) bool) {
		for n := r.head; n >= r.tail && n > 0 && r.head-n < uint64(window); n-- {
			if f := r.get(n); f != nil && !yield(n, f) {
				return
			}
		}
	}
}

// findID returns the seq of the newest frame, among the newest window
// frames, whose last event ID is id, and reports whether there is one. A
// client that sent id as its Last-Event-ID resumes after that frame.
//
// HTTP trims spaces and tabs around a header value, so a Last-Event-ID
// header cannot carry an id that begins or ends with one: when no id
// matches exactly, an id that matches once trimmed does.
func (r *ring) findID(id string, window int) (uint64, bool) {
	for _, same := range []func(string) bool{
		func(have string) bool { return have == id },
		func(have string) bool { return strings.Trim(have, " \t") == id },
	} {
		for n, f := range r.backward(window) {
			if same(f.id) {
				return n, true
			}
		}
	}
	return 0, false
}

// findSetter returns the seq of the newest frame, among the newest window
// frames, whose own id field set the last event ID to id, and reports
// whether there is one.
func (r *ring) findSetter(id string, window int) (uint64, bool) {
	for n, f := range r.backward(window) {
		if f.setsID && f.id == id {
			return n, true
		}
	}
	return 0, false
}

// findFrame returns the seq of the newest frame, among the newest window
// frames, that is the same event as f, and reports whether there is one.
func (r *ring) findFrame(f *frame, window int) (uint64, bool) {
	for n, held := range r.backward(window) {
		if held.sameEvent(f) {
			return n, true
		}
	}
	return 0, false
}
