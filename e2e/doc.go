// Package e2e holds the tests of sse_fanout against real peers: headless
// Chromium's EventSource, SSE client libraries, and an HTTP/3 client. It is
// a module of its own, so that what only these tests need (chromedp, the
// client libraries) stays out of the plugin's go.mod and of every Caddy
// build that includes the plugin.
package e2e
