package demoapp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file is the demo page's window on the proxy: GET /demo/stats reads
// Caddy's admin API (/sse_fanout/streams and /metrics) and answers with
// what only the proxy knows, so that the page reads it from its own
// origin; POST /demo/reload reloads the running config through the admin
// API, as `caddy reload --force` does, which cuts the old config's clients.

func init() {
	caddy.RegisterModule(control{})
	httpcaddyfile.RegisterHandlerDirective("sse_fanout_demo", parseControl)
}

// control is the handler of the demo's /demo/ paths, module
// http.handlers.sse_fanout_demo. Its one setting is the admin API it
// reads.
type control struct {
	// Admin is the admin API's address, such as 127.0.0.1:2020.
	Admin string `json:"admin,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (control) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_fanout_demo",
		New: func() caddy.Module { return new(control) },
	}
}

func parseControl(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	c := new(control)
	return c, c.UnmarshalCaddyfile(h.Dispenser)
}

// UnmarshalCaddyfile reads the admin address. Syntax:
//
//	sse_fanout_demo <admin-address>
func (c *control) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if !d.AllArgs(&c.Admin) {
		return d.ArgErr()
	}
	return nil
}

// adminClient reads the admin API; every request is bounded.
var adminClient = &http.Client{Timeout: 10 * time.Second}

// reloads tracks the reload under way, if any: Demo.Close waits for it
// before it stops Caddy.
var reloads struct {
	sync.WaitGroup
	busy atomic.Bool
}

// ServeHTTP serves GET /demo/stats and POST /demo/reload.
func (c control) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	switch {
	case r.URL.Path == "/demo/stats" && r.Method == http.MethodGet:
		st, err := c.stats(r.Context())
		if err != nil {
			return caddyhttp.Error(http.StatusBadGateway, err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		return json.NewEncoder(w).Encode(st)
	case r.URL.Path == "/demo/reload" && r.Method == http.MethodPost:
		// The reload unloads the config this request runs in, and Caddy
		// stops the old server only when its requests are done: it must
		// not wait for this one. So it runs on its own, after the answer.
		if !reloads.busy.CompareAndSwap(false, true) {
			return caddyhttp.Error(http.StatusConflict, errors.New("a reload is under way"))
		}
		reloads.Go(func() {
			defer reloads.busy.Store(false)
			if err := c.reload(); err != nil {
				log.Printf("demo: reloading the config: %v", err)
			}
		})
		w.WriteHeader(http.StatusAccepted)
		return nil
	case r.URL.Path == "/demo/stats" || r.URL.Path == "/demo/reload":
		return caddyhttp.Error(http.StatusMethodNotAllowed, nil)
	}
	return caddyhttp.Error(http.StatusNotFound, nil)
}

// Stats is what GET /demo/stats answers: what only the proxy knows, read
// from the admin API. The counters are the module's metrics, summed over
// their upstream label; they count from the process's start, across
// reloads.
type Stats struct {
	Admin   string       `json:"admin"`   // the admin API's base URL
	Streams []StreamStat `json:"streams"` // from /sse_fanout/streams

	Clients           float64 `json:"clients"`            // caddy_sse_fanout_clients
	OriginConnections float64 `json:"origin_connections"` // caddy_sse_fanout_streams: one upstream connection each
	EventsReceived    float64 `json:"events_received"`    // caddy_sse_fanout_events_received_total
	EventsSent        float64 `json:"events_sent"`        // caddy_sse_fanout_events_sent_total
	BytesSent         float64 `json:"bytes_sent"`         // caddy_sse_fanout_bytes_sent_total
	UpstreamConnects  float64 `json:"upstream_connects"`  // caddy_sse_fanout_upstream_connects_total
	ReplayHits        float64 `json:"replay_hits"`        // caddy_sse_fanout_replay_hits_total
	ReplayMisses      float64 `json:"replay_misses"`      // caddy_sse_fanout_replay_misses_total
	CatchUps          float64 `json:"catch_ups"`          // caddy_sse_fanout_catch_ups_total
	EventsRewound     float64 `json:"events_rewound"`     // caddy_sse_fanout_events_rewound_total
	EventsFiltered    float64 `json:"events_filtered"`    // caddy_sse_fanout_events_filtered_total
	Reloads           int64   `json:"reloads"`            // reloads done through POST /demo/reload
}

// StreamStat is one stream as the admin API's /sse_fanout/streams lists
// it, in part.
type StreamStat struct {
	Key              string `json:"key"`
	Clients          int    `json:"clients"`
	UpstreamState    string `json:"upstream_state"`
	UpstreamConnects int    `json:"upstream_connects"`
	EventsReceived   uint64 `json:"events_received"`
	Buffered         int    `json:"buffered"`
	LastID           string `json:"last_id"`
}

// metricFields are the Stats fields read from /metrics, by metric name.
func (st *Stats) metricFields() map[string]*float64 {
	return map[string]*float64{
		"caddy_sse_fanout_clients":                 &st.Clients,
		"caddy_sse_fanout_streams":                 &st.OriginConnections,
		"caddy_sse_fanout_events_received_total":   &st.EventsReceived,
		"caddy_sse_fanout_events_sent_total":       &st.EventsSent,
		"caddy_sse_fanout_bytes_sent_total":        &st.BytesSent,
		"caddy_sse_fanout_upstream_connects_total": &st.UpstreamConnects,
		"caddy_sse_fanout_replay_hits_total":       &st.ReplayHits,
		"caddy_sse_fanout_replay_misses_total":     &st.ReplayMisses,
		"caddy_sse_fanout_catch_ups_total":         &st.CatchUps,
		"caddy_sse_fanout_events_rewound_total":    &st.EventsRewound,
		"caddy_sse_fanout_events_filtered_total":   &st.EventsFiltered,
	}
}

// reloadsDone counts the reloads done through POST /demo/reload.
var reloadsDone atomic.Int64

// stats reads the admin API.
func (c control) stats(ctx context.Context) (*Stats, error) {
	st := &Stats{Admin: "http://" + c.Admin, Streams: []StreamStat{}, Reloads: reloadsDone.Load()}
	body, err := c.get(ctx, "/sse_fanout/streams")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &st.Streams); err != nil {
		return nil, fmt.Errorf("reading /sse_fanout/streams: %w", err)
	}
	body, err = c.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if err := sumMetrics(body, st.metricFields()); err != nil {
		return nil, fmt.Errorf("reading /metrics: %w", err)
	}
	return st, nil
}

// sumMetrics adds up, into into[name], the samples of each named metric in
// a Prometheus text exposition, whatever their labels.
func sumMetrics(exposition []byte, into map[string]*float64) error {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return fmt.Errorf("bad sample line %q", line)
			}
			rest = strings.TrimSpace(line[j+1:])
		}
		v, ok := into[name]
		if !ok {
			continue
		}
		value, _, _ := strings.Cut(rest, " ") // a timestamp may follow
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("bad value in %q: %w", line, err)
		}
		*v += f
	}
	return sc.Err()
}

// get reads an admin API path.
func (c control) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the admin API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the admin API's %s: %s", path, resp.Status)
	}
	return body, nil
}

// reload loads the running config again through the admin API, forced
// (Cache-Control: must-revalidate), as `caddy reload --force` does: Caddy
// starts it and unloads the old one, whose sse_fanout clients are ended,
// spread over 2 seconds, and reconnect with their Last-Event-ID.
func (c control) reload() error {
	cfg, err := c.get(context.Background(), "/config/")
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+c.Admin+"/load", bytes.NewReader(cfg))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("posting to the admin API's /load: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the admin API's /load: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	reloadsDone.Add(1)
	return nil
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = control{}
	_ caddyfile.Unmarshaler       = (*control)(nil)
)
