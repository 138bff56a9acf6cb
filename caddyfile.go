package ssefanout

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

// This file is the sse_fanout directive: its parser, and its place in
// Caddy's directive order, before reverse_proxy.

func init() {
	httpcaddyfile.RegisterHandlerDirective("sse_fanout", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("sse_fanout", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sse_fanout [<matcher>] <upstream-base-url> {
//	    heartbeat        <duration>|off
//	    retry            <duration>
//	    retry_jitter     <percent>
//	    buffer           <count>
//	    buffer_bytes     <size>
//	    rewind           <count>
//	    filter_param     <name>
//	    multiplex_param   <name>
//	    multiplex_members <patterns...>
//	    multiplex_max     <count>
//	    cors             <origins...>
//	    header_up        <name> <value>
//	    key              <template...>
//	    key_ignore_query <names...>
//	    client_queue     <count>
//	    idle_close       <duration>
//	    max_clients      <count>
//	    max_streams      <count>|off
//	    max_catch_ups    <per-stream> [<per-handler>]
//	    max_event_size   <size>
//	    upstream_timeout <duration>|off
//	    upstream_backoff <floor> [<cap>]
//	    catch_up         on|off
//	    prime_cursor     on|off
//	    stale_event      <name>
//	    detach           on|off
//	    compress         <encodings...>|off
//	    node_id          <name>
//	}
//
// It only turns tokens into fields: a token that is no value of its kind
// (a duration, a count, a size, on|off) fails here; every check on the
// values themselves is validate's, as for a JSON config, and its error
// is pointed at the file and line of the subdirective that holds the value.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if !d.AllArgs(&h.Upstream) {
		return d.ArgErr()
	}
	lines := map[string]caddyfile.Token{"upstream": d.Token()} // by field, the token of its (last) line
	for d.NextBlock(0) {
		sub := d.Val()
		lines[sub] = d.Token()
		switch sub {
		case "heartbeat":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "off" {
				h.Heartbeat = -1
				continue
			}
			dur, err := parseDuration(d, sub, v)
			if err != nil {
				return err
			}
			if dur == 0 {
				return d.Errf("bad heartbeat duration '%s': must be positive, or off", v)
			}
			h.Heartbeat = dur
		case "retry":
			dur, err := durationArg(d, sub)
			if err != nil {
				return err
			}
			h.Retry = &dur
		case "idle_close":
			dur, err := durationArg(d, sub)
			if err != nil {
				return err
			}
			if dur == 0 {
				dur = -1 // close as soon as the last client leaves
			}
			h.IdleClose = dur
		case "buffer":
			n, err := countArg(d, sub)
			if err != nil {
				return err
			}
			h.Buffer = &n
		case "rewind":
			n, err := countArg(d, sub)
			if err != nil {
				return err
			}
			h.Rewind = n
		case "client_queue":
			n, err := countArg(d, sub)
			if err != nil {
				return err
			}
			if n == 0 {
				return d.Errf("bad client_queue value '0': want at least 1")
			}
			h.ClientQueue = n
		case "max_clients":
			n, err := countArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxClients = n
		case "buffer_bytes":
			n, err := sizeArg(d, sub)
			if err != nil {
				return err
			}
			h.BufferBytes = n
		case "max_event_size":
			n, err := sizeArg(d, sub)
			if err != nil {
				return err
			}
			h.MaxEventSize = n
		case "catch_up", "prime_cursor", "detach":
			on, err := onOffArg(d, sub)
			if err != nil {
				return err
			}
			switch sub {
			case "catch_up":
				h.CatchUp = &on
			case "prime_cursor":
				h.PrimeCursor = &on
			default:
				h.Detach = &on
			}
		case "key":
			// Several tokens are one template, as users write it:
			// key {path} {http.request.header.Authorization}
			parts := d.RemainingArgs()
			if len(parts) == 0 {
				return d.ArgErr()
			}
			h.Key = strings.Join(parts, " ")
		case "key_ignore_query":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			h.KeyIgnoreQuery = append(h.KeyIgnoreQuery, names...)
		case "max_streams":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			switch {
			case v == "off" || n == 0 && err == nil:
				h.MaxStreams = -1 // unlimited; 0 always meant that here
			case err != nil || n < 0:
				return d.Errf("bad max_streams value '%s': want a non-negative integer, or off", v)
			default:
				h.MaxStreams = n
			}
		case "max_catch_ups":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			for i, arg := range args {
				n, err := strconv.Atoi(arg)
				if err != nil || n < 1 {
					return d.Errf("bad max_catch_ups value '%s': want a positive integer", arg)
				}
				if i == 0 {
					h.MaxCatchUps = n
				} else {
					h.MaxCatchUpsPerHandler = n
				}
			}
		case "upstream_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			if v == "off" {
				h.UpstreamTimeout = -1
				continue
			}
			dur, err := parseDuration(d, sub, v)
			if err != nil {
				return err
			}
			if dur == 0 {
				return d.Errf("bad upstream_timeout duration '%s': must be positive, or off", v)
			}
			h.UpstreamTimeout = dur
		case "upstream_backoff":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			var durs []caddy.Duration
			for _, arg := range args {
				dur, err := parseDuration(d, sub, arg)
				if err != nil {
					return err
				}
				durs = append(durs, dur)
			}
			h.UpstreamBackoffFloor, h.UpstreamBackoffCap = durs[0], 0
			if len(durs) == 2 {
				h.UpstreamBackoffCap = durs[1]
			}
			// Checked as written: a 0 here is no default.
			ceiling := defaultBackoffCap
			if len(durs) == 2 {
				ceiling = time.Duration(durs[1])
			}
			if err := checkBackoff(time.Duration(durs[0]), ceiling); err != nil {
				return d.Errf("%v", err)
			}
		case "retry_jitter":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(strings.TrimSuffix(v, "%"))
			if err != nil {
				return d.Errf("bad retry_jitter value '%s': want a percentage from 0 to 100", v)
			}
			h.RetryJitter = n
		case "compress":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return d.ArgErr()
			}
			h.Compress = nil
			if len(names) == 1 && names[0] == "off" {
				continue
			}
			h.Compress = names
		case "node_id":
			if !d.AllArgs(&h.NodeID) {
				return d.ArgErr()
			}
		case "stale_event":
			if !d.AllArgs(&h.StaleEvent) {
				return d.ArgErr()
			}
		case "cors":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.ArgErr()
			}
			h.CORS = append(h.CORS, origins...)
		case "filter_param":
			if !d.AllArgs(&h.FilterParam) {
				return d.ArgErr()
			}
		case "multiplex_param":
			if !d.AllArgs(&h.MultiplexParam) {
				return d.ArgErr()
			}
		case "multiplex_members":
			patterns := d.RemainingArgs()
			if len(patterns) == 0 {
				return d.ArgErr()
			}
			h.MultiplexMembers = append(h.MultiplexMembers, patterns...)
		case "multiplex_max":
			n, err := countArg(d, sub)
			if err != nil {
				return err
			}
			h.MultiplexMax = n
		case "header_up":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return d.ArgErr()
			}
			lines[headerUpField(name)] = lines[sub]
			if h.HeaderUp == nil {
				h.HeaderUp = make(http.Header)
			}
			h.HeaderUp.Add(name, value)
		default:
			return d.Errf("unrecognized subdirective '%s'", sub)
		}
	}
	if err := h.validate(); err != nil {
		return wrapAtField(err, lines)
	}
	return nil
}

