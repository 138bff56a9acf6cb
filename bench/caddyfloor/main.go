// Command caddyfloor is Caddy with its standard modules and sse_floor, a
// minimal streaming handler, and without sse_fanout: the "Caddy floor" of
// the benchmark (bench/run.sh, system caddyfloor). Build it with
//
//	go -C bench build -o /tmp/caddyfloor ./caddyfloor
//
// and run it as caddy, with a Caddyfile such as
//
//	https://127.0.0.1:8443 {
//		tls cert.pem key.pem
//		sse_floor {
//			rate 10
//			size 256
//		}
//	}
//
// What it costs beyond the direct system (bench/sseorigin serving the same
// events with the same code) is Caddy's request path; what sse_fanout
// costs beyond it is the plugin's.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
