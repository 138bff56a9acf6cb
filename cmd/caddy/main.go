// Command caddy is Caddy with its standard modules and sse_fanout, as
// xcaddy would build it: go build ./cmd/caddy
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/sse-fanout/caddy-sse-fanout"
)

func main() {
	caddycmd.Main()
}
