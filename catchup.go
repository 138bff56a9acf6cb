package ssefanout

import (
	"context"
	"errors"
	"time"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"go.uber.org/zap"
)

// This file is what a client's cursor asks for that the ring cannot give:
// the catch-up, by which a client whose Last-Event-ID the buffer no longer
// holds (evicted, or the proxy restarted) still misses nothing, as long as
// the origin can resume from that id; and the stale_event, for a cursor
// nothing can serve.
//
// The stream makes an upstream request with the client's Last-Event-ID, one
// for all the clients that come back with that cursor at about the same
// time (catchupfeed.go), and the client is sent what the origin answers
// until an event arrives that the shared stream holds too. From that event
// on the client reads the shared stream, so it gets each event exactly
// once.

const (
	// catchUpTimeout bounds how long a catch-up may take to meet the shared
	// stream before the client falls back to it.
	catchUpTimeout = 30 * time.Second
	// catchUpMaxEvents bounds how many events a catch-up relays.
	catchUpMaxEvents = 100_000
)

var (
	errCatchUpTooLong  = errors.New("catch-up did not meet the shared stream in time")
	errCatchUpRefused  = errors.New("too many catch-ups under way (max_catch_ups)")
	errCatchUpCanceled = errors.New("catch-up ended before it met the shared stream")
	errCatchUpUnplaced = errors.New("catch-up ended at an id the buffer does not hold")
)

// resume writes what c's cursor asks for before its frames: its catch-up
// from the origin, then the stale_event if the cursor could not be served.
// It fails only when c is gone or ended meanwhile.
func (cu *catchUps) resume(ctx context.Context, c *client, rw *respWriter) error {
	if c.catchUpID != "" {
		if err := cu.catchUp(ctx, c, rw); err != nil {
			return err
		}
	}
	if c.stale {
		cu.announceStale(c, rw)
	}
	return rw.err
}

// catchUp relays the origin's answer to c.catchUpID, then places c on the
// shared stream: at the event where the two met, or after the last event
// relayed, or, when nothing relayed moved its last event ID and neither is
// in the buffer, at the live head (with the stale cursor to be announced
// when nothing was relayed). If the catch-up ends because the client
// left, was ended, or its config was unloaded, or it took the client to an
// id the buffer does not hold, it returns an error and c is not placed: it
// ends, and resumes from its last event ID when it reconnects.
func (cu *catchUps) catchUp(ctx context.Context, c *client, rw *respWriter) error {
	s := cu.s
	ctx, cancel := context.WithTimeoutCause(ctx, catchUpTimeout, errCatchUpTooLong)
	defer cancel()
	// The catch-up also ends when c is ended or the config goes.
	go func() {
		select {
		case <-c.done:
		case <-c.stop:
		case <-ctx.Done():
		}
		cancel()
	}()

	lastSent := string(c.catchUpID)
	met, relayed, err := cu.relay(ctx, c, rw, &lastSent)
	if met {
		s.logger.Debug("catch-up met the shared stream", zap.Int("relayed", relayed))
		return nil
	}
	if rw.err != nil {
		return rw.err // the client is gone
	}
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return errCatchUpCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = context.Cause(ctx)
	}

	window := s.hub.settings.Load().spliceWindow()
	// A client taken past its cursor to an id the buffer does not hold
	// (the answer ran ahead of the shared stream, or the buffer let that
	// id go) has no place on the shared stream without a duplicate or a
	// gap: it is not placed, and resumes from that id when it reconnects,
	// as a browser does when an origin's answer ends.
	moved := lastSent != string(c.catchUpID)
	ok := s.splice(c, func(r *ring) (uint64, bool) { return r.findSetter(lastSent, window) }, !moved)
	if ok {
		return nil // no gap
	}
	if moved {
		return errCatchUpUnplaced
	}
	// A client's cursor is its own: what it costs is logged at debug
	// level, so that clients cannot flood the log; the metrics count it.
	if ce := s.logger.Check(zap.DebugLevel, "catch-up could not serve the client's cursor; sending live events"); ce != nil {
		ce.Write(zap.Int("relayed", relayed), zap.Error(err))
	}
	if relayed == 0 {
		c.staleID, c.stale = c.catchUpID, true
		c.resumed = cursorStale
	}
	return nil
}

// relay copies the origin's answer to c.catchUpID, from the stream's feed
// for that cursor, to the client, the events its filter passes, until an
// event arrives that the shared stream holds too (met), the answer ends,
// or ctx ends. It keeps lastSent at the last event ID the client has been
// taken past, and counts in relayed the events it was taken past.
func (cu *catchUps) relay(ctx context.Context, c *client, rw *respWriter, lastSent *string) (met bool, relayed int, err error) {
	s := cu.s
	feed, err := cu.feedFor(c.catchUpID, c.cfg)
	if errors.Is(err, errCatchUpRefused) {
		s.hub.metrics.catchUpsRefused.Inc()
	}
	if err != nil {
		return false, 0, err
	}
	defer feed.leave()
	for i := 0; ; i++ {
		fe, ok, err := feed.next(ctx, i)
		if !ok {
			return false, relayed, err
		}
		if fe.setsID && cu.spliceBefore(c, &fe.frame) {
			return true, relayed, nil
		}
		if c.filter == nil || c.filter.types.wants(&fe.frame) {
			rw.writeLoose(c, &fe.frame)
			rw.flush()
			if rw.err != nil {
				return false, relayed, rw.err
			}
			c.sent.events.Add(1)
			if c.filter != nil && fe.hasLastID {
				c.filter.lastID = fe.id
			}
		} else {
			s.hub.metrics.countFiltered(1)
		}
		if fe.hasLastID {
			*lastSent = fe.id // where the client is, sent the event or not
		}
		relayed++
	}
}

// spliceBefore places c on the shared stream just before the event f, if
// the buffer holds the same event, and reports whether it did.
func (cu *catchUps) spliceBefore(c *client, f *frame) bool {
	window := cu.s.hub.settings.Load().spliceWindow()
	return cu.s.splice(c, func(r *ring) (uint64, bool) {
		seq, ok := r.findFrame(f, window)
		return seq - 1, ok
	}, false)
}

// announceStale sends the stale_event for a cursor that could not be served.
func (cu *catchUps) announceStale(c *client, rw *respWriter) {
	c.stale = false
	if c.catchUpID == "" { // a failed catch-up has logged already
		cu.s.logger.Debug("client's Last-Event-ID is not in the buffer; sending live events")
	}
	name := c.staleEventName()
	if name == "" {
		return
	}
	// The cursor is the client's own, and parseCursor let no line end in.
	rw.writeLoose(c, newFrame(&sse.Event{Type: name, Data: string(c.staleID), HasData: true}, false))
	rw.flush()
	if rw.err == nil {
		c.sent.events.Add(1)
	}
}
