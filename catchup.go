package ssefanout

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// This file is the catch-up: how a client whose Last-Event-ID the buffer no
// longer holds (evicted, or the proxy restarted) still misses nothing, as
// long as the origin can resume from that id.
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
)

// catchUp relays the origin's answer to c.catchUpID, then places c on the
// shared stream: at the event where the two met, or after the last event
// relayed, or, when neither is in the buffer, at the live head with the
// stale cursor announced. If the catch-up ends because the client left,
// the hub cut it or its config was unloaded, it returns an error and c is
// not placed: it ends, and resumes from its cursor when it reconnects.
func (c *client) catchUp(ctx context.Context, cw *clientWriter, stop <-chan struct{}) error {
	ctx, cancel := context.WithTimeoutCause(ctx, catchUpTimeout, errCatchUpTooLong)
	defer cancel()
	// The catch-up also ends when the hub cuts the client or the config goes.
	go func() {
		select {
		case <-c.done:
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
	}()

	s := c.s
	lastSent := string(c.catchUpID)
	met, relayed, err := c.relay(ctx, cw, &lastSent)
	if met {
		s.logger.Debug("catch-up met the shared stream", zap.Int("relayed", relayed))
		return nil
	}
	if cw.err != nil {
		return cw.err // the client is gone
	}
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return errCatchUpCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = context.Cause(ctx)
	}

	s.mu.Lock()
	c.catchingUp = false
	c.joinedAt = s.ring.head
	seq, ok := s.ring.findSetter(lastSent, s.reg.settings.Load().spliceWindow())
	if ok {
		c.cursor.Store(seq)
	} else {
		c.cursor.Store(s.ring.head)
	}
	s.mu.Unlock()
	if ok {
		return nil // no gap
	}
	// A client's cursor is its own: what it costs is logged at debug
	// level, so that clients cannot flood the log; the metrics count it.
	if ce := s.logger.Check(zap.DebugLevel, "catch-up could not serve the client's cursor; sending live events"); ce != nil {
		ce.Write(zap.Int("relayed", relayed), zap.Error(err))
	}
	if relayed == 0 {
		c.staleID, c.stale = c.catchUpID, true
	}
	return nil
}

// relay copies the origin's answer to c.catchUpID, from the stream's feed
// for that cursor, to the client until an event arrives that the shared
// stream holds too (met), the answer ends, or ctx ends. It keeps lastSent
// at the last event ID the client was sent.
func (c *client) relay(ctx context.Context, cw *clientWriter, lastSent *string) (met bool, relayed int, err error) {
	feed := c.s.catchUpFeedFor(c.catchUpID)
	if feed == nil {
		c.s.reg.metrics.catchUpsRefused.Inc()
		return false, 0, errCatchUpRefused
	}
	defer feed.leave()
	for i := 0; ; i++ {
		fe, ok, err := feed.next(ctx, i)
		if !ok {
			return false, relayed, err
		}
		if fe.setsID && c.spliceBefore(&fe.frame) {
			return true, relayed, nil
		}
		cw.write(fe.bytes)
		cw.flush()
		if cw.err != nil {
			return false, relayed, cw.err
		}
		if fe.hasLastID {
			*lastSent = fe.id
		}
		relayed++
	}
}

// spliceBefore places c on the shared stream just before the event fe, if
// the buffer holds the same event, and reports whether it did.
func (c *client) spliceBefore(fe *frame) bool {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, ok := s.ring.findFrame(fe, s.reg.settings.Load().spliceWindow())
	if ok {
		c.cursor.Store(seq - 1)
		c.joinedAt = s.ring.head
		c.catchingUp = false
	}
	return ok
}
