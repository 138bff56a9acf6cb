package ssefanout

import "sync/atomic"

// This file is the event-type filter a client may choose (filter_param):
// which frames the client is sent, and how its EventSource's lastEventId
// keeps up with the frames it is not sent. client.next applies it, to the
// replay as to live frames; the catch-up relay too; and publish uses it
// to leave a filtered client asleep while nothing is for it.
//
// A frame that a filtered client skips may move the stream's last event
// ID, and the client's EventSource never sees that id. On a reconnect the
// client resumes after the id it holds, and its filter skips those frames
// again, so nothing is lost or repeated, as long as the buffer still
// holds that id. So the client is sent an id-only block (it fires no
// event) with the stream's latest id when the id it holds is about to go
// out of the buffer's reach (idStale), and at a keepalive round in place
// of the keepalive. A frame it skips costs it nothing else: no write, and,
// in its request goroutine, no wake-up (passOver).

// eventFilter is the event types a client chose, validated by
// parseEventFilter (request.go). A block without an event field is of
// type "message", as an EventSource dispatches it.
type eventFilter []string

// wants reports whether a client with the filter is sent f.
func (ef eventFilter) wants(f *frame) bool {
	for _, typ := range ef {
		if typ == f.typ {
			return true
		}
	}
	return false
}

// clientFilter is a filtered client's filter, and what is known of its
// EventSource's lastEventId.
type clientFilter struct {
	types eventFilter

	// idAt is the seq of a frame after which the stream's last event ID
	// is the one the client holds; 0 when no frame the ring holds is. The
	// client's writer sets it; publish reads it.
	idAt atomic.Uint64

	// Used by the client's writer only.
	lastID string // the client's lastEventId, as far as it was sent ids
	round  uint64 // the stream's filter rounds when it was last sent anything
}

// newClientFilter returns the filter of a client that joins with the
// lastEventId lastID, the stream's after the frame idAt.
func newClientFilter(types eventFilter, lastID string, idAt uint64, sig *signals) *clientFilter {
	cf := &clientFilter{types: types, lastID: lastID, round: sig.filterRounds.Load()}
	cf.idAt.Store(idAt)
	return cf
}

// pass reports whether the client is sent f, and if so notes that its
// lastEventId follows f.
func (cf *clientFilter) pass(f *frame) bool {
	if !cf.types.wants(f) {
		return false
	}
	if f.carriesID {
		cf.lastID = f.id
	}
	cf.idAt.Store(f.seq)
	return true
}

// primed notes that the client was sent the cursor priming block: its
// lastEventId is id, the stream's after the frame at.
func (cf *clientFilter) primed(id string, at uint64) {
	cf.lastID = id
	cf.idAt.Store(at)
}

// idStale reports whether the id the client holds is about to go out of
// the buffer's reach: its frame is half the replay window (buffer frames)
// behind the newest, or, once the ring evicts (by count or by bytes), in
// the older half of what it holds. The client is then sent the stream's
// latest id, before a reconnect would no longer find its own. Never
// without a buffer, which replays nothing. The ring's lock must be held.
func (cf *clientFilter) idStale(r *ring, buffer int) bool {
	if buffer <= 0 {
		return false
	}
	idAt := cf.idAt.Load()
	if r.head-idAt >= max(uint64(buffer)/2, 1) {
		return true
	}
	return r.tail > 1 && idAt < r.tail+(r.head-r.tail)/2
}

// settle reports, once the client has been handed the frames up to seq,
// whether it is to be sent an id-only block (client.appendIDBlock), and
// with which id: the stream's last event ID after seq, when the client's
// lastEventId differs from it and is stale (idStale), or a keepalive is
// due (force). The ring's lock must be held.
func (cf *clientFilter) settle(r *ring, seq uint64, buffer int, force bool) (id string, send bool) {
	f := r.get(seq)
	if f == nil {
		return "", false
	}
	if !f.carriesID || f.id == cf.lastID {
		cf.idAt.Store(seq) // the client's lastEventId is the stream's after seq
		return "", false
	}
	if !force && !cf.idStale(r, buffer) {
		return "", false
	}
	cf.lastID = f.id
	cf.idAt.Store(seq)
	return f.id, true
}

// passOver moves the cursor of c, which has been handed every frame
// before f, past f, the frame just published, when c does not want f and
// its lastEventId does not become stale by it: c is then not woken for a
// frame it would skip. It reports whether it did; if not, c is woken as
// any client. The ring's write lock must be held.
func (cf *clientFilter) passOver(c *client, f *frame, buffer int) bool {
	if cf.types.wants(f) || c.cursor.Load() != f.seq-1 {
		return false
	}
	if f.carriesID && cf.idStale(c.ring, buffer) {
		return false // its writer sends it an id-only block
	}
	c.cursor.Store(f.seq)
	return true
}

// quietRound reports whether two filter rounds passed, at least half the
// heartbeat interval, since the client was last sent anything: it is then
// due a keepalive, since the frames it skips keep the stream from being
// silent, and silence is what starts the keepalive rounds of the others.
func (cf *clientFilter) quietRound(sig *signals) bool {
	return sig.filterRounds.Load()-cf.round >= 2
}

// sent notes that the client was just sent something.
func (cf *clientFilter) sent(sig *signals) {
	cf.round = sig.filterRounds.Load()
}
