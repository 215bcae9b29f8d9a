package turnserver

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

const metricPrefix = "callbox_turn_"

// Directions of relayed traffic, as metric labels.
const (
	dirClientToPeer = "client_to_peer"
	dirPeerToClient = "peer_to_client"
)

// Reasons a relayed packet is dropped by callbox (not by pion).
const (
	dropProtectedPort = "protected_port"
	dropBitrate       = "bitrate"
	dropNoPermission  = "no_permission"
	dropPionBusy      = "pion_busy"
)

// metrics are the server's Prometheus series. Nothing here is labelled by
// user: REST usernames are unbounded.
type metrics struct {
	allocationsActive  prometheus.Gauge
	allocationsCreated prometheus.Counter
	authFailures       *prometheus.CounterVec // reason
	peersDenied        *prometheus.CounterVec // reason
	quotaRejections    *prometheus.CounterVec // scope: user, total
	requestsDropped    prometheus.Counter
	relay              *relayCollector
}

func newMetrics(reg prometheus.Registerer, relays *relayRegistry) (*metrics, error) {
	m := &metrics{
		allocationsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "allocations_active",
			Help: "TURN allocations currently open.",
		}),
		allocationsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "allocations_created_total",
			Help: "TURN allocations created.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "auth_failures_total",
			Help: "Authenticated TURN requests refused, by reason (bad_username, wrong_realm, bad_integrity, expired, max_lifetime, no_verdict).",
		}, []string{"reason"}),
		peersDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "peer_denied_total",
			Help: "CreatePermission/ChannelBind peer addresses refused with 403, by reason.",
		}, []string{"reason"}),
		quotaRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "quota_rejections_total",
			Help: "Allocate requests refused with 486, by scope (user, total).",
		}, []string{"scope"}),
		requestsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricPrefix + "requests_dropped_total",
			Help: "Datagrams for pion (requests, Send indications, unbound ChannelData) dropped because pion's queue on their listener socket was full: a flood.",
		}),
		relay: &relayCollector{registry: relays},
	}
	// Pre-create the label values so dashboards see zeroes, not gaps.
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range denyReasons {
		m.peersDenied.WithLabelValues(r)
	}
	m.quotaRejections.WithLabelValues("user")
	m.quotaRejections.WithLabelValues("total")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.allocationsActive, m.allocationsCreated, m.authFailures, m.peersDenied, m.quotaRejections, m.requestsDropped, m.relay} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return nil, fmt.Errorf("turnserver: metrics already registered (one Server per Registerer): %w", err)
			}
			return nil, fmt.Errorf("turnserver: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.allocationsActive, m.allocationsCreated, m.authFailures, m.peersDenied, m.quotaRejections, m.requestsDropped, m.relay} {
		reg.Unregister(c)
	}
}

var (
	relayPacketsDesc = prometheus.NewDesc(metricPrefix+"relayed_packets_total",
		"UDP datagrams relayed, by direction.", []string{"direction"}, nil)
	relayBytesDesc = prometheus.NewDesc(metricPrefix+"relayed_bytes_total",
		"Payload bytes relayed, by direction.", []string{"direction"}, nil)
	relayDroppedDesc = prometheus.NewDesc(metricPrefix+"relay_dropped_packets_total",
		"Datagrams dropped by callbox's relay policy, by direction and reason (protected_port, bitrate, no_permission; pion_busy: a peer datagram for pion, a Data indication, while pion's queue for the allocation was full).",
		[]string{"direction", "reason"}, nil)
)

// relayCollector reads the per-relay counters at scrape time. The data path
// only touches counters owned by its own relay conn, so packets on
// different allocations never contend for one shared cache line.
type relayCollector struct {
	registry *relayRegistry
}

func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- relayPacketsDesc
	ch <- relayBytesDesc
	ch <- relayDroppedDesc
}

func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.registry.totals()
	for d, dir := range [2]string{dirClientToPeer, dirPeerToClient} {
		ch <- prometheus.MustNewConstMetric(relayPacketsDesc, prometheus.CounterValue, float64(t.packets[d]), dir)
		ch <- prometheus.MustNewConstMetric(relayBytesDesc, prometheus.CounterValue, float64(t.bytes[d]), dir)
		ch <- prometheus.MustNewConstMetric(relayDroppedDesc, prometheus.CounterValue, float64(t.protected[d]), dir, dropProtectedPort)
		ch <- prometheus.MustNewConstMetric(relayDroppedDesc, prometheus.CounterValue, float64(t.bitrate[d]), dir, dropBitrate)
		ch <- prometheus.MustNewConstMetric(relayDroppedDesc, prometheus.CounterValue, float64(t.noPerm[d]), dir, dropNoPermission)
		ch <- prometheus.MustNewConstMetric(relayDroppedDesc, prometheus.CounterValue, float64(t.busy[d]), dir, dropPionBusy)
	}
}

// relayTotals are counters per direction (index 0 client→peer, 1 peer→client).
type relayTotals struct {
	packets, bytes, protected, bitrate, noPerm, busy [2]uint64
}

func (t *relayTotals) add(o relayTotals) {
	for d := range 2 {
		t.packets[d] += o.packets[d]
		t.bytes[d] += o.bytes[d]
		t.protected[d] += o.protected[d]
		t.bitrate[d] += o.bitrate[d]
		t.noPerm[d] += o.noPerm[d]
		t.busy[d] += o.busy[d]
	}
}

// relayRegistry knows every open relay conn, by relay port, so that
// permission events can reach the conn and scrapes can sum its counters.
type relayRegistry struct {
	mu     sync.Mutex
	byPort map[uint16]*relayConn // guarded by mu
	closed relayTotals           // guarded by mu: counters of conns already closed
}

func newRelayRegistry() *relayRegistry {
	return &relayRegistry{byPort: make(map[uint16]*relayConn)}
}

func (r *relayRegistry) add(c *relayConn) {
	r.mu.Lock()
	r.byPort[c.port] = c
	r.mu.Unlock()
}

// remove folds a closed conn's counters into the totals.
func (r *relayRegistry) remove(c *relayConn) {
	r.mu.Lock()
	if r.byPort[c.port] == c {
		delete(r.byPort, c.port)
	}
	r.closed.add(c.stats.snapshot())
	r.mu.Unlock()
}

func (r *relayRegistry) get(port uint16) *relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byPort[port]
}

func (r *relayRegistry) all() []*relayConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*relayConn, 0, len(r.byPort))
	for _, c := range r.byPort {
		out = append(out, c)
	}
	return out
}

func (r *relayRegistry) totals() relayTotals {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.closed
	for _, c := range r.byPort {
		t.add(c.stats.snapshot())
	}
	return t
}
