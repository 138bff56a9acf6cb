package main

// This file is the sse_floor handler: every request gets the events of
// an in-process clock, in bench/sseorigin's format, from the request's own
// goroutine, which writes and flushes each event (with any queued behind
// it) as it comes. It is internal/sseorigin's Origin, the very code that
// the direct system runs on Go's net/http alone, mounted as a Caddy
// handler: no upstream, no fan-out hub, no shared writers, no detaching.

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sse-fanout/caddy-sse-fanout/internal/sseorigin"
)

func init() {
	caddy.RegisterModule(Floor{})
	httpcaddyfile.RegisterHandlerDirective("sse_floor", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("sse_floor", httpcaddyfile.Before, "reverse_proxy")
}

// Defaults of Floor's fields, the same as bench/sseorigin's flags.
const (
	defaultSize    = 256
	defaultQueue   = 1024
	defaultHistory = 1024
)

// Floor is the http.handlers.sse_floor module: it serves an event stream
// on every path (and the origin's counters on /stats), as bench/sseorigin
// does, and never calls the next handler.
type Floor struct {
	// Rate is events per second; 0 sends none.
	Rate float64 `json:"rate,omitempty"`
	// Size is each event's size on the wire in bytes, id and data lines
	// included; 0 means 256.
	Size int `json:"size,omitempty"`
	// Queue is how many events a request may fall behind before it is
	// dropped; 0 means 1024.
	Queue int `json:"queue,omitempty"`
	// History is how many events are kept for Last-Event-ID; 0 means 1024.
	History int `json:"history,omitempty"`

	origin *sseorigin.Origin
	stop   context.CancelFunc
	done   chan struct{} // closed when the clock has stopped
}

// CaddyModule returns the Caddy module information.
func (Floor) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse_floor",
		New: func() caddy.Module { return new(Floor) },
	}
}

// Validate checks the fields.
func (f *Floor) Validate() error {
	if f.Rate < 0 || f.Size < 0 || f.Queue < 0 || f.History < 0 {
		return fmt.Errorf("sse_floor: rate, size, queue and history must not be negative")
	}
	return nil
}

// Provision starts the clock.
func (f *Floor) Provision(caddy.Context) error {
	f.start()
	return nil
}

// start makes the origin and starts its clock.
func (f *Floor) start() {
	size, queue, history := f.Size, f.Queue, f.History
	if size == 0 {
		size = defaultSize
	}
	if queue == 0 {
		queue = defaultQueue
	}
	if history == 0 {
		history = defaultHistory
	}
	var interval time.Duration
	if f.Rate > 0 {
		interval = time.Duration(float64(time.Second) / f.Rate)
	}
	f.origin = sseorigin.New(sseorigin.Options{Queue: queue, History: history})
	ctx, stop := context.WithCancel(context.Background())
	f.stop, f.done = stop, make(chan struct{})
	go func() {
		defer close(f.done)
		sseorigin.RunClock(ctx, interval, func(seq uint64) {
			f.origin.Publish(sseorigin.NewStamped(seq, time.Now(), size))
		})
	}()
}

// Cleanup stops the clock and ends the streams.
func (f *Floor) Cleanup() error {
	if f.stop != nil {
		f.stop()
		<-f.done
		f.origin.Close()
	}
	return nil
}

// ServeHTTP serves the event stream, or /stats.
func (f *Floor) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	f.origin.ServeHTTP(w, r)
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	f := new(Floor)
	err := f.UnmarshalCaddyfile(h.Dispenser)
	return f, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sse_floor [<matcher>] {
//	    rate    <events per second>
//	    size    <bytes per event>
//	    queue   <events>
//	    history <events>
//	}
func (f *Floor) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		var v string
		if !d.AllArgs(&v) {
			return d.ArgErr()
		}
		var err error
		switch sub {
		case "rate":
			f.Rate, err = strconv.ParseFloat(v, 64)
		case "size":
			f.Size, err = strconv.Atoi(v)
		case "queue":
			f.Queue, err = strconv.Atoi(v)
		case "history":
			f.History, err = strconv.Atoi(v)
		default:
			return d.Errf("unknown subdirective %q", sub)
		}
		if err != nil {
			return d.Errf("%s: %v", sub, err)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Floor)(nil)
	_ caddy.Validator             = (*Floor)(nil)
	_ caddy.CleanerUpper          = (*Floor)(nil)
	_ caddyhttp.MiddlewareHandler = (*Floor)(nil)
	_ caddyfile.Unmarshaler       = (*Floor)(nil)
)
