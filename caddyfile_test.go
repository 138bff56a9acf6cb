package ssefanout

// The sse_fanout directive: adaptation, parsing and its errors.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt also checks the directive order: sse_fanout is written
// after reverse_proxy but runs before it.
func TestCaddyfileAdapt(t *testing.T) {
	caddytest.AssertAdapt(t, `:8080 {
	reverse_proxy localhost:9000
	sse_fanout /events/* http://localhost:9000 {
		heartbeat 20s
		retry 2500ms
		buffer 0
		buffer_bytes 4MiB
		header_up X-Api-Key secret
		header_up X-Api-Key other
		client_queue 64
		idle_close 1m
		max_clients 1000
		max_event_size 64KiB
	}
}`, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"match": [
								{
									"path": [
										"/events/*"
									]
								}
							],
							"handle": [
								{
									"buffer": 0,
									"buffer_bytes": 4194304,
									"client_queue": 64,
									"handler": "sse_fanout",
									"header_up": {
										"X-Api-Key": [
											"secret",
											"other"
										]
									},
									"heartbeat": 20000000000,
									"idle_close": 60000000000,
									"max_clients": 1000,
									"max_event_size": 65536,
									"retry": 2500000000,
									"upstream": "http://localhost:9000"
								}
							]
						},
						{
							"handle": [
								{
									"handler": "reverse_proxy",
									"upstreams": [
										{
											"dial": "localhost:9000"
										}
									]
								}
							]
						}
					]
				}
			}
		}
	}
}`)
}

func TestCaddyfileAdaptReplayAndSafetyOptions(t *testing.T) {
	caddytest.AssertAdapt(t, `:8080 {
	sse_fanout http://localhost:9000 {
		catch_up off
		prime_cursor off
		stale_event refetch
		key {http.request.header.Authorization}
		header_up Authorization {http.request.header.Authorization}
		key_ignore_query _ t
		max_streams 100
		max_catch_ups 2 16
		upstream_timeout off
		retry_jitter 20%
		node_id edge-1
		upstream_backoff 500ms 10s
	}
}`, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"handle": [
								{
									"catch_up": false,
									"handler": "sse_fanout",
									"header_up": {
										"Authorization": [
											"{http.request.header.Authorization}"
										]
									},
									"key": "{http.request.header.Authorization}",
									"key_ignore_query": [
										"_",
										"t"
									],
									"max_catch_ups": 2,
									"max_catch_ups_per_handler": 16,
									"max_streams": 100,
									"node_id": "edge-1",
									"prime_cursor": false,
									"retry_jitter": 20,
									"stale_event": "refetch",
									"upstream": "http://localhost:9000",
									"upstream_backoff_cap": 10000000000,
									"upstream_backoff_floor": 500000000,
									"upstream_timeout": -1
								}
							]
						}
					]
				}
			}
		}
	}
}`)
}

