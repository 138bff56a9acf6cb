package demoapp

import "testing"

// TestSumMetrics: the samples of each named metric are added up over their
// labels; other metrics, comments, and a timestamp after the value are
// left out.
func TestSumMetrics(t *testing.T) {
	exposition := []byte(`# HELP caddy_sse_fanout_clients Clients connected.
# TYPE caddy_sse_fanout_clients gauge
caddy_sse_fanout_clients{upstream="http://127.0.0.1:9000"} 6
caddy_sse_fanout_clients{upstream="http://a b {x}"} 2
caddy_sse_fanout_clients_other 100
caddy_sse_fanout_events_sent_total{upstream="http://127.0.0.1:9000"} 1.5e+06 1700000000000
caddy_sse_fanout_streams 1
`)
	var clients, sent, streams float64
	err := sumMetrics(exposition, map[string]*float64{
		"caddy_sse_fanout_clients":           &clients,
		"caddy_sse_fanout_events_sent_total": &sent,
		"caddy_sse_fanout_streams":           &streams,
	})
	if err != nil {
		t.Fatal(err)
	}
	if clients != 8 || sent != 1.5e6 || streams != 1 {
		t.Errorf("got clients %v, events sent %v, streams %v; want 8, 1.5e6, 1", clients, sent, streams)
	}
	if err := sumMetrics([]byte("caddy_sse_fanout_streams{upstream=\"x\"} many\n"), map[string]*float64{"caddy_sse_fanout_streams": &streams}); err == nil {
		t.Error("a value that is not a number: no error")
	}
}
