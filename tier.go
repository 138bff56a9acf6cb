package ssefanout

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sse"
	"go.uber.org/zap"
)

// This file is what makes sse_fanout nodes tiers of one another: the Via
// entry by which a node names itself in its responses and upstream
// requests, the loop check, and what a tier is sent and reads differently
// from a browser.
//
// A node never forwards a client's Via upstream: its upstream connection
// is shared, and the Via of whichever client opened a stream is client
// input. So a request carries the marker of the one tier it came from
// (and whatever plain proxies appended), and a loop is caught from both
// ends: a node refuses a request that carries its own marker (it points
// at itself), or the marker of a node its own upstream answered from (two
// tiers read from each other). Either refuses that request only: a client
// that forges a marker refuses itself.

const (
	// viaComment marks a Via entry as an sse_fanout node's.
	viaComment = "(sse_fanout)"
	// tierStaleEvent is what a tier is sent, instead of the configured
	// stale_event, for a cursor that neither the buffer nor a catch-up
	// could serve: the tier then serves its own client's cursor as stale,
	// with its own stale_event, as one node would.
	tierStaleEvent = "sse_fanout.stale"
	// maxNodeIDLen bounds node_id.
	maxNodeIDLen = 64
	// maxViaMarks is how many sse_fanout markers of a Via are read.
	maxViaMarks = 4
	// maxUpstreamTiers is how many nodes a registry remembers its upstream
	// answering from: several behind a load balancer, and new names after
	// restarts.
	maxUpstreamTiers = 16
)

var (
	// errLoop refuses a request that came back to a tier it passed, and
	// is what a tier's upstream reader reports of such a refusal.
	errLoop = errors.New("loop detected")
	// errTierStale ends a catch-up whose upstream tier could serve the
	// cursor from neither its buffer nor its own upstream.
	errTierStale = errors.New("the upstream tier could not serve the cursor")
)

// defaultNodeID is the node id of every handler of this process that sets
// no node_id: random, so that it tells nothing about the machine, and
// differs between two processes on one machine.
var defaultNodeID = func() string {
	b := make([]byte, 4)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}()

// viaEntry is the Via entry of the node with the given id: a pseudonym
// for received-by (RFC 9110, section 7.6.3), and the comment that says it
// is sse_fanout.
func viaEntry(node string) string { return "1.1 " + node + " " + viaComment }

// checkNodeID reports whether id can be a node's name in Via: an HTTP
// token of at most maxNodeIDLen bytes.
func checkNodeID(id string) error {
	if id == "" || len(id) > maxNodeIDLen {
		return fmt.Errorf("want 1 to %d characters", maxNodeIDLen)
	}
	if !isToken(id) {
		return errors.New("want letters, digits and !#$%&'*+-.^_`|~ only (an HTTP token)")
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2),
// as a node name or a header field name must be.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0) {
			return false
		}
	}
	return s != ""
}

// viaMarks returns the node ids of the sse_fanout entries in Via header
// values, in order, at most limit. The values may come from a client, so
// they are only ever compared, never repeated.
func viaMarks(values []string, limit int) []string {
	var marks []string
	for _, v := range values {
		for len(v) > 0 && len(marks) < limit {
			var entry string
			entry, v = nextViaEntry(v)
			protocol, rest, _ := strings.Cut(strings.TrimSpace(entry), " ")
			node, comment, _ := strings.Cut(strings.TrimSpace(rest), " ")
			if protocol != "" && strings.TrimSpace(comment) == viaComment && checkNodeID(node) == nil {
				marks = append(marks, node)
			}
		}
	}
	return marks
}

// nextViaEntry splits a Via value at its first comma outside a comment.
func nextViaEntry(v string) (entry, rest string) {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '(':
			depth++
		case ')':
			depth = max(depth-1, 0)
		case ',':
			if depth == 0 {
				return v[:i], v[i+1:]
			}
		}
	}
	return v, ""
}

// tierOf returns the sse_fanout node that an upstream response came from,
// the last marker of its Via, or "" for an origin that is not sse_fanout.
func tierOf(h http.Header) string {
	marks := viaMarks(h.Values("Via"), maxViaMarks)
	if len(marks) == 0 {
		return ""
	}
	return marks[len(marks)-1]
}

