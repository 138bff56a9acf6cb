package ssefanout

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// This file is the Prometheus metrics, served by Caddy's metrics endpoint.
// Their one label, upstream, is a configured base URL, so their number is
// bounded by the config, never by clients.

const metricsNamespace, metricsSubsystem = "caddy", "sse_fanout"

// collectors are created once and registered with every config's registry,
// so their values carry across reloads.
var collectors = struct {
	clients          *prometheus.GaugeVec
	streams          *prometheus.GaugeVec
	eventsReceived   *prometheus.CounterVec
	eventsSent       *prometheus.CounterVec
	bytesSent        *prometheus.CounterVec
	slowClientDrops  *prometheus.CounterVec
	upstreamConnects *prometheus.CounterVec
	upstreamErrors   *prometheus.CounterVec
	replayHits       *prometheus.CounterVec
	replayMisses     *prometheus.CounterVec
	catchUps         *prometheus.CounterVec
	catchUpsRefused  *prometheus.CounterVec
	refused          *prometheus.CounterVec
	upstreamTier     *prometheus.GaugeVec
	eventsFiltered   *prometheus.CounterVec
	eventsRewound    *prometheus.CounterVec
}{
	clients:          newGauge("clients", "Clients connected."),
	streams:          newGauge("streams", "Streams open, each with one upstream connection."),
	eventsReceived:   newCounter("events_received_total", "Blocks read from upstream connections and published."),
	eventsSent:       newCounter("events_sent_total", "Blocks written to clients; one event sent to N clients counts N."),
	bytesSent:        newCounter("bytes_sent_total", "Bytes of events written to clients, as sent: compressed, for a client sent a compressed stream."),
	slowClientDrops:  newCounter("slow_client_drops_total", "Clients disconnected for falling client_queue events behind."),
	upstreamConnects: newCounter("upstream_connects_total", "Upstream connections opened, reconnects included."),
	upstreamErrors:   newCounter("upstream_errors_total", "Upstream connections that failed or could not be opened."),
	replayHits:       newCounter("replay_hits_total", "Clients whose Last-Event-ID was answered from the buffer."),
	replayMisses:     newCounter("replay_misses_total", "Clients whose Last-Event-ID was not in the buffer."),
	catchUps:         newCounter("catch_ups_total", "Catch-up requests made to the origin for clients past the buffer."),
	catchUpsRefused:  newCounter("catch_ups_refused_total", "Clients past the buffer served without a catch-up, since max_catch_ups or max_catch_ups_per_handler were under way."),
	eventsFiltered:   newCounter("events_filtered_total", "Events not sent to a client because its event-type filter left them out; one event left out for N clients counts N."),
	eventsRewound:    newCounter("events_rewound_total", "Events a client that joined without a cursor was placed to be sent first, by rewind."),
	refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem,
		Name: "refused_total",
		Help: "Clients refused, by reason: max_clients or max_streams (503), or loop (508).",
	}, []string{"upstream", "reason"}),
	upstreamTier: newGauge("upstream_tier_streams", "Streams whose upstream answered as another sse_fanout tier (its Via names an sse_fanout node)."),
}

func newGauge(name, help string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help,
	}, []string{"upstream"})
}

func newCounter(name, help string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help,
	}, []string{"upstream"})
}

// allCollectors lists every collector the module exports: those that
// registerMetrics registers, and that examples/grafana-dashboard.json
// shows (metrics_test.go holds it to them).
func allCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		collectors.clients, collectors.streams, collectors.eventsReceived,
		collectors.eventsSent, collectors.bytesSent, collectors.slowClientDrops,
		collectors.upstreamConnects, collectors.upstreamErrors, collectors.replayHits,
		collectors.replayMisses, collectors.catchUps, collectors.catchUpsRefused, collectors.refused,
		collectors.upstreamTier,
		collectors.eventsFiltered, collectors.eventsRewound,
	}
}

// registerMetrics registers the collectors with a config's registry; a
// second handler in the same config finds them registered already.
func registerMetrics(registry *prometheus.Registry) error {
	if registry == nil {
		return nil
	}
	for _, c := range allCollectors() {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(c); err != nil && !errors.As(err, &already) {
			return err
		}
	}
	return nil
}

// upstreamMetrics are the collectors' children for one upstream, resolved
// once so that the hot paths only add to an atomic.
type upstreamMetrics struct {
	clients          prometheus.Gauge
	streams          prometheus.Gauge
	eventsReceived   prometheus.Counter
	eventsSent       prometheus.Counter
	bytesSent        prometheus.Counter
	slowClientDrops  prometheus.Counter
	upstreamConnects prometheus.Counter
	upstreamErrors   prometheus.Counter
	replayHits       prometheus.Counter
	replayMisses     prometheus.Counter
	catchUps         prometheus.Counter
	catchUpsRefused  prometheus.Counter
	refusedFull      prometheus.Counter
	refusedStreams   prometheus.Counter
	refusedLoop      prometheus.Counter
	// upstreamTierStreams counts streams whose upstream is another tier.
	upstreamTierStreams prometheus.Gauge
	eventsFiltered      prometheus.Counter
	eventsRewound       prometheus.Counter
}

func newUpstreamMetrics(upstream string) *upstreamMetrics {
	return &upstreamMetrics{
		clients:             collectors.clients.WithLabelValues(upstream),
		streams:             collectors.streams.WithLabelValues(upstream),
		eventsReceived:      collectors.eventsReceived.WithLabelValues(upstream),
		eventsSent:          collectors.eventsSent.WithLabelValues(upstream),
		bytesSent:           collectors.bytesSent.WithLabelValues(upstream),
		slowClientDrops:     collectors.slowClientDrops.WithLabelValues(upstream),
		upstreamConnects:    collectors.upstreamConnects.WithLabelValues(upstream),
		upstreamErrors:      collectors.upstreamErrors.WithLabelValues(upstream),
		replayHits:          collectors.replayHits.WithLabelValues(upstream),
		replayMisses:        collectors.replayMisses.WithLabelValues(upstream),
		catchUps:            collectors.catchUps.WithLabelValues(upstream),
		catchUpsRefused:     collectors.catchUpsRefused.WithLabelValues(upstream),
		refusedFull:         collectors.refused.WithLabelValues(upstream, "max_clients"),
		refusedStreams:      collectors.refused.WithLabelValues(upstream, "max_streams"),
		refusedLoop:         collectors.refused.WithLabelValues(upstream, "loop"),
		upstreamTierStreams: collectors.upstreamTier.WithLabelValues(upstream),
		eventsFiltered:      collectors.eventsFiltered.WithLabelValues(upstream),
		eventsRewound:       collectors.eventsRewound.WithLabelValues(upstream),
	}
}

// countFiltered records that a filter left n frames out of what a client
// was sent.
func (m *upstreamMetrics) countFiltered(n int) {
	if n > 0 {
		m.eventsFiltered.Add(float64(n))
	}
}
