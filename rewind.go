package ssefanout

// This file is rewind: a client that joins without a cursor is placed
// back in the ring, so that it is first sent the stream's last events
// from the buffer (rewind 1: the current state), then live ones, with no
// origin request. Being placed back is a replay: its frames keep their
// ids, and do not count as lag (the client joins at the head, joinedAt).

// rewindStart returns the seq to place a joining client's cursor at, so
// that it is sent the last n events that fire and that its filter passes
// (frames that fire nothing, or that the filter leaves out, do not count,
// and the client's filter skips them as ever), among the newest window
// frames; and how many such events there are, fewer than n when the
// buffer holds fewer. The ring's lock must be held.
func (r *ring) rewindStart(n, window int, filter eventFilter) (seq uint64, events int) {
	seq = r.head
	for at, f := range r.backward(window) {
		if events == n {
			break
		}
		if f.fires && (filter == nil || filter.wants(f)) {
			seq, events = at-1, events+1
		}
	}
	return seq, events
}
