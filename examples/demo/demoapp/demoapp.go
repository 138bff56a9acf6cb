// Package demoapp is the sse_fanout demo, as a library: a demo origin that
// emits Server-Sent Events, and an embedded Caddy that fans the origin's
// stream out to every browser and serves a page that shows it. The demo
// command (examples/demo) runs it; the module's browser tests start it the
// same way and drive its page.
//
// A program that uses it must also import the sse_fanout module,
// github.com/sse-fanout/caddy-sse-fanout.
package demoapp

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"strconv"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	// Caddy's standard modules: the Caddyfile adapter and file_server. The
	// sse_fanout module itself is imported by the program (the demo
	// command, or the module's own tests), not here, so that the module's
	// tests can import this package.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// Options says where the demo listens and how fast its origin talks. In
// each address, port 0 picks a free port.
type Options struct {
	// Listen is where Caddy listens, such as "127.0.0.1:8080".
	Listen string
	// Origin is where the demo origin listens.
	Origin string
	// Admin is where Caddy's admin API listens; empty means 127.0.0.1:0.
	// The page reads the proxy's numbers from it, and its reload button
	// reloads the config through it.
	Admin string
	// OriginOnly runs the origin without Caddy, for a Caddy built apart.
	OriginOnly bool
	// MessageEvery and TickEvery are the origin's clock: an unnamed
	// message with an id every MessageEvery, an event named tick without
	// an id every TickEvery. Zero means 1s and 5s.
	MessageEvery, TickEvery time.Duration
	// GlobalOptions are added to the Caddyfile's global options block, for
	// example "storage file_system /tmp/x" or a log level.
	GlobalOptions string
}

// Default timing of the demo origin's events.
const (
	DefaultMessageEvery = time.Second
	DefaultTickEvery    = 5 * time.Second
)

// Demo is a running demo: its origin, and Caddy unless OriginOnly.
type Demo struct {
	// Origin is the demo origin; its Connections tell how many event
	// streams it has open.
	Origin *Origin
	// OriginURL is the origin's base URL, such as http://127.0.0.1:9000.
	OriginURL string
	// PageURL is the demo page behind Caddy; empty with OriginOnly.
	PageURL string
	// AdminURL is Caddy's admin API, such as http://127.0.0.1:2020; empty
	// with OriginOnly.
	AdminURL string

	srv      *http.Server
	serveErr chan error
	caddy    bool   // this demo loaded a Caddy config, so Close stops Caddy
	stopCfg  []byte // the config Close loads to stop the admin API
}

// Start starts the demo origin and, unless opts.OriginOnly, Caddy in this
// process in front of it. Close stops both. Caddy is process-wide: one
// demo at a time.
func Start(opts Options) (*Demo, error) {
	if opts.MessageEvery <= 0 {
		opts.MessageEvery = DefaultMessageEvery
	}
	if opts.TickEvery <= 0 {
		opts.TickEvery = DefaultTickEvery
	}
	ln, err := net.Listen("tcp", opts.Origin)
	if err != nil {
		return nil, &ListenError{Part: PartOrigin, Addr: opts.Origin, Err: err}
	}
	d := &Demo{
		Origin:    NewOrigin(opts.MessageEvery, opts.TickEvery),
		OriginURL: "http://" + ln.Addr().String(),
		serveErr:  make(chan error, 1),
	}
	d.srv = &http.Server{Handler: d.Origin, ReadHeaderTimeout: 10 * time.Second}
	go func() { d.serveErr <- d.srv.Serve(ln) }()
	if opts.OriginOnly {
		return d, nil
	}

	if err := d.startCaddy(opts, ln.Addr().String()); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// startCaddy starts Caddy, and its admin API, in front of the origin at
// originAddr.
func (d *Demo) startCaddy(opts Options, originAddr string) error {
	if opts.Admin == "" {
		opts.Admin = "127.0.0.1:0"
	}
	// Caddy's own errors for an address in use are long and name no flag:
	// try each address first, and pick the free ports asked for.
	listen, err := freeAddr(PartCaddy, opts.Listen)
	if err != nil {
		return err
	}
	if err := checkLoopback(opts.Admin); err != nil {
		return err
	}
	admin, err := freeAddr(PartAdmin, opts.Admin)
	if err != nil {
		return err
	}
	cfg, err := caddyConfig(listen, admin, originAddr, opts.GlobalOptions)
	if err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}
	if d.stopCfg, err = stopConfig(cfg); err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		stopAdmin(d.stopCfg) // Caddy may have started its admin API before the error
		return fmt.Errorf("starting Caddy: %w", err)
	}
	d.caddy = true
	d.PageURL = pageURL(listen)
	d.AdminURL = "http://" + admin
	return nil
}

// The parts of the demo that listen, as a ListenError names them.
const (
	PartOrigin = "origin" // the demo origin (Options.Origin)
	PartCaddy  = "caddy"  // Caddy's site (Options.Listen)
	PartAdmin  = "admin"  // Caddy's admin API (Options.Admin)
)

// ListenError is Start's error when a part of the demo cannot listen on
// its address, most often because another program has its port.
type ListenError struct {
	Part string // PartOrigin, PartCaddy or PartAdmin
	Addr string
	Err  error
}

func (e *ListenError) Error() string {
	what := map[string]string{PartOrigin: "the demo origin", PartCaddy: "Caddy", PartAdmin: "Caddy's admin API"}[e.Part]
	return fmt.Sprintf("%s cannot listen on %s: %v", what, e.Addr, e.Err)
}