func TestCaddyfileAdaptPageOptions(t *testing.T) {
	caddytest.AssertAdapt(t, `:8080 {
	sse_fanout http://localhost:9000 {
		rewind 1
		filter_param events
		cors https://app.example
		cors https://admin.example *
	}
}`, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"handle": [
								{
									"cors": [
										"https://app.example",
										"https://admin.example",
										"*"
									],
									"filter_param": "events",
									"handler": "sse_fanout",
									"rewind": 1,
									"upstream": "http://localhost:9000"
								}
							]
						}
					]
				}
			}
		}
	}
}`)
}

func TestCaddyfileOffAndZero(t *testing.T) {
	h := new(Handler)
	d := caddyfile.NewTestDispenser("sse_fanout http://o {\n\theartbeat off\n\tidle_close 0\n\tretry 0\n}")
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Heartbeat >= 0 {
		t.Errorf("heartbeat off gave %v, want negative", h.Heartbeat)
	}
	if h.IdleClose >= 0 {
		t.Errorf("idle_close 0 gave %v, want negative (close at once)", h.IdleClose)
	}
	if h.Retry == nil || *h.Retry != 0 {
		t.Errorf("retry 0 gave %v, want a set zero", h.Retry)
	}
	h = new(Handler)
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse_fanout http://o {\n\tupstream_backoff 2s\n}")); err != nil {
		t.Fatal(err)
	}
	if h.UpstreamBackoffFloor != caddy.Duration(2*time.Second) || h.UpstreamBackoffCap != 0 {
		t.Errorf("upstream_backoff 2s gave floor %v, cap %v; want 2s and the default", h.UpstreamBackoffFloor, h.UpstreamBackoffCap)
	}
	for _, v := range []string{"0", "off"} {
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse_fanout http://o {\n\tmax_streams " + v + "\n}")); err != nil {
			t.Fatal(err)
		}
		if h.MaxStreams >= 0 {
			t.Errorf("max_streams %s gave %d, want negative (unlimited)", v, h.MaxStreams)
		}
	}
}

func TestCaddyfileCompress(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"compress zstd gzip", []string{"zstd", "gzip"}},
		{"compress gzip", []string{"gzip"}},
		{"compress off", nil},
	} {
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse_fanout http://o {\n\t" + tc.line + "\n}")); err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		if !slices.Equal(h.Compress, tc.want) {
			t.Errorf("%s: compress %q, want %q", tc.line, h.Compress, tc.want)
		}
	}
}

func TestCaddyfileKeyOfSeveralTokens(t *testing.T) {
	h := new(Handler)
	d := caddyfile.NewTestDispenser("sse_fanout http://o {\n\tkey {path} {http.request.header.Authorization}\n}")
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if want := "{path} {http.request.header.Authorization}"; h.Key != want {
		t.Fatalf("key %q, want %q", h.Key, want)
	}
}

func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ name, input, want string }{
		{"missing url", "sse_fanout", "Testfile:1"},
		{"missing url with block", "sse_fanout {\n\tbuffer 1\n}", "wrong argument count"},
		{"two urls", "sse_fanout http://a http://b", "wrong argument count"},
		{"unknown subdirective", "sse_fanout http://o {\n\tbuffer 1\n\tnope 1\n}", "unrecognized subdirective 'nope', at Testfile:3"},
		{"bad duration", "sse_fanout http://o {\n\theartbeat soon\n}", "bad heartbeat duration 'soon'"},
		{"bad duration line", "sse_fanout http://o {\n\n\tretry x\n}", "Testfile:3"},
		{"zero heartbeat", "sse_fanout http://o {\n\theartbeat 0s\n}", "must be positive, or off"},
		{"negative duration", "sse_fanout http://o {\n\tidle_close -5s\n}", "must not be negative"},
		{"negative count", "sse_fanout http://o {\n\tbuffer -1\n}", "bad buffer value '-1': want a non-negative integer, at Testfile:2"},
		{"negative max_clients", "sse_fanout http://o {\n\tmax_clients -3\n}", "bad max_clients value '-3'"},
		{"not a count", "sse_fanout http://o {\n\tclient_queue lots\n}", "bad client_queue value 'lots'"},
		{"zero client_queue", "sse_fanout http://o {\n\tclient_queue 0\n}", "want at least 1"},
		{"bad size", "sse_fanout http://o {\n\tmax_event_size big\n}", "bad max_event_size size 'big'"},
		{"header_up one arg", "sse_fanout http://o {\n\theader_up X-A\n}", "wrong argument count"},
		{"duration no arg", "sse_fanout http://o {\n\tretry\n}", "wrong argument count"},
		{"bad on/off", "sse_fanout http://o {\n\tcatch_up maybe\n}", "bad catch_up value 'maybe': want on or off"},
		{"jitter over 100", "sse_fanout http://o {\n\tretry_jitter 150%\n}", "retry_jitter must be a percentage from 0 to 100, got 150, at Testfile:2"},
		{"key_ignore_query no names", "sse_fanout http://o {\n\tkey_ignore_query\n}", "wrong argument count"},
		{"zero upstream_timeout", "sse_fanout http://o {\n\tupstream_timeout 0s\n}", "must be positive, or off"},
		{"bad max_streams", "sse_fanout http://o {\n\tmax_streams many\n}", "bad max_streams value 'many'"},
		{"zero max_catch_ups", "sse_fanout http://o {\n\tmax_catch_ups 0\n}", "bad max_catch_ups value '0'"},
		{"max_catch_ups three args", "sse_fanout http://o {\n\tmax_catch_ups 1 2 3\n}", "wrong argument count"},
		{"key no args", "sse_fanout http://o {\n\tkey\n}", "wrong argument count"},
		{"compress no args", "sse_fanout http://o {\n\tcompress\n}", "wrong argument count"},
		{"compress unknown", "sse_fanout http://o {\n\tbuffer 1\n\tcompress gzip br\n}", "compress: unknown encoding \"br\", want gzip or zstd, at Testfile:3"},
		{"compress twice", "sse_fanout http://o {\n\tcompress zstd gzip zstd\n}", "compress: zstd is listed twice, at Testfile:2"},
		{"compress off and more", "sse_fanout http://o {\n\tcompress off gzip\n}", "compress: unknown encoding \"off\""},
		{"node_id no args", "sse_fanout http://o {\n\tnode_id\n}", "wrong argument count"},
		{"bad node_id", "sse_fanout http://o {\n\tbuffer 1\n\tnode_id edge(1)\n}", "node_id \"edge(1)\": want letters"},
		{"bad node_id line", "sse_fanout http://o {\n\tbuffer 1\n\tnode_id edge(1)\n}", "Testfile:3"},
		{"negative rewind", "sse_fanout http://o {\n\trewind -1\n}", "bad rewind value '-1': want a non-negative integer, at Testfile:2"},
		{"rewind no arg", "sse_fanout http://o {\n\trewind\n}", "wrong argument count"},
		{"filter_param no name", "sse_fanout http://o {\n\tfilter_param\n}", "wrong argument count"},
		{"filter_param two names", "sse_fanout http://o {\n\tfilter_param a b\n}", "wrong argument count"},
		{"filter_param with &", "sse_fanout http://o {\n\tfilter_param a&b\n}", "filter_param \"a&b\": '&' cannot be part of a parameter name, at Testfile:2"},
		{"upstream_backoff no args", "sse_fanout http://o {\n\tupstream_backoff\n}", "wrong argument count"},
		{"upstream_backoff three args", "sse_fanout http://o {\n\tupstream_backoff 1s 2s 3s\n}", "wrong argument count"},
		{"bad upstream_backoff", "sse_fanout http://o {\n\tupstream_backoff soon\n}", "bad upstream_backoff duration 'soon'"},
		{"upstream_backoff floor too low", "sse_fanout http://o {\n\tbuffer 1\n\tupstream_backoff 100ms\n}", "upstream_backoff floor must be at least 250ms, got 100ms, at Testfile:3"},
		{"upstream_backoff zero floor", "sse_fanout http://o {\n\tupstream_backoff 0\n}", "upstream_backoff floor must be at least 250ms, got 0s"},
		{"upstream_backoff zero cap", "sse_fanout http://o {\n\tupstream_backoff 1s 0\n}", "upstream_backoff cap (0s) must be at least its floor (1s)"},
		{"upstream_backoff cap under floor", "sse_fanout http://o {\n\tupstream_backoff 2s 1s\n}", "upstream_backoff cap (1s) must be at least its floor (2s), at Testfile:2"},
		{"upstream_backoff floor over the default cap", "sse_fanout http://o {\n\tupstream_backoff 1m\n}", "upstream_backoff cap (30s) must be at least its floor (1m0s)"},
		{"filter_param is the cursor", "sse_fanout http://o {\n\tfilter_param last_event_id\n}", "filter_param \"last_event_id\": last_event_id carries the cursor, at Testfile:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestCaddyfileEveryBadValueNamesItsLine holds what the README promises:
// a bad value of every subdirective, and a bad upstream URL, fails while
// the Caddyfile is parsed, with the file and the line it is on, also when
// the check is one that Provision makes for a JSON config too.
func TestCaddyfileEveryBadValueNamesItsLine(t *testing.T) {
	for _, tc := range []struct {
		name, block string // block: the lines inside sse_fanout http://o { }, from line 3
		want        string // in the message, before ", at Testfile:N"
		line        int
	}{
		{"heartbeat", "heartbeat soon", "bad heartbeat duration 'soon'", 3},
		{"retry", "retry -1s", "bad retry duration '-1s'", 3},
		{"retry_jitter", "retry_jitter 101", "retry_jitter must be a percentage from 0 to 100, got 101", 3},
		{"buffer", "buffer -1", "bad buffer value '-1'", 3},
		{"buffer too big", "buffer 2000000", "buffer must be at most 1048576, got 2000000", 3},
		{"buffer_bytes", "buffer_bytes 0", "bad buffer_bytes size '0'", 3},
		{"rewind", "rewind x", "bad rewind value 'x'", 3},
		{"rewind past the default buffer", "rewind 2000", "rewind must be at most buffer (1024)", 3},
		{"rewind past buffer", "rewind 20\nbuffer 10", "rewind must be at most buffer (10)", 3},
		{"filter_param", "filter_param a=b", "filter_param \"a=b\"", 3},
		{"cors", "cors app.example", "bad cors origin 'app.example'", 3},
		{"header_up", "header_up X-A", "wrong argument count", 3},
		{"header_up per-request placeholder", "buffer 1\nheader_up Authorization {http.request.header.Authorization}", "must be part of the key", 4},
		{"header_up bad name", `header_up "X A" v`, `header_up "X A": not a valid header name`, 3},
		{"header_up bad value", "header_up X-A \"a\nb\"", `header_up X-A: not a valid header value`, 3},
		{"key", "key", "wrong argument count", 3},
		{"key_ignore_query", "key_ignore_query", "wrong argument count", 3},
		{"client_queue", "client_queue 0", "bad client_queue value '0'", 3},
		{"client_queue too big", "client_queue 2000000", "client_queue must be at most 1048576", 3},
		{"idle_close", "idle_close soon", "bad idle_close duration 'soon'", 3},
		{"max_clients", "max_clients -1", "bad max_clients value '-1'", 3},
		{"max_streams", "max_streams -1", "bad max_streams value '-1'", 3},
		{"max_catch_ups", "max_catch_ups 1 0", "bad max_catch_ups value '0'", 3},
		{"max_event_size", "max_event_size big", "bad max_event_size size 'big'", 3},
		{"upstream_timeout", "upstream_timeout 0", "bad upstream_timeout duration '0'", 3},
		{"upstream_backoff", "upstream_backoff 2s 1s", "upstream_backoff cap (1s) must be at least its floor (2s)", 3},
		{"catch_up", "catch_up yes", "bad catch_up value 'yes'", 3},
		{"prime_cursor", "prime_cursor yes", "bad prime_cursor value 'yes'", 3},
		{"stale_event", "stale_event \"a\nb\"", `stale_event "a\n\tb": an event type cannot hold a line end`, 3},
		{"detach", "detach yes", "bad detach value 'yes'", 3},
		{"compress", "compress br", "compress: unknown encoding \"br\"", 3},
		{"node_id", "node_id edge(1)", "node_id \"edge(1)\"", 3},
		{"unknown subdirective", "nope 1", "unrecognized subdirective 'nope'", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "# a comment\nsse_fanout http://o {\n\t" + strings.ReplaceAll(tc.block, "\n", "\n\t") + "\n}"
			err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			want := fmt.Sprintf("%s, at Testfile:%d", tc.want, tc.line)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), fmt.Sprintf(", at Testfile:%d", tc.line)) {
				t.Fatalf("got error %v, want one with %q", err, want)
			}
		})
	}
}

// TestCaddyfileBadUpstreamNamesItsLine: each way an upstream URL can be
// bad is found while the Caddyfile is adapted, naming the file and line,
// and never showing the URL's password.
func TestCaddyfileBadUpstreamNamesItsLine(t *testing.T) {
	for _, tc := range []struct{ upstream, want string }{
		{"ftp://o", `upstream "ftp://o": scheme must be http or https`},
		{"localhost:9000", "scheme must be http or https"},
		{"http://", `upstream "http://": no host`},
		{"http://o/?a=1", "a base URL has no query or fragment"},
		{"http://o/#top", "a base URL has no query or fragment"},
		{"http://alice:pw-secret@o/%zz", `parsing upstream "http://redacted@o/%zz": invalid URL escape "%zz"`},
	} {
		t.Run(tc.upstream, func(t *testing.T) {
			caddyfileText := ":8080 {\n\n\tsse_fanout /events " + tc.upstream + " {\n\t\tbuffer 1\n\t}\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), ", at Caddyfile:3") {
				t.Fatalf("got error %v, want one with %q, at Caddyfile:3", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Fatalf("the error shows the upstream's password: %v", err)
			}
		})
	}
}
