package ssefanout

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// This file is the config resolved: the defaults of the fields, the checks
// on their values, and the settings that streams and clients read.

// Defaults of the config fields.
const (
	defaultHeartbeat             = 15 * time.Second
	defaultBuffer                = 1024
	defaultBufferBytes           = 8 << 20
	defaultClientQueue           = 256
	defaultIdleClose             = 30 * time.Second
	defaultMaxEventSize          = 1 << 20
	defaultWriteTimeout          = 30 * time.Second
	defaultUpstreamWait          = 45 * time.Second
	defaultBackoffFloor          = time.Second
	defaultBackoffCap            = 30 * time.Second
	defaultMaxStreams            = 10000
	defaultMaxCatchUps           = 8
	defaultMaxCatchUpsPerHandler = 64
	defaultMultiplexMax          = 16

	// maxMultiplexMax bounds multiplex_max: a multiplexed request costs a
	// client on each member's stream, and its cursor grows with each.
	maxMultiplexMax = 64

	// maxQueue bounds buffer and client_queue: a stream's ring holds a
	// slot for each, allocated when the stream opens.
	maxQueue = 1 << 20
)

// settings are a handler's tunables, resolved to their defaults. Each
// handler has its own, and its clients are served by them: max_clients
// (counted per handler), retry, retry_jitter, catch_up, max_catch_ups,
// prime_cursor, stale_event, write_timeout. The fields that shape a stream
// itself (buffer, buffer_bytes, client_queue, max_event_size), bound its
// registry (max_streams, max_catch_ups_per_handler) or are sent upstream
// (header_up, node_id) are part of the registry key (registryKey), so the
// handlers that share a registry agree on them. The rest, which each
// stream has one of (heartbeat, idle_close, upstream_timeout, and whether
// the origin's retry passes through), the hub's settings hold as
// sharedSettings chooses them over the handlers in use.
type settings struct {
	heartbeat             time.Duration // keepalive after this much silence; <= 0: off
	retry                 int64         // retry sent to clients, in ms; < 0: the origin's passes through
	buffer                int           // frames kept for Last-Event-ID replay
	bufferBytes           int           // bytes kept for replay and lagging clients
	clientQueue           int           // frames a client may fall behind before it is cut
	idleClose             time.Duration // upstream kept this long after the last client left
	maxClients            int           // per stream and handler; 0: unlimited
	maxStreams            int           // per registry; < 0: unlimited
	maxCatchUps           int           // catch-ups under way per stream
	maxCatchUpsPerHandler int           // catch-ups under way per registry
	upstreamWait          time.Duration // upstream_timeout: the most an upstream may stay silent
	backoffFloor          time.Duration // upstream_backoff: the shortest wait between attempts, unless the origin's retry says otherwise
	backoffCap            time.Duration // upstream_backoff: the longest
	maxEventSize          int           // bytes; a larger event breaks the upstream connection
	catchUp               bool          // fetch what the buffer lacks from the origin
	primeCursor           bool          // send joining clients the stream's latest id
	staleEvent            string        // event type announcing an unservable cursor; "": none
	writeTimeout          time.Duration // bound on one batch of writes to a client
	retryJitter           int           // percent by which each client's retry is spread
	headerUp              http.Header   // sent upstream on every request
	compress              []*encoding   // offered to clients, in order of preference; none: off
	nodeID                string        // this node's name in Via (tier.go)
	via                   string        // its Via entry
	logger                *zap.Logger
}

// sharedSettings are the settings of a registry's hub: those of the
// handlers in use (never empty), which agree on everything in the registry
// key, with what each stream has one of chosen over them all, in whatever
// order they were provisioned: the shortest heartbeat, so that no handler's
// clients wait longer than their own for a keepalive; the longest
// idle_close and upstream_timeout (off counts as longest), so that no
// handler's streams close or reconnect sooner than its own would; and a
// retry that passes the origin's through if any handler's does, else the
// longest. Per-client fields are a handler's own (see settings), and
// never read from here.
func sharedSettings(users map[<-chan struct{}]*settings) *settings {
	var shared *settings
	for _, cfg := range users {
		if shared == nil {
			copied := *cfg
			shared = &copied
			continue
		}
		if cfg.heartbeat > 0 && (shared.heartbeat <= 0 || cfg.heartbeat < shared.heartbeat) {
			shared.heartbeat = cfg.heartbeat
		}
		if cfg.idleClose > shared.idleClose {
			shared.idleClose = cfg.idleClose
		}
		if shared.upstreamWait > 0 && (cfg.upstreamWait <= 0 || cfg.upstreamWait > shared.upstreamWait) {
			shared.upstreamWait = cfg.upstreamWait
		}
		if shared.retry >= 0 && (cfg.retry < 0 || cfg.retry > shared.retry) {
			shared.retry = cfg.retry
		}
	}
	return shared
}

