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
//
// The demo itself is the package demoapp beside this file, which the
// module's browser tests also start.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/sse-fanout/caddy-sse-fanout"
	"github.com/sse-fanout/caddy-sse-fanout/examples/demo/demoapp"
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

	demo, err := demoapp.Start(demoapp.Options{Listen: listen, Origin: originAddr, OriginOnly: originOnly})
	if err != nil {
		return err
	}
	defer func() {
		if err := demo.Close(); err != nil {
			log.Print(err)
		}
	}()

	if originOnly {
		fmt.Printf("demo origin: %s/events (connections: %s/stats)\n", demo.OriginURL, demo.OriginURL)
	} else {
		fmt.Printf("demo origin:     %s/events (connections: %s/stats)\n", demo.OriginURL, demo.OriginURL)
		fmt.Printf("Caddy with sse_fanout: open %s/ in a browser, or: curl -N %s/events\n", demo.PageURL, demo.PageURL)
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
