package cluster

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are always built, registered only with a Registerer.
type metrics struct {
	connected     prometheus.Gauge
	nodes         prometheus.Gauge
	resyncs       prometheus.Counter
	malformed     prometheus.Counter
	publishErrors prometheus.Counter
	signals       *prometheus.CounterVec // by direction
	claims        *prometheus.CounterVec // by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "callbox", "cluster"
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connected",
			Help: "1 while the node is connected to NATS; 0 while it serves its own rooms only."}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "nodes",
			Help: "Other nodes heard from within three heartbeats."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "resyncs_total",
			Help: "State requests to other nodes after a gap in their events (start, outage, loss)."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "malformed_total",
			Help: "Messages from NATS dropped as malformed."}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "publish_errors_total",
			Help: "Publishes to NATS that failed (disconnected, buffer full, chat not stored)."}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "signals_total",
			Help: "Signals to and from peers on other nodes, by direction."}, []string{"dir"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "claims_total",
			Help: "Resumes of sessions held by another node, by result."}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connected, m.nodes, m.resyncs, m.malformed, m.publishErrors, m.signals, m.claims} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cluster: register metrics: %w", err)
		}
	}
	return m, nil
}