// ringCapacity is how many frames a stream keeps: a client placed as far
// back as spliceWindow must still find its frames after client_queue more
// are published, since only then does it count as behind and get cut.
func (cfg *settings) ringCapacity() int {
	return cfg.spliceWindow() + cfg.clientQueue
}

// spliceWindow is how far back in the ring a client may be placed: by its
// Last-Event-ID (at most buffer frames back) or where a catch-up meets the
// shared stream.
func (cfg *settings) spliceWindow() int {
	return max(cfg.buffer, 1)
}

// settings resolves the config fields to their defaults: a field left at
// its zero value takes its default (cmp.Or), except those whose zero is a
// value of its own, which are pointers.
func (h *Handler) settings() *settings {
	cfg := &settings{
		heartbeat:             cmp.Or(time.Duration(h.Heartbeat), defaultHeartbeat),
		retry:                 -1,
		buffer:                defaultBuffer,
		bufferBytes:           cmp.Or(h.BufferBytes, defaultBufferBytes),
		clientQueue:           cmp.Or(h.ClientQueue, defaultClientQueue),
		idleClose:             cmp.Or(time.Duration(h.IdleClose), defaultIdleClose),
		maxClients:            h.MaxClients,
		maxEventSize:          cmp.Or(h.MaxEventSize, defaultMaxEventSize),
		writeTimeout:          defaultWriteTimeout,
		maxStreams:            cmp.Or(h.MaxStreams, defaultMaxStreams),
		maxCatchUps:           cmp.Or(h.MaxCatchUps, defaultMaxCatchUps),
		maxCatchUpsPerHandler: cmp.Or(h.MaxCatchUpsPerHandler, defaultMaxCatchUpsPerHandler),
		upstreamWait:          cmp.Or(time.Duration(h.UpstreamTimeout), defaultUpstreamWait),
		retryJitter:           h.RetryJitter,
		catchUp:               h.CatchUp == nil || *h.CatchUp,
		primeCursor:           h.PrimeCursor == nil || *h.PrimeCursor,
		staleEvent:            h.StaleEvent,
		headerUp:              make(http.Header),
		logger:                h.logger,
	}
	cfg.backoffFloor, cfg.backoffCap = h.upstreamBackoff()
	if h.Retry != nil {
		cfg.retry = time.Duration(*h.Retry).Milliseconds()
	}
	if h.Buffer != nil {
		cfg.buffer = *h.Buffer
	}
	for _, name := range h.Compress {
		if enc := encodingNamed(name); enc != nil {
			cfg.compress = append(cfg.compress, enc)
		}
	}
	repl := caddy.NewReplacer()
	cfg.nodeID = cmp.Or(repl.ReplaceKnown(h.NodeID, ""), defaultNodeID)
	cfg.via = viaEntry(cfg.nodeID)
	for name, values := range h.HeaderUp {
		for _, v := range values {
			cfg.headerUp.Add(name, repl.ReplaceKnown(v, ""))
		}
	}
	return cfg
}

// checkHeaderPlaceholders refuses a header_up value with a per-request
// placeholder that the key does not hold: all clients of a stream share its
// upstream connection, so a value that differs between them would send one
// client's header (say, its credentials) on behalf of the others. It
// reports whether any value has such a placeholder, to be filled per
// request.
func (h *Handler) checkHeaderPlaceholders(headerUp http.Header) (perRequest bool, err error) {
	for name, values := range headerUp {
		for _, v := range values {
			for _, part := range parseKeyTemplate(v) {
				if !part.placeholder {
					continue
				}
				ph := part.text
				if !strings.Contains(h.Key, ph) {
					return false, badField(headerUpField(name), fmt.Errorf("header_up %s %q: placeholder %s differs between requests, so it must be part of the key (add it to key, e.g. key %s), or every client of a stream would be served with the first client's %s",
						name, v, ph, ph, name))
				}
				perRequest = true
			}
		}
	}
	return perRequest, nil
}

// A fieldError is a bad config value. Its field is the subdirective that
// holds it, as the JSON field is named (header_up's also names the
// header), so that the Caddyfile parser can point at the line.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// badField marks err as a bad value of field.
func badField(field string, err error) error { return &fieldError{field, err} }

