// Package ssefanout registers a Caddy HTTP handler, sse_fanout, that serves
// each Server-Sent Events stream of an origin to any number of clients over
// one upstream connection per stream.
package ssefanout

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// registries holds one registry per upstream identity, so that streams,
// their buffers and their upstream connections outlive a config reload that
// keeps them: Caddy provisions the new config before it cleans up the old,
// so an unchanged key never drops to zero references.
var registries = caddy.NewUsagePool()

// Handler fans out Server-Sent Events. For each stream, that is each
// request path and query, it holds one connection to the origin, at the
// upstream base URL with the request's path and query appended, and sends
// the events it reads to every client of that stream.
//
// GET requests are answered at once with 200 and Content-Type
// text/event-stream, whether or not the origin is up; events follow as the
// origin sends them. Clients are sent ": keepalive" comments when a stream
// is silent, and the configured retry time. Other methods go to the next
// handler. A stream that has max_clients clients answers new ones with 503
// and a Retry-After header, and so does a new stream past max_streams when
// no idle stream can give way. Every response carries a Via header that
// names this node (node_id); a request whose Via shows that it already
// passed through this node, or through the tier this handler reads from,
// is answered 508 Loop Detected. A cursor (Last-Event-ID or the last_event_id
// query parameter) that holds a control character is answered 400, and so
// is a bad event-type filter (filter_param), and a request path that would
// leave the upstream base path, or could (its dot segments are removed on
// the decoded path; see cleanPath); a response that a handler in front
// buffers, 500. Each refusal has a short text/plain body that says why,
// and none is returned to Caddy as an error: Caddy would log the request
// with its URI, and so any token in its query.
//
// No header of the client's request is sent upstream, since the upstream
// connection is shared by every client of the stream: forwarding one
// client's cookies or credentials would show its stream to the others.
// Use header_up for what the origin needs.
//
// Handlers with the same upstream, header_up, key, key_ignore_query,
// node_id and stream-shaping settings (buffer, buffer_bytes, client_queue,
// max_event_size, max_streams, the per-handler max_catch_ups) share their
// streams, in one config and across a reload that keeps them. Each serves
// its own clients by its own settings; what a stream has one of
// (heartbeat, idle_close, upstream_timeout) is chosen over the handlers
// whose config is running, whatever order Caddy provisions them in.
type Handler struct {
	// The origin's base URL, such as "http://localhost:9000" or
	// "https://origin.example/sse". The request path, its dot segments
	// removed, and query, with the bytes a query may not hold escaped, are
	// appended to its path; a request path that would leave it is answered
	// 400, and a redirect out of it is not followed. Required.
	Upstream string `json:"upstream,omitempty"`

	// How long a client may be sent nothing before it is sent a
	// ": keepalive" comment, so that idle timeouts along the way never
	// fire. Default: 15s. A negative value turns keepalives off.
	Heartbeat caddy.Duration `json:"heartbeat,omitempty"`

	// The reconnection time sent to clients in a "retry:" field, replacing
	// any retry the origin sends. Unset: the origin's retry passes through.
	Retry *caddy.Duration `json:"retry,omitempty"`

	// How many recent events each stream keeps to answer a reconnecting
	// client's Last-Event-ID from memory. Default: 1024. 0 turns replay off.
	Buffer *int `json:"buffer,omitempty"`

	// The most bytes of events each stream keeps, for replay and for
	// clients that are behind; the oldest go first. Default: 8 MiB.
	BufferBytes int `json:"buffer_bytes,omitempty"`

	// Headers sent on every upstream request, besides
	// "Accept: text/event-stream" and "Cache-Control: no-cache". Values may
	// use global placeholders such as {env.TOKEN}, which are replaced once
	// when the config loads, and per-request placeholders that the key
	// holds. A per-request value must be one token (no comma, semicolon,
	// space, quote, backslash or control character; a client's header
	// copied whole, no control character), or the request is answered 400.
	HeaderUp http.Header `json:"header_up,omitempty"`

	// How many of the buffer's last events a client that joins without a
	// cursor is sent first, with their ids, then live ones, with no origin
	// request (1: the current state). Only events that fire count, and
	// those a filtered client passes. At most buffer. Default: 0.
	Rewind int `json:"rewind,omitempty"`

	// How many events a client may fall behind the stream before it is
	// disconnected; it then reconnects and resumes from the buffer. It
	// never slows the stream or the other clients. Default: 256.
	ClientQueue int `json:"client_queue,omitempty"`

	// How long the upstream connection stays open after the stream's last
	// client left, so that a client that reconnects finds it warm.
	// Default: 30s. A negative value closes it at once.
	IdleClose caddy.Duration `json:"idle_close,omitempty"`

	// The most clients of this handler one stream may have; past it, new
	// clients get 503 with Retry-After. Another handler that shares the
	// stream counts its own. Default: 0, unlimited.
	MaxClients int `json:"max_clients,omitempty"`

	// The largest event the origin may send, in bytes. An event's size is
	// the sum of its data, event, id and retry lines as sent (name, colon
	// and value; line ends, comments and unknown fields not counted; any
	// line, comments included, is bounded by it too). An event of exactly
	// this size passes; a larger one (or a line that never ends) breaks the
	// upstream connection with a logged error, is sent to no client, and
	// the stream reconnects. An id over 1 KiB, which no client could resume
	// from, does the same whatever this is. Default: 1 MiB.
	MaxEventSize int `json:"max_event_size,omitempty"`

	// Whether a client whose Last-Event-ID is no longer in the buffer gets
	// the missing events from the origin, on a request carrying that id
	// (shared by the clients that come back with the same id meanwhile),
	// until the origin's answer meets the shared stream. Default: true.
	// When false, such a client gets live events only.
	CatchUp *bool `json:"catch_up,omitempty"`

	// Whether a joining client is sent an "id:" line with the stream's
	// latest event ID and no data. It fires no event but sets the
	// browser's lastEventId, so a client that drops before the next event
	// still resumes from there. A client that resumes from the buffer is
	// not: its replay, or its own cursor, carries that id already.
	// Default: true.
	PrimeCursor *bool `json:"prime_cursor,omitempty"`

	// An event type to send, with the client's Last-Event-ID as data, to a
	// client whose cursor neither the buffer nor a catch-up can serve, so
	// that the application can refetch its state. A cursor over 1 KiB is
	// not echoed: the data is then empty. Default: none; such a client gets
	// live events.
	StaleEvent string `json:"stale_event,omitempty"`

	// A placeholder template that, with the upstream URL, decides which
	// clients share an upstream connection: clients share one when their
	// requests give the same key and the same upstream URL. Default: empty,
	// so the request path and query alone decide. Use it for per-user
	// streams, e.g. "{http.request.header.Authorization}". Each placeholder's
	// value counts on its own: "{A}{B}" never merges A=ab, B=c with A=a,
	// B=bc. A key can split streams further; it never merges two different
	// upstream URLs. Logs and the admin API show a key's value only as a
	// keyed hash.
	Key string `json:"key,omitempty"`

	// Query parameters dropped from the stream key and from the upstream
	// URL, such as cache-busting ones ("_", "t"). The last_event_id
	// parameter is always dropped: it carries a first connect's cursor.
	KeyIgnoreQuery []string `json:"key_ignore_query,omitempty"`

	// The query parameter by which a client chooses the event types it is
	// sent, such as "events" for "?events=update,price" ("message": events
	// without a type); replay and catch-up are filtered alike. It is no
	// part of the stream key or the upstream URL. More than 32 types, one
	// over 128 bytes or with a control character is answered 400.
	// Default: none; the parameter is then the stream's, as any other.
	FilterParam string `json:"filter_param,omitempty"`

	// The query parameter by which a page reads several streams, its
	// members, on one response, such as "streams" for
	// "/events/?streams=news,prices,user/42": a member named n is the
	// stream of the request's path joined with n ("/events/news"), with
	// the rest of the query, exactly as a request for that stream alone
	// would be. Each member's events are sent with the event type "<n>"
	// (messages) or "<n>:<type>", and every event's id names every
	// member's last event ID, so that a reconnect resumes each member
	// exactly. See docs/multiplex.md. Caddy's matchers and auth run once,
	// for the request's own path: members must live under the same
	// protection. compress and detach hold for a page as for a single
	// client's response, per page. Default: none; the parameter is then
	// the stream's, as any other.
	MultiplexParam string `json:"multiplex_param,omitempty"`

	// The paths that may be members of a multiplexed request: a pattern
	// ending in "*" matches the paths that start with what precedes it,
	// any other pattern only itself ("/events/user/*", "/events/news").
	// A member whose path matches none is answered 400. Required with
	// multiplex_param.
	MultiplexMembers []string `json:"multiplex_members,omitempty"`

	// The most members one multiplexed request may list; more is
	// answered 400. Default: 16. At most 64.
	MultiplexMax int `json:"multiplex_max,omitempty"`

	// The most streams this handler, with the handlers that share its
	// streams, serves at once; past it, a request for
	// a new stream gets 503 with Retry-After, unless a stream without
	// clients (one waiting out idle_close) can give way to it. It protects
	// the origin and the proxy from clients that invent query strings.
	// Default: 10000. A negative value means unlimited.
	MaxStreams int `json:"max_streams,omitempty"`

	// The most catch-ups (origin requests for clients whose Last-Event-ID
	// the buffer no longer holds) one stream may have under way at once.
	// Clients that come back with the same cursor share one and count once.
	// Past it, a client is served as if catch_up were off. Default: 8.
	MaxCatchUps int `json:"max_catch_ups,omitempty"`

	// The most catch-ups this handler may have under way at once, over all
	// its streams. Default: 64.
	MaxCatchUpsPerHandler int `json:"max_catch_ups_per_handler,omitempty"`

	// Origins whose pages may read the streams from another origin, such
	// as "https://app.example": they are answered with
	// Access-Control-Allow-Origin set to their origin and with
	// Access-Control-Allow-Credentials; "*" lets any other origin read
	// without credentials. Every answer then carries Vary: Origin.
	// Default: none.
	CORS []string `json:"cors,omitempty"`

	// How long the upstream may send nothing, not even a comment, before
	// the connection is taken as dead and reopened. Default: 45s. A
	// negative value turns the check off.
	UpstreamTimeout caddy.Duration `json:"upstream_timeout,omitempty"`

	// The shortest wait between two attempts to reach the origin, after a
	// failure or the end of the upstream connection, when the origin sent
	// no retry; an origin's retry sets it instead. Never under 250ms, nor
	// over UpstreamBackoffCap. The wait grows with how long the origin has
	// been failing: half that time, at least twice the floor, at most the
	// cap, jittered down by up to half, never under the floor. Default: 1s.
	UpstreamBackoffFloor caddy.Duration `json:"upstream_backoff_floor,omitempty"`

	// The longest wait between two attempts to reach the origin, and so
	// the longest a stream's clients wait for an origin that is back.
	// At least UpstreamBackoffFloor. Default: 30s.
	UpstreamBackoffCap caddy.Duration `json:"upstream_backoff_cap,omitempty"`

	// Spreads each client's retry time by up to this many percent around
	// the configured one (or the origin's), so that clients cut at once do
	// not reconnect in the same millisecond. Default: 0, exact.
	RetryJitter int `json:"retry_jitter,omitempty"`

	// Whether an HTTP/1.x client, over TLS or not, is detached from its
	// request once its response has started: the handler takes the connection over
	// from the server, its request goroutine ends, and a writer shared by
	// the stream's clients sends it events. That makes an idle client cost
	// a few KiB instead of a goroutine stack and buffers of its own, and an
	// event cost one write per client. The access log then records the
	// request when it is detached, with the bytes sent until then. Not done
	// when an encoder compresses the response, or when the server has a
	// hard write_timeout. Default: true.
	Detach *bool `json:"detach,omitempty"`

	// The encodings to compress event streams with, in order of
	// preference: "gzip", "zstd". A client whose Accept-Encoding allows one
	// gets its stream compressed in it, the one with the client's highest
	// weight, this order deciding between equal ones; every event, comment
	// and retry line is still delivered at once. Each event is compressed
	// once per stream, not per client. Responses get Vary: Accept-Encoding.
	// Not done when Caddy's encode handler is in front, which then
	// compresses. Default: none, no compression.
	Compress []string `json:"compress,omitempty"`

	// This node's name in the Via header of its responses and upstream
	// requests, "Via: 1.1 <node_id> (sse_fanout)", by which tiers of
	// sse_fanout recognise each other: a request that already passed
	// through this node, or that comes from the tier this handler reads
	// from, is refused with 508 Loop Detected, and the admin API and
	// metrics show which streams read from another tier. An HTTP token of
	// at most 64 characters; global placeholders such as {env.NODE} are
	// replaced when the config loads. Default: a random name chosen when
	// the process starts, the same for all its handlers; handlers that
	// stand for separate tiers in one process need a node_id each.
	NodeID string `json:"node_id,omitempty"`

	base       *url.URL      // parsed Upstream
	cfg        *settings     // the fields resolved to their defaults: what serves this handler's clients
	adopted    *atomic.Bool  // cfg counts among its registry's settings in use (registry.adopt)
	requests   *requestMap   // maps requests to streams
	cors       *corsPolicy   // parsed CORS; nil: none
	poolKey    string        // this handler's registry in registries
	reg        *registry     // shared with other configs with the same poolKey; nil until acquired
	stop       chan struct{} // closed by Cleanup, to end this config's clients
	detachable bool          // Detach, resolved
	logger     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_fanout",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler and acquires its registry of streams.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.stop = make(chan struct{})
	h.adopted = new(atomic.Bool)
	h.detachable = h.Detach == nil || *h.Detach

	base, err := parseUpstream(h.Upstream)
	if err != nil {
		return err
	}
	h.base = base
	if h.cors, err = parseCORS(h.CORS); err != nil {
		return err
	}
	h.cfg = h.settings()
	if err := h.validate(); err != nil {
		return err
	}
	perRequest, err := h.checkHeaderPlaceholders(h.cfg.headerUp)
	if err != nil {
		return err
	}
	var perRequestHeaders headerTemplates
	if perRequest {
		perRequestHeaders = parseHeaderTemplates(h.cfg.headerUp)
	}
	h.requests = &requestMap{
		base:              base,
		key:               parseKeyTemplate(h.Key),
		ignoreQuery:       h.KeyIgnoreQuery,
		headerUp:          h.cfg.headerUp,
		perRequestHeaders: perRequestHeaders,
		filterParam:       h.FilterParam,
		rewind:            h.Rewind,
		muxParam:          h.MultiplexParam,
		muxMembers:        h.MultiplexMembers,
		muxMax:            cmp.Or(h.MultiplexMax, defaultMultiplexMax),
	}
	h.poolKey = h.registryKey(h.cfg)
	value, _, err := registries.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newRegistry(h.cfg, redactURL(h.Upstream), basePath(base)), nil
	})
	if err != nil {
		return fmt.Errorf("loading stream registry: %w", err)
	}
	h.reg = value.(*registry)
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	// This handler's clients are served by its own settings. The settings
	// a registry's streams share count this handler's only once it serves
	// its first request, that is, once its config is running (adopt): a
	// reload that fails must not change them.
	return nil
}

// Validate reports configuration errors. It does no I/O.
func (h *Handler) Validate() error { return h.validate() }

// Cleanup ends this config's clients and releases its registry. The
// registry and its streams live on while another config uses them.
func (h *Handler) Cleanup() error {
	if h.stop != nil {
		close(h.stop)
	}
	if h.reg == nil {
		return nil // Provision failed before acquiring it
	}
	h.reg.release(h.stop)
	h.reg.endClientsOf(h.stop)
	_, err := registries.Delete(h.poolKey)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
