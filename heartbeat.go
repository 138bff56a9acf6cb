package ssefanout

import "time"

// This file is the keepalive: one timer per stream, none per client.
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

// runHeartbeat runs keepalive rounds until the stream is closed.
func (s *stream) runHeartbeat() {
	timer := time.NewTimer(s.heartbeatWait())
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		}
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
	s.signals.keepalives.Add(1)
	s.markSent()
	s.wakeAll()
	return interval
}