// headerUpField is the field of the header_up line for the header name.
func headerUpField(name string) string { return "header_up " + http.CanonicalHeaderKey(name) }

// parseUpstream parses the upstream base URL and checks it: http or https,
// a host, and no query or fragment, since the request's path and query are
// appended. Its errors show the URL with any password redacted.
func parseUpstream(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, badField("upstream", errors.New("upstream is required"))
	}
	upstream := redactURL(raw)
	base, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // its text holds the URL, and so any password
		}
		return nil, badField("upstream", fmt.Errorf("parsing upstream %q: %w", upstream, err))
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return nil, badField("upstream", fmt.Errorf("upstream %q: scheme must be http or https", upstream))
	}
	if base.Host == "" {
		return nil, badField("upstream", fmt.Errorf("upstream %q: no host", upstream))
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, badField("upstream", fmt.Errorf("upstream %q: a base URL has no query or fragment; the request's query is appended", upstream))
	}
	return base, nil
}

// checkHeaderUp checks one header_up line: a header name that is an HTTP
// token, and a value with no control character but tab.
func checkHeaderUp(name, value string) error {
	if !isToken(name) {
		return badField(headerUpField(name), fmt.Errorf("header_up %q: not a valid header name", name))
	}
	for i := 0; i < len(value); i++ {
		if b := value[i]; b < ' ' && b != '\t' || b == 0x7f {
			return badField(headerUpField(name), fmt.Errorf("header_up %s: not a valid header value: it holds %q", name, b))
		}
	}
	return nil
}

// validate reports configuration errors. It does no I/O. The Caddyfile
// parser runs it too, so that each error names its line; what depends on
// Provision (the node_id with its placeholders replaced) is checked only
// once provisioned.
func (h *Handler) validate() error {
	if _, err := parseUpstream(h.Upstream); err != nil {
		return err
	}
	for _, tc := range []struct {
		field, name string
		n           int
	}{
		{"buffer_bytes", "buffer_bytes", h.BufferBytes},
		{"client_queue", "client_queue", h.ClientQueue},
		{"max_clients", "max_clients", h.MaxClients},
		{"max_event_size", "max_event_size", h.MaxEventSize},
		{"retry_jitter", "retry_jitter", h.RetryJitter},
		{"rewind", "rewind", h.Rewind},
		{"max_catch_ups", "max_catch_ups", h.MaxCatchUps},
		{"max_catch_ups", "max_catch_ups_per_handler", h.MaxCatchUpsPerHandler},
	} {
		if tc.n < 0 {
			return badField(tc.field, fmt.Errorf("%s must not be negative, got %d", tc.name, tc.n))
		}
	}
	if h.RetryJitter > 100 {
		return badField("retry_jitter", fmt.Errorf("retry_jitter must be a percentage from 0 to 100, got %d", h.RetryJitter))
	}
	if h.Buffer != nil && *h.Buffer < 0 {
		return badField("buffer", fmt.Errorf("buffer must not be negative, got %d", *h.Buffer))
	}
	if h.Buffer != nil && *h.Buffer > maxQueue {
		return badField("buffer", fmt.Errorf("buffer must be at most %d, got %d", maxQueue, *h.Buffer))
	}
	if buffer := h.settings().buffer; h.Rewind > buffer {
		return badField("rewind", fmt.Errorf("rewind must be at most buffer (%d): rewound events come from the buffer, got %d", buffer, h.Rewind))
	}
	if h.ClientQueue > maxQueue {
		return badField("client_queue", fmt.Errorf("client_queue must be at most %d, got %d", maxQueue, h.ClientQueue))
	}
	if strings.ContainsAny(h.StaleEvent, "\r\n") {
		return badField("stale_event", fmt.Errorf("stale_event %q: an event type cannot hold a line end", h.StaleEvent))
	}
	if h.FilterParam != "" {
		if err := checkParamName(h.FilterParam); err != nil {
			return badField("filter_param", fmt.Errorf("filter_param %q: %v", h.FilterParam, err))
		}
	}
	if err := h.checkMultiplex(); err != nil {
		return err
	}
	for name, values := range h.HeaderUp {
		for _, v := range values {
			if err := checkHeaderUp(name, v); err != nil {
				return err
			}
		}
	}
	for i, name := range h.Compress {
		if encodingNamed(name) == nil {
			return badField("compress", fmt.Errorf("compress: unknown encoding %q, want gzip or zstd", name))
		}
		if slices.Contains(h.Compress[:i], name) {
			return badField("compress", fmt.Errorf("compress: %s is listed twice", name))
		}
	}
	// A node_id with a placeholder is checked once it is replaced, in
	// Provision (h.cfg); one without, also where it is written.
	nodeID := h.NodeID
	if h.cfg != nil {
		nodeID = h.cfg.nodeID
	}
	if nodeID != "" && !strings.Contains(nodeID, "{") {
		if err := checkNodeID(nodeID); err != nil {
			return badField("node_id", fmt.Errorf("node_id %q: %w", nodeID, err))
		}
	}
	if _, err := parseCORS(h.CORS); err != nil {
		return badField("cors", err)
	}
	if err := checkBackoff(h.upstreamBackoff()); err != nil {
		return badField("upstream_backoff", err)
	}
	if h.Retry != nil && *h.Retry < 0 {
		return badField("retry", fmt.Errorf("retry must not be negative, got %v", time.Duration(*h.Retry)))
	}
	_, err := h.checkHeaderPlaceholders(h.settings().headerUp)
	return err
}