// loopLocked refuses a request that came back to a tier it passed: it
// carries this node's marker, or that of a node this registry's upstream
// answered from. r.mu must be held. A request that passes here as its
// stream learns its tier is refused by stream.loopLocked, or ended by
// learnTier.
func (r *registry) loopLocked(sr streamRequest) error {
	self := r.settings.Load().nodeID
	for _, node := range sr.via {
		if node == self {
			return fmt.Errorf("%w: the request already passed through this node, %s: an sse_fanout upstream leads back to it", errLoop, node)
		}
		if slices.Contains(r.upstreamTiers, node) {
			return fmt.Errorf("%w: the request comes from %s, the tier this handler reads from: two tiers read from each other", errLoop, node)
		}
	}
	return nil
}

// learnTier records that s's upstream answered from the sse_fanout node,
// or from an origin for "", and ends s's clients that came from that node:
// each is that node's upstream connection, so the two read from each
// other. A request from the node that is joining s meanwhile, past the
// registry's check, is refused by stream.loopLocked once this has run.
func (r *registry) learnTier(s *stream, node string) {
	if node != "" {
		r.mu.Lock()
		if !slices.Contains(r.upstreamTiers, node) {
			if len(r.upstreamTiers) == maxUpstreamTiers {
				r.upstreamTiers = slices.Delete(r.upstreamTiers, 0, 1)
			}
			r.upstreamTiers = append(r.upstreamTiers, node)
		}
		r.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.upstreamTier == node {
		return
	}
	switch {
	case s.upstreamTier == "":
		s.hub.metrics.upstreamTierStreams.Inc()
	case node == "":
		s.hub.metrics.upstreamTierStreams.Dec()
	}
	s.upstreamTier = node
	if node == "" {
		return
	}
	err := fmt.Errorf("%w: the client is %s, the tier this stream reads from", errLoop, node)
	for c := range s.clients {
		if slices.Contains(c.via, node) {
			c.end(err)
			delete(s.clients, c)
		}
	}
}

// loopLocked refuses a request joining s from the node s reads from.
// s.mu must be held: learnTier sets s.upstreamTier under it, so a request
// that passed the registry's check (registry.loopLocked) before s learned
// its tier is refused here, or is among the clients learnTier ends.
func (s *stream) loopLocked(sr streamRequest) error {
	if s.upstreamTier != "" && slices.Contains(sr.via, s.upstreamTier) {
		return fmt.Errorf("%w: the request comes from %s, the tier this stream reads from: two tiers read from each other", errLoop, s.upstreamTier)
	}
	return nil
}

// answeredFrom notes which node answered an upstream request of s (an
// sse_fanout tier, or an origin when a 200 carries no marker), and turns
// a tier's 508 into the loop error it reports.
func (u *upstream) answeredFrom(resp *http.Response) error {
	node := tierOf(resp.Header)
	if u.s.onTier != nil && (node != "" || resp.StatusCode == http.StatusOK) {
		u.s.onTier(node)
	}
	if resp.StatusCode == http.StatusLoopDetected && node != "" {
		return fmt.Errorf("%w: upstream tier %s answered 508: a tier's upstream leads back to it, or two tiers read from each other (tiers in one process need a node_id each)", errLoop, node)
	}
	return nil
}

// isTierStale reports whether ev, a block of an upstream tier's answer
// to a request with a cursor, is the tier's stale marker. The marker is
// the answer's first block but for retry times (first), and has no id
// field: an origin's own event of that type, which the tier passes on as
// any other, is not taken for it.
func isTierStale(ev *sse.Event, first bool) bool {
	return first && ev.Type == tierStaleEvent && !ev.HasID
}

// tierStale reports whether ev, from an upstream tier that was asked to
// resume, says that the tier could not resume the stream from its cursor
// (isTierStale). It is dropped: what the tier sent meanwhile is lost, as
// with an origin that cannot resume.
func (u *upstream) tierStale(ev *sse.Event, first bool) bool {
	if !isTierStale(ev, first) {
		return false
	}
	u.s.logger.Warn("upstream tier could not resume the stream from its last event ID; the events in between are lost",
		zap.String("upstream", u.label))
	return true
}

// asTier marks c as another tier's upstream connection when its request
// carried an sse_fanout marker: it is sent the exact retry time (the tier
// spreads it for its own clients) and tierStaleEvent for a cursor nothing
// could serve. A browser that forges a marker changes only what it is
// sent itself.
func (c *client) asTier(via []string) {
	if len(via) > 0 {
		c.via = via
		c.retryFactor = 1
	}
}

// staleEventName is the event type that announces c's unservable cursor.
func (c *client) staleEventName() string {
	if len(c.via) > 0 {
		return tierStaleEvent
	}
	return c.cfg.staleEvent
}
