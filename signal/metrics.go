package signal

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are always built, registered only with a Registerer, so the hub
// never checks for nil.
type metrics struct {
	connections prometheus.Gauge
	rooms       prometheus.Gauge
	peers       prometheus.Gauge
	resumes     prometheus.Counter
	rateLimited prometheus.Counter
	messages    *prometheus.CounterVec // by client message type
	disconnects *prometheus.CounterVec // by reason
	rejected    *prometheus.CounterVec // upgrades refused, by reason
	api         *prometheus.CounterVec // /api/turn answers, by result

	// byType holds the messages counters of the protocol's types, looked
	// up once: a message costs no label hashing.
	byType map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "callbox", "signal"
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections",
			Help: "Open WebSocket connections, joined or not."}),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rooms",
			Help: "Rooms with at least one peer."}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "peers",
			Help: "Peers in rooms, reconnecting ones included."}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "resumes_total",
			Help: "Sessions resumed with a resume token."}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rate_limited_total",
			Help: "Client messages dropped by the per-client rate limit."}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_total",
			Help: "Client messages handled, by type."}, []string{"type"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disconnects_total",
			Help: "Closed WebSocket connections, by reason."}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_total",
			Help: "WebSocket upgrades refused, by reason."}, []string{"reason"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "api_turn_requests_total",
			Help: "GET /api/turn requests, by result."}, []string{"result"}),
		byType: make(map[string]prometheus.Counter),
	}
	for _, t := range []string{"hello", "signal", "chat", "rename", "leave"} {
		m.byType[t] = m.messages.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.rooms, m.peers, m.resumes, m.rateLimited,
		m.messages, m.disconnects, m.rejected, m.api} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("signal: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) message(typ string) {
	if c, ok := m.byType[typ]; ok {
		c.Inc()
	}
}

func (m *metrics) disconnect(reason string) {
	m.disconnects.WithLabelValues(reason).Inc()
}
