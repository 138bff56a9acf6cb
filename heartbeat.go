package ssefanout

import "time"

// This file is the stream's timer: the keepalive rounds, and the ticks of
// the write watchdog (watchdog.go). One timer per stream, none per client.
//
// Every frame goes to every client that has no filter, so a stream that
// published nothing for the heartbeat interval has sent nothing to any of
// them for at most that long. The stream's timer then starts a keepalive
// round: it bumps the keepalives counter and wakes the clients, and each
// client's writer sends ": keepalive" if it had no frame to send instead.
// While events flow the timer only re-arms itself, at no cost per client.
//
// A client with an event-type filter (filter.go) may be sent nothing while
// events flow. While a stream has such clients, its timer also starts a
// filter round every half interval: it bumps the filterRounds counter and
// wakes the filtered clients, and one that was sent nothing since the
// round before is sent a keepalive (clientFilter.quietRound), or the
// id-only block that keeps its lastEventId with the stream: so it is sent
// something at least once per interval. The other clients are sent
// nothing for a filter round.

// runHeartbeat runs keepalive rounds, and watches writes, until the stream
// is closed.
func (s *stream) runHeartbeat() {
	var lastFilterRound time.Duration // since started
	timer := time.NewTimer(s.heartbeatWait(&lastFilterRound))
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
		s.endStuckWrites(s.hub.settings.Load().writeTimeout)
		timer.Reset(s.heartbeatWait(&lastFilterRound))
	}
}

// heartbeatWait starts a keepalive round if the stream has been silent for
// the heartbeat interval, and a filter round if it has filtered clients and
// the last was half an interval ago, and returns how long to wait before
// looking again: at most half an interval, so that a filtered client that
// joins meets a filter round soon, and at most a quarter of write_timeout,
// so that the watchdog ends a stuck write soon after write_timeout, the
// heartbeat off or long.
func (s *stream) heartbeatWait(lastFilterRound *time.Duration) time.Duration {
	cfg := s.hub.settings.Load()
	interval := cfg.heartbeat
	watch := max(cfg.writeTimeout/4, time.Millisecond)
	if interval <= 0 {
		return watch // and so looks again for a reload that turns it on
	}
	now := time.Since(s.started)
	wait := interval - (now - time.Duration(s.lastSend.Load()))
	if wait <= 0 {
		s.keepaliveRound()
		wait = interval
	}
	half := max(interval/2, time.Millisecond)
	if s.filtered.Load() > 0 && now-*lastFilterRound >= half {
		*lastFilterRound = now
		s.signals.filterRounds.Add(1)
		s.wakeFiltered()
	}
	return min(wait, half, watch)
}

// wakeFiltered wakes, for a filter round, the writers of the filtered
// clients.
func (s *stream) wakeFiltered() {
	s.eachClient(func(c *client) {
		if c.filter != nil {
			c.writer().wake()
		}
	})
}

// keepaliveRound has every client that has nothing else to send sent a
// keepalive.
func (s *stream) keepaliveRound() {
	s.chains.restartAll.Store(true) // a keepalive is a piece of each client's own
	s.signals.keepalives.Add(1)
	s.markSent()
	s.wakeAll()
}