// checkMultiplex checks multiplex_param, multiplex_members and
// multiplex_max, and what multiplexing cannot go with.
func (h *Handler) checkMultiplex() error {
	if h.MultiplexMax < 0 || h.MultiplexMax > maxMultiplexMax {
		return badField("multiplex_max", fmt.Errorf("multiplex_max must be from 0 (the default, %d) to %d, got %d", defaultMultiplexMax, maxMultiplexMax, h.MultiplexMax))
	}
	if h.MultiplexParam == "" {
		if len(h.MultiplexMembers) > 0 || h.MultiplexMax != 0 {
			return badField("multiplex_param", errors.New("multiplex_members and multiplex_max need multiplex_param"))
		}
		return nil
	}
	if err := checkParamName(h.MultiplexParam); err != nil {
		return badField("multiplex_param", fmt.Errorf("multiplex_param %q: %v", h.MultiplexParam, err))
	}
	if h.MultiplexParam == h.FilterParam || slices.Contains(h.KeyIgnoreQuery, h.MultiplexParam) {
		return badField("multiplex_param", fmt.Errorf("multiplex_param %q is already filter_param or in key_ignore_query", h.MultiplexParam))
	}
	if len(h.MultiplexMembers) == 0 {
		return badField("multiplex_param", errors.New("multiplex_param needs multiplex_members: the paths that may be members"))
	}
	for _, p := range h.MultiplexMembers {
		if !strings.HasPrefix(p, "/") || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			return badField("multiplex_members", fmt.Errorf("multiplex_members %q: want a path that starts with / and may end in *", p))
		}
	}
	// A member is a request for its own path, but the placeholders are the
	// request's: a key from its path or URI would give every member one key.
	for _, ph := range []string{"{http.request.uri", "{http.request.orig_uri"} {
		if strings.Contains(h.Key, ph) {
			return badField("key", fmt.Errorf("key %q: a placeholder of the request's URI is the same for every member of a multiplexed request, so it cannot be part of the key with multiplex_param", h.Key))
		}
	}
	return nil
}

// upstreamBackoff resolves upstream_backoff's floor and cap to their
// defaults.
func (h *Handler) upstreamBackoff() (floor, ceiling time.Duration) {
	return cmp.Or(time.Duration(h.UpstreamBackoffFloor), defaultBackoffFloor),
		cmp.Or(time.Duration(h.UpstreamBackoffCap), defaultBackoffCap)
}

// checkBackoff checks upstream_backoff's floor and cap, resolved to their
// defaults.
func checkBackoff(floor, ceiling time.Duration) error {
	if floor < backoffMin {
		return fmt.Errorf("upstream_backoff floor must be at least %v, got %v", backoffMin, floor)
	}
	if ceiling < floor {
		return fmt.Errorf("upstream_backoff cap (%v) must be at least its floor (%v)", ceiling, floor)
	}
	return nil
}

// checkParamName checks the name of a query parameter the handler takes
// out of requests: one that a client writes in its query as it is, and
// that is no other parameter the handler reads.
func checkParamName(name string) error {
	if name == "" {
		return errors.New("a parameter name cannot be empty")
	}
	if name == lastEventIDParam {
		return fmt.Errorf("%s carries the cursor", lastEventIDParam)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("&=#%+?", r) {
			return fmt.Errorf("%q cannot be part of a parameter name", r)
		}
	}
	return nil
}
