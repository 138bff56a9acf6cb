package ssefanout

import (
	"context"
	"sync"
	"unsafe"
)

// This file is the catch-up feed: the origin's answer to one Last-Event-ID,
// fetched once for every client of a stream that comes back with that
// cursor while the fetch is on, or while its events are still being read.
// A crowd that was offline together, longer than the buffer covers, costs
// the origin one catch-up request, not one per client.

// feedEvent is one event of a catch-up feed, encoded once for every
// reader as the shared stream would encode it, so that the two can be
// compared where they meet.
type feedEvent struct {
	frame
	hasLastID bool // the origin has sent an id in this answer; id is the last one
}

// heldCost is what holding fe costs a feed, in bytes: its wire form, its
// id and type, the struct and its place in the feed's list. A feed counts
// it against buffer_bytes, so that an answer of many tiny events is held
// within the bound as one of a few large events is (the wire form alone
// of a tiny event is a tenth of what it holds).
func (fe *feedEvent) heldCost() int {
	return len(fe.bytes) + len(fe.id) + len(fe.typ) + int(unsafe.Sizeof(*fe)) + int(unsafe.Sizeof(fe))
}

// catchUps are a stream's catch-ups: the feeds being read, by cursor, and
// the fetches under way. The catch-up of one client is catchup.go.
type catchUps struct {
	s *stream

	mu      sync.Mutex // guards the fields below; after the stream's (feedFor), before a feed's own
	feeds   map[clientCursor]*catchUpFeed
	fetches int
}

// catchUpFeed fetches the origin's answer to one Last-Event-ID, from a
// goroutine of its own, for the clients that read it.
type catchUpFeed struct {
	cu     *catchUps
	id     clientCursor
	cancel context.CancelFunc

	mu      sync.Mutex
	events  []*feedEvent
	size    int           // what the events held cost (feedEvent.heldCost)
	more    chan struct{} // closed, and replaced, when events grow or the fetch ends
	done    bool          // the fetch has ended; err says why
	err     error
	readers int
}

// feedFor returns the feed of the events after the cursor id,
// starting its fetch if no client is reading one, and counts the caller,
// a client served by cfg, as a reader until it calls leave. It returns
// errCatchUpRefused when starting one would pass cfg's max_catch_ups for
// the stream or max_catch_ups_per_handler, and errStreamClosed once the
// stream has closed.
func (cu *catchUps) feedFor(id clientCursor, cfg *settings) (*catchUpFeed, error) {
	s := cu.s
	// A fetch is counted in the hub's goroutines only while the stream is
	// open (see stream.close): the registry may be waiting for them.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errStreamClosed
	}
	cu.mu.Lock()
	defer cu.mu.Unlock()
	if f := cu.feeds[id]; f != nil {
		f.mu.Lock()
		abandoned := f.readers == 0 // its fetch is being stopped
		if !abandoned {
			f.readers++
		}
		f.mu.Unlock()
		if !abandoned {
			return f, nil
		}
	}
	if cu.fetches >= cfg.maxCatchUps || s.hub.catchUps.Load() >= int64(cfg.maxCatchUpsPerHandler) {
		return nil, errCatchUpRefused
	}
	cu.fetches++ // until the fetch ends
	s.hub.catchUps.Add(1)
	ctx, cancel := context.WithTimeoutCause(s.ctx, catchUpTimeout, errCatchUpTooLong)
	f := &catchUpFeed{cu: cu, id: id, cancel: cancel, more: make(chan struct{}), readers: 1}
	if cu.feeds == nil {
		cu.feeds = make(map[clientCursor]*catchUpFeed)
	}
	cu.feeds[id] = f
	s.hub.metrics.catchUps.Inc()
	s.hub.wg.Add(1)
	go func() { // ends with the stream too: s.ctx is cancelled when it closes
		defer s.hub.wg.Done()
		defer cancel()
		f.finish(f.fetch(ctx))
		cu.mu.Lock()
		cu.fetches--
		cu.mu.Unlock()
		s.hub.catchUps.Add(-1)
	}()
	return f, nil
}

// fetch reads the origin's answer into the feed until the answer ends, it
// grows past the bounds of a catch-up, or ctx ends: when the last reader
// has met the shared stream and left, or the stream closes. Readers meet it
// at different events when some read slower than others, so the fetch goes
// on while any of them reads.
func (f *catchUpFeed) fetch(ctx context.Context) error {
	s := f.cu.s
	cfg := s.hub.settings.Load()
	resp, err := s.up.open(ctx, cfg, string(f.id), true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The parser's last event ID starts empty, not at the cursor: an event
	// without an id is framed without one, so that the cursor is never
	// written back (each reader's browser keeps it as it is).
	p := newOriginParser(resp.Body, cfg)
	fromTier := tierOf(resp.Header) != ""
	hasLastID := false
	first := true // no block read yet but retry times
	for n := 0; n < catchUpMaxEvents; n++ {
		ev, err := p.Next()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return err
		}
		if ev.RetryOnly() {
			continue // retry only: a client's retry comes from the stream
		}
		if fromTier && isTierStale(&ev, first) {
			return errTierStale // the client's cursor is stale here too
		}
		first = false
		hasLastID = hasLastID || ev.HasID
		fe := &feedEvent{
			frame:     *newFrame(&ev, hasLastID),
			hasLastID: hasLastID,
		}
		if !f.add(fe, cfg.bufferBytes) {
			return errCatchUpTooLong
		}
	}
	return errCatchUpTooLong
}

// add appends an event for the readers, unless the feed would hold more
// than limit bytes.
func (f *catchUpFeed) add(fe *feedEvent, limit int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	cost := fe.heldCost()
	if f.size+cost > limit {
		return false
	}
	f.events = append(f.events, fe)
	f.size += cost
	close(f.more)
	f.more = make(chan struct{})
	return true
}

// finish records that the fetch ended, and why.
func (f *catchUpFeed) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	close(f.more)
	readers := f.readers
	f.mu.Unlock()
	if readers == 0 {
		f.forget()
	}
}

// next returns the event at index i, waiting for it if the fetch is still
// on. It reports false, with why, when the feed ended before i, or ctx did.
func (f *catchUpFeed) next(ctx context.Context, i int) (*feedEvent, bool, error) {
	for {
		f.mu.Lock()
		if i < len(f.events) {
			fe := f.events[i]
			f.mu.Unlock()
			return fe, true, nil
		}
		done, err, more := f.done, f.err, f.more
		f.mu.Unlock()
		if done {
			return nil, false, err
		}
		select {
		case <-more:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// leave counts a reader out. The last one to leave stops a fetch that is
// still on, and the feed is forgotten once its fetch has ended.
func (f *catchUpFeed) leave() {
	f.mu.Lock()
	f.readers--
	last, done := f.readers == 0, f.done
	f.mu.Unlock()
	if !last {
		return
	}
	if !done {
		f.cancel() // finish forgets it
		return
	}
	f.forget()
}

// forget removes the feed from its stream, so that a later client with the
// same cursor starts a fetch of its own.
func (f *catchUpFeed) forget() {
	cu := f.cu
	cu.mu.Lock()
	defer cu.mu.Unlock()
	if cu.feeds[f.id] == f {
		delete(cu.feeds, f.id)
	}
}
