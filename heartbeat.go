package ssefanout

import (
	"errors"
	"time"
)

// This file is the stream's timer: the keepalive, and the watchdog of
// writes that never complete. One timer per stream, none per client.
//
// Every frame goes to every client, so a stream that published nothing for
// the heartbeat interval has sent nothing to any of its clients for at most
// that long. The stream's timer then starts a keepalive round: it bumps the
// keepalives counter and wakes the clients, and each client's writer sends
// ": keepalive" if it had no frame to send instead. While events flow the
// timer only re-arms itself, at no cost per client.

// heartbeatOffCheck is how often a stream whose heartbeat is off looks
// again, since a config reload may turn it on.
const heartbeatOffCheck = time.Minute

// errWriteTimeout ends a client whose write took longer than write_timeout.
var errWriteTimeout = errors.New("a write to the client took longer than write_timeout")

// runHeartbeat runs keepalive rounds, and watches writes, until the stream
// is closed.
func (s *stream) runHeartbeat() {
	timer := time.NewTimer(s.heartbeatWait())
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
		s.endStuckWrites(s.hub.settings.Load().writeTimeout)
		timer.Reset(s.heartbeatWait())
	}
}

// heartbeatWait starts a keepalive round if the stream has been silent for
// the heartbeat interval, and returns how long to wait before looking again.
func (s *stream) heartbeatWait() time.Duration {
	interval := s.hub.settings.Load().heartbeat
	if interval <= 0 {
		return heartbeatOffCheck
	}
	silent := time.Since(s.started) - time.Duration(s.lastSend.Load())
	if silent < interval {
		return interval - silent
	}
	s.keepaliveRound()
	return interval
}

// keepaliveRound has every client that has nothing else to send sent a
// keepalive.
func (s *stream) keepaliveRound() {
	s.chains.restartAll.Store(true) // a keepalive is a piece of each client's own
	s.signals.keepalives.Add(1)
	s.markSent()
	s.wakeAll()
}

// endStuckWrites ends the clients served in their requests whose write has
// been in flight for longer than timeout. A writer past Caddy's chain
// (respWriter) writes without deadlines, which over HTTP/2 would cost a
// message to the connection's goroutine on every write: a connection that
// takes nothing more would hold its writer for good, and this ends it.
func (s *stream) endStuckWrites(timeout time.Duration) {
	now := time.Now().UnixNano()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.clients {
		if since := c.writing.Load(); since != 0 && now-since > int64(timeout) {
			c.end(errWriteTimeout)
			c.abortWrite() // if it was ended before, its write was not
		}
	}
}