// checkLoopback refuses an admin API address other than this machine's:
// whoever reaches the admin API can load any config.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return &ListenError{Part: PartAdmin, Addr: addr, Err: err}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return &ListenError{Part: PartAdmin, Addr: addr, Err: errors.New("the admin API listens on this machine only: want 127.0.0.1, ::1 or localhost")}
	}
	return nil
}

func (e *ListenError) Unwrap() error { return e.Err }

// freeAddr checks that part can listen on addr, by listening there and
// closing at once, and returns addr with a free port in place of port 0.
func freeAddr(part, addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", &ListenError{Part: part, Addr: addr, Err: err}
	}
	defer ln.Close()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", &ListenError{Part: part, Addr: addr, Err: err}
	}
	if port == "0" {
		port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	}
	return net.JoinHostPort(host, port), nil
}

// stopConfig returns a config with no admin API, nothing saved to disk,
// and cfg's logging, which Close loads to stop the admin API.
func stopConfig(cfg []byte) ([]byte, error) {
	var running struct {
		Logging json.RawMessage `json:"logging,omitempty"`
	}
	if err := json.Unmarshal(cfg, &running); err != nil {
		return nil, fmt.Errorf("reading the demo config: %w", err)
	}
	return json.Marshal(struct {
		Admin   any             `json:"admin"`
		Logging json.RawMessage `json:"logging,omitempty"`
	}{
		Admin:   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		Logging: running.Logging,
	})
}

// stopAdmin stops Caddy's admin API, which caddy.Stop leaves running, by
// loading stopCfg, a config without one.
func stopAdmin(stopCfg []byte) {
	if err := caddy.Load(stopCfg, true); err != nil {
		log.Printf("demo: stopping the admin API: %v", err)
	}
}

// Err returns a channel that yields the origin server's error if it stops
// serving before Close.
func (d *Demo) Err() <-chan error { return d.serveErr }

// Close stops Caddy, then ends the origin's streams and waits briefly for
// its handlers to return.
func (d *Demo) Close() error {
	var errs []error
	if d.caddy {
		// Once the admin API is stopped, a reload still under way fails.
		stopAdmin(d.stopCfg)
		reloads.Wait()
		if err := caddy.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping Caddy: %w", err))
		}
		d.caddy = false
	}
	d.Origin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("stopping the demo origin: %w", err))
	}
	return errors.Join(errs...)
}

// caddyfileTemplate is the demo's Caddy config. The admin API listens on
// an address of its own, on this machine only, and the config is not saved
// to disk, since the demo owns this Caddy.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	persist_config off
	filesystem demo_page sse_fanout_demo_page
{{- if .Global}}
	{{.Global}}
{{- end}}
}

http://:{{.Port}} {
{{- if .Host}}
	bind {{.Host}}
{{- end}}

	# A page that joins late reads /late/events: the same stream (the
	# prefix is stripped, and both handlers have the same upstream), but
	# it is sent the last 10 events at once, from the buffer.
	handle_path /late/* {
		sse_fanout http://{{.Origin}} {
			heartbeat 15s
			retry 2s
			idle_close 10s
			filter_param events
			rewind 10
		}
	}

	# Every EventSource on /events... shares one origin connection per
	# path and query; ?events=tick picks the event types a page is sent,
	# and is no part of the stream.
	sse_fanout /events* http://{{.Origin}} {
		heartbeat 15s
		retry 2s
		idle_close 10s
		filter_param events
	}

	# The page's window on the proxy: /demo/stats, its numbers as the
	# admin API has them, and /demo/reload, a reload through the admin API.
	route /demo/* {
		sse_fanout_demo {{.Admin}}
	}

	file_server {
		fs demo_page
	}
}
`))

// caddyConfig adapts the demo Caddyfile, for Caddy listening on listen in
// front of the origin at originAddr, with its admin API on admin, to
// Caddy's JSON config.
func caddyConfig(listen, admin, originAddr, global string) ([]byte, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("bad listen address %q: %w", listen, err)
	}
	var buf bytes.Buffer
	err = caddyfileTemplate.Execute(&buf, struct{ Host, Port, Admin, Origin, Global string }{host, port, admin, originAddr, global})
	if err != nil {
		return nil, fmt.Errorf("writing the demo Caddyfile: %w", err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, errors.New("the caddyfile config adapter is not registered")
	}
	cfg, warnings, err := adapter.Adapt(buf.Bytes(), map[string]any{"filename": "demo Caddyfile"})
	if err != nil {
		return nil, fmt.Errorf("adapting the demo Caddyfile: %w", err)
	}
	for _, w := range warnings {
		log.Printf("demo Caddyfile: %s", w.String())
	}
	return cfg, nil
}

// pageURL is the URL of the demo page for Caddy listening on listen.
func pageURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// page holds index.html, which Caddy's file_server serves through the
// pageFS module below.
//
//go:embed index.html
var page embed.FS

func init() {
	caddy.RegisterModule(pageFS{})
}

// pageFS is the embedded index.html as a Caddy file system, module
// caddy.fs.sse_fanout_demo_page, so that Caddy's own file_server serves the
// demo page.
type pageFS struct{}

// CaddyModule returns the Caddy module information.
func (pageFS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.fs.sse_fanout_demo_page",
		New: func() caddy.Module { return new(pageFS) },
	}
}

// Open opens the named file of the embedded page.
func (pageFS) Open(name string) (fs.File, error) { return page.Open(name) }

// UnmarshalCaddyfile accepts the module name alone: it has no options.
func (*pageFS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the module name
	if d.NextArg() || d.NextBlock(0) {
		return d.ArgErr()
	}
	return nil
}

// Interface guards
var (
	_ fs.FS                 = pageFS{}
	_ caddyfile.Unmarshaler = (*pageFS)(nil)
)
