// Command demo runs sse_fanout end to end in one process: a demo origin
// that emits Server-Sent Events, and an embedded Caddy that fans the
// origin's stream out to every browser and serves a page that shows it.
//
//	go run ./examples/demo
//
// then open http://127.0.0.1:8080/ in as many tabs as you like: the origin
// still sees one connection. Flags (in each address, port 0 picks a free
// port):
//
//	-listen      where Caddy listens (default 127.0.0.1:8080)
//	-origin      where the demo origin listens (default 127.0.0.1:9000)
//	-admin       where Caddy's admin API listens (default 127.0.0.1:2020),
//	             which the page reads the proxy's numbers from
//	-origin-only run the origin alone, for use with a Caddy you built
//	             yourself (see xcaddy.md and examples/Caddyfile)
//
// The demo itself is the package demoapp beside this file, which the
// module's browser tests also start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/sse-fanout/caddy-sse-fanout"
	"github.com/sse-fanout/caddy-sse-fanout/examples/demo/demoapp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "`address` Caddy listens on; port 0 picks a free port")
	originAddr := flag.String("origin", "127.0.0.1:9000", "`address` the demo origin listens on; port 0 picks a free port")
	admin := flag.String("admin", "127.0.0.1:2020", "`address` Caddy's admin API listens on; port 0 picks a free port")
	originOnly := flag.Bool("origin-only", false, "run the demo origin without the embedded Caddy")
	flag.Parse()
	opts := demoapp.Options{
		Listen: *listen, Origin: *originAddr, Admin: *admin, OriginOnly: *originOnly,
		// The page reads the admin API every second, and Caddy logs each
		// such request at info level.
		GlobalOptions: "log {\n\t\texclude admin.api\n\t}",
	}
	if err := run(opts); err != nil {
		// Not log.Fatal: Caddy sends the standard logger to its own, as
		// a JSON line at info level.
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// flagOf names the flag that sets the address of each part of the demo.
var flagOf = map[string]string{
	demoapp.PartOrigin: "-origin",
	demoapp.PartCaddy:  "-listen",
	demoapp.PartAdmin:  "-admin",
}

// start starts the demo. When a part of it cannot listen, its error names
// the flag that moves it.
func start(opts demoapp.Options) (*demoapp.Demo, error) {
	demo, err := demoapp.Start(opts)
	var lerr *demoapp.ListenError
	if errors.As(err, &lerr) {
		return nil, fmt.Errorf("%w; choose another address with %s (port 0 picks a free one)", err, flagOf[lerr.Part])
	}
	return demo, err
}

// run serves until SIGINT or SIGTERM, then stops Caddy and the origin.
func run(opts demoapp.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	demo, err := start(opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := demo.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()

	if opts.OriginOnly {
		fmt.Printf("demo origin: %s/events (connections: %s/stats)\n", demo.OriginURL, demo.OriginURL)
	} else {
		fmt.Printf("demo origin:     %s/events (connections: %s/stats)\n", demo.OriginURL, demo.OriginURL)
		fmt.Printf("Caddy with sse_fanout: open %s/ in a browser, or: curl -N %s/events\n", demo.PageURL, demo.PageURL)
		fmt.Printf("Caddy's admin API: curl %s/sse_fanout/streams, or %s/metrics\n", demo.AdminURL, demo.AdminURL)
	}
	fmt.Println("press Ctrl-C to stop")

	select {
	case <-ctx.Done():
		fmt.Println("stopping")
		return nil
	case err := <-demo.Err():
		return fmt.Errorf("demo origin: %w", err)
	}
}
