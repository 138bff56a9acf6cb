package main

import (
	"net"
	"strings"
	"testing"

	"github.com/sse-fanout/caddy-sse-fanout/examples/demo/demoapp"
)

// TestStartNamesTheFlagOfATakenPort occupies the port of each part of the
// demo in turn: start must fail with one line that names the address and
// the flag that moves that part. Each part is checked before Caddy starts,
// so no Caddy runs here.
func TestStartNamesTheFlagOfATakenPort(t *testing.T) {
	for _, tc := range []struct {
		name, flag string
		opts       func(taken string) demoapp.Options
	}{
		{"origin", "-origin", func(taken string) demoapp.Options {
			return demoapp.Options{Origin: taken, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0"}
		}},
		{"origin only", "-origin", func(taken string) demoapp.Options {
			return demoapp.Options{Origin: taken, OriginOnly: true}
		}},
		{"caddy", "-listen", func(taken string) demoapp.Options {
			return demoapp.Options{Origin: "127.0.0.1:0", Listen: taken, Admin: "127.0.0.1:0"}
		}},
		{"admin", "-admin", func(taken string) demoapp.Options {
			return demoapp.Options{Origin: "127.0.0.1:0", Listen: "127.0.0.1:0", Admin: taken}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			taken := ln.Addr().String()
			demo, err := start(tc.opts(taken))
			if err == nil {
				demo.Close()
				t.Fatalf("the demo started with %s taken", taken)
			}
			msg := err.Error()
			if !strings.Contains(msg, taken) || !strings.Contains(msg, "with "+tc.flag+" ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming %s and the flag %s", msg, taken, tc.flag)
			}
		})
	}
}

// TestStartKeepsTheAdminAPIOnThisMachine: whoever reaches the admin API
// can load any config, so start refuses an address off this machine, and
// names the flag.
func TestStartKeepsTheAdminAPIOnThisMachine(t *testing.T) {
	demo, err := start(demoapp.Options{Origin: "127.0.0.1:0", Listen: "127.0.0.1:0", Admin: "0.0.0.0:0"})
	if err == nil {
		demo.Close()
		t.Fatal("the demo started with its admin API on 0.0.0.0")
	}
	if msg := err.Error(); !strings.Contains(msg, "this machine only") || !strings.Contains(msg, "with -admin ") {
		t.Errorf("error %q: want one that says the admin API stays on this machine, and names -admin", msg)
	}
}
