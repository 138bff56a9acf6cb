// Command demo runs sse_fanout end to end in one process: a demo origin
// that emits Server-Sent Events, and an embedded Caddy that fans the
// origin's stream out to every browser and serves a page that shows it.
//
//	go run ./examples/demo
//
// then open http://127.0.0.1:8080/ in as many tabs as you like: the origin
// still sees one connection. Flags:
//
//	-listen      where Caddy listens (default 127.0.0.1:8080)
//	-origin      where the demo origin listens (default 127.0.0.1:9000;
//	             port 0 picks a free port)
//	-origin-only run the origin alone, for use with a Caddy you built
//	             yourself (see xcaddy.md and examples/Caddyfile)
package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/sse-fanout/caddy-sse-fanout"
)

// page holds index.html, which Caddy's file_server serves through the
// pageFS module below.
//
//go:embed index.html
var page embed.FS

// caddyfileTemplate is the demo's Caddy config. The admin endpoint is off
// and the config is not saved to disk, since the demo owns this Caddy.
var caddyfileTemplate = template.Must(template.New("Caddyfile").Parse(`{
	admin off
	persist_config off
	filesystem demo_page sse_fanout_demo_page
}

http://:{{.Port}} {
{{- if .Host}}
	bind {{.Host}}
{{- end}}

	# Every EventSource on /events... shares one origin connection per
	# path and query.
	sse_fanout /events* http://{{.Origin}} {
		heartbeat 15s
		retry 2s
		idle_close 10s
	}

	file_server {
		fs demo_page
	}
}
`))

// Timing of the demo origin's events.
const (
	messageEvery = time.Second
	tickEvery    = 5 * time.Second
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "`address` Caddy listens on")
	originAddr := flag.String("origin", "127.0.0.1:9000", "`address` the demo origin listens on; port 0 picks a free port")
	originOnly := flag.Bool("origin-only", false, "run the demo origin without the embedded Caddy")
	flag.Parse()
	if err := run(*listen, *originAddr, *originOnly); err != nil {
		log.Fatal(err)
	}
}

// run serves until SIGINT or SIGTERM, then stops Caddy and the origin.
func run(listen, originAddr string, originOnly bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", originAddr)
	if err != nil {
		return fmt.Errorf("starting the demo origin: %w", err)
	}
	origin := NewOrigin(messageEvery, tickEvery)
	srv := &http.Server{Handler: origin, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer shutdownOrigin(origin, srv)
	originURL := "http://" + ln.Addr().String()

	if originOnly {
		fmt.Printf("demo origin: %s/events (connections: %s/stats)\n", originURL, originURL)
		fmt.Println("press Ctrl-C to stop")
	} else {
		cfg, err := caddyConfig(listen, ln.Addr().String())
		if err != nil {
			return err
		}
		if err := caddy.Load(cfg, true); err != nil {
			return fmt.Errorf("starting Caddy: %w", err)
		}
		defer func() {
			if err := caddy.Stop(); err != nil {
				log.Printf("stopping Caddy: %v", err)
			}
		}()
		fmt.Printf("demo origin:     %s/events (connections: %s/stats)\n", originURL, originURL)
		fmt.Printf("Caddy with sse_fanout: open %s/ in a browser, or: curl -N %s/events\n", pageURL(listen), pageURL(listen))
		fmt.Println("press Ctrl-C to stop")
	}

	select {
	case <-ctx.Done():
		fmt.Println("stopping")
		return nil
	case err := <-serveErr:
		return fmt.Errorf("demo origin: %w", err)
	}
}

// shutdownOrigin ends the origin's streams and waits briefly for its
// handlers to return.
func shutdownOrigin(origin *Origin, srv *http.Server) {
	origin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("stopping the demo origin: %v", err)
	}
}

// caddyConfig adapts the demo Caddyfile, for Caddy listening on listen in
// front of the origin at originAddr, to Caddy's JSON config.
func caddyConfig(listen, originAddr string) ([]byte, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("bad -listen address %q: %w", listen, err)
	}
	var buf bytes.Buffer
	err = caddyfileTemplate.Execute(&buf, struct{ Host, Port, Origin string }{host, port, originAddr})
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
