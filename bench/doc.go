// Package bench is the side-by-side benchmark's own module: the load tool
// (sseload), the origin (sseorigin), and the floors it measures against
// (caddyfloor). It is a module of its own so that what only the benchmark
// needs (an HTTP/3 client and server) stays out of the plugin's go.mod.
package bench
