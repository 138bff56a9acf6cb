package ssefanout

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// This file is the admin API's GET /sse_fanout/streams: every open stream
// with its upstream, clients, buffer and state.

func init() {
	caddy.RegisterModule(adminStreams{})
}

// adminStreams provides the /sse_fanout/streams endpoint of Caddy's admin
// API: every open stream with its upstream, clients, buffer and state, as
// /reverse_proxy/upstreams does for reverse_proxy.
type adminStreams struct{}

// CaddyModule returns the Caddy module information.
func (adminStreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sse_fanout",
		New: func() caddy.Module { return new(adminStreams) },
	}
}

// Routes returns the route of the /sse_fanout/streams endpoint.
func (a adminStreams) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/sse_fanout/streams",
		Handler: caddy.AdminHandlerFunc(a.handleStreams),
	}}
}

// streamStatus is one stream as the admin endpoint reports it.
type streamStatus struct {
	Upstream        string     `json:"upstream"`     // the handler's base URL
	Key             string     `json:"key"`          // the stream key: path and query, and the key template's value
	UpstreamURL     string     `json:"upstream_url"` // where the stream reads
	Clients         int        `json:"clients"`
	DetachedClients int        `json:"detached_clients"` // of Clients, those a shared writer serves
	Buffered        int        `json:"buffered"`         // events held
	BufferedBytes   int        `json:"buffered_bytes"`   // bytes held, compressed forms included
	FirstID         string     `json:"first_id"`         // last event ID of the oldest event held
	LastID          string     `json:"last_id"`          // the stream's last event ID
	EventsReceived  uint64     `json:"events_received"`
	UpstreamState   string     `json:"upstream_state"`              // connecting, connected, backoff or stopped
	UpstreamError   string     `json:"upstream_error,omitempty"`    // why the last attempt failed; cleared on connect
	UpstreamErrorAt *time.Time `json:"upstream_error_at,omitempty"` // when it failed
	ConnectedSince  *time.Time `json:"connected_since,omitempty"`
	UpstreamConnect int        `json:"upstream_connects"`       // connections opened so far
	Node            string     `json:"node"`                    // this node's node_id
	UpstreamTier    string     `json:"upstream_tier,omitempty"` // the sse_fanout node the upstream answered from; absent for an origin

	// Of Clients, those sent a compressed stream, by encoding.
	CompressedClients map[string]int64 `json:"compressed_clients,omitempty"`
}

func (adminStreams) handleStreams(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{
			HTTPStatus: http.StatusMethodNotAllowed,
			Err:        fmt.Errorf("method not allowed"),
		}
	}
	statuses := []streamStatus{}
	registries.Range(func(_, value any) bool {
		statuses = append(statuses, value.(*registry).statuses()...)
		return true
	})
	sort.Slice(statuses, func(i, j int) bool {
		if statuses[i].Upstream != statuses[j].Upstream {
			return statuses[i].Upstream < statuses[j].Upstream
		}
		return statuses[i].Key < statuses[j].Key
	})
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(statuses); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return nil
}

// statuses reports the registry's open streams.
func (r *registry) statuses() []streamStatus {
	streams := r.liveStreams()
	out := make([]streamStatus, 0, len(streams))
	for _, s := range streams {
		out = append(out, s.status())
	}
	return out
}

// status reports the stream's state. Its key and upstream URL are shown as
// their labels: no credential is in them.
func (s *stream) status() streamStatus {
	clients, tier := s.clientsAndTier()
	up := s.up.status()
	st := streamStatus{
		Upstream:        s.hub.upstreamLabel,
		Key:             s.label,
		UpstreamURL:     s.up.label,
		Clients:         clients,
		DetachedClients: s.shared.count(),
		EventsReceived:  s.up.received.Load(),
		UpstreamState:   up.state,
		UpstreamError:   up.lastErr,
		UpstreamConnect: up.connects,
		Node:            s.hub.settings.Load().nodeID,
		UpstreamTier:    tier,
	}
	for i := range s.chains.of {
		if n := s.chains.of[i].users.Load(); n > 0 {
			if st.CompressedClients == nil {
				st.CompressedClients = make(map[string]int64)
			}
			st.CompressedClients[encodings[i].name] = n
		}
	}
	s.ring.mu.RLock()
	st.BufferedBytes = s.ring.heldBytes()
	st.LastID, _ = s.ring.lastID()
	if s.ring.head >= s.ring.tail {
		st.Buffered = int(s.ring.head - s.ring.tail + 1)
		if f := s.ring.get(s.ring.tail); f != nil {
			st.FirstID = f.id
		}
	}
	s.ring.mu.RUnlock()
	if !up.lastErrAt.IsZero() {
		at := up.lastErrAt
		st.UpstreamErrorAt = &at
	}
	if up.state == stateConnected {
		since := up.connectedAt
		st.ConnectedSince = &since
	}
	return st
}

// Interface guards
var _ caddy.AdminRouter = (*adminStreams)(nil)