// wrapAtField adds to err, a bad value found once all the subdirectives
// are read, the file and line of the subdirective that holds it, as
// d.Errf does for the token under the cursor.
func wrapAtField(err error, lines map[string]caddyfile.Token) error {
	tok := lines["upstream"]
	var fe *fieldError
	if errors.As(err, &fe) {
		if t, ok := lines[fe.field]; ok {
			tok = t
		} else if t, ok := lines[strings.Fields(fe.field)[0]]; ok {
			tok = t
		}
	}
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.WrapErr(err)
}

// durationArg reads the one duration argument of subdirective sub.
func durationArg(d *caddyfile.Dispenser, sub string) (caddy.Duration, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	return parseDuration(d, sub, s)
}

// parseDuration parses s, the duration argument of subdirective sub.
func parseDuration(d *caddyfile.Dispenser, sub, s string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("bad %s duration '%s': %v", sub, s, err)
	}
	if dur < 0 {
		return 0, d.Errf("bad %s duration '%s': must not be negative", sub, s)
	}
	return caddy.Duration(dur), nil
}

// countArg reads the one non-negative integer argument of subdirective sub.
func countArg(d *caddyfile.Dispenser, sub string) (int, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, d.Errf("bad %s value '%s': want a non-negative integer", sub, s)
	}
	return n, nil
}

// sizeArg reads the one byte-size argument (such as 512KiB) of subdirective
// sub; it must be positive.
func sizeArg(d *caddyfile.Dispenser, sub string) (int, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > 1<<40 {
		return 0, d.Errf("bad %s size '%s': want a positive size such as 1MiB", sub, s)
	}
	return int(n), nil
}

// onOffArg reads the one on|off argument of subdirective sub.
func onOffArg(d *caddyfile.Dispenser, sub string) (bool, error) {
	var s string
	if !d.AllArgs(&s) {
		return false, d.ArgErr()
	}
	switch s {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, d.Errf("bad %s value '%s': want on or off", sub, s)
}
