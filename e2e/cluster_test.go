package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v4"
	"github.com/pion/webrtc/v4"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/natstest"
)

// clusterNode is one callbox node of a test cluster, stoppable on its own.
type clusterNode struct {
	*app.App
	name string
	stop func() // graceful, as SIGTERM; idempotent
}

// startClusterNodes runs n callbox nodes (package app, the real assembly)
// sharing rooms through one in-process NATS server, with one TURN secret.
func startClusterNodes(t *testing.T, art *artifacts, n int, edit func(*config.Config)) []*clusterNode {
	t.Helper()
	nats := natstest.Start(t, 1)
	var nodes []*clusterNode
	for i := range n {
		cfg := config.Default()
		cfg.HTTP.Listen = "127.0.0.1:0"
		cfg.TURN.Listen = "127.0.0.1:0"
		cfg.Metrics.Listen = ""
		cfg.TURN.AllowLoopbackPeers = true
		cfg.TURN.Secrets = []string{"cluster-e2e-secret-0123456789"}
		cfg.Cluster.NATS = []string{nats[0].URL()}
		cfg.Cluster.Node = fmt.Sprintf("n%d-%d", i, os.Getpid())
		// The default heartbeat (1 s): shorter ones made a machine loaded
		// with browsers and the race detector miss three in a row, and the
		// nodes flap (seen at load 70 with 500 ms).
		if edit != nil {
			edit(&cfg)
		}
		logger := slog.New(slog.NewTextHandler(art, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", cfg.Cluster.Node)
		a, stop := runApp(t, cfg, logger)
		nodes = append(nodes, &clusterNode{App: a, name: cfg.Cluster.Node, stop: stop})
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, nd := range nodes {
		for nd.Cluster().Alive() < n-1 || nd.Cluster().Status() != "ok" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: sees %d nodes, status %s", nd.name, nd.Cluster().Alive(), nd.Cluster().Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes
}

func wsURL(a *app.App) string { return "ws" + strings.TrimPrefix(a.HTTPURL(), "http") + "/ws" }

// Two pion peers on two different nodes find each other through NATS and
// move bytes over relays of their own nodes' TURN servers; one node then
// stops (as a deploy would), its peer resumes on a third node and the call
// is restarted through that node's TURN, with the room intact.
func TestClusterPionPeers(t *testing.T) {
	art := newArtifacts(t)
	nodes := startClusterNodes(t, art, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	grace := newPionPeer(t, ctx, wsURL(nodes[1].App), "grace")
	ada := newPionPeer(t, ctx, wsURL(nodes[0].App), "ada")
	var mu sync.Mutex
	var received bytes.Buffer
	dc := openDataChannel(t, ctx, ada, grace, func(data []byte) {
		mu.Lock()
		received.Write(data)
		mu.Unlock()
	})
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	sendAndWait := func(what string) {
		t.Helper()
		mu.Lock()
		received.Reset()
		mu.Unlock()
		for off := 0; off < len(payload); off += 16 << 10 {
			if err := dc.Send(payload[off : off+16<<10]); err != nil {
				t.Fatalf("%s: send: %v", what, err)
			}
		}
		for {
			mu.Lock()
			n := received.Len()
			same := n == len(payload) && bytes.Equal(received.Bytes(), payload)
			mu.Unlock()
			if same {
				return
			}
			if n > len(payload) || ctx.Err() != nil {
				t.Fatalf("%s: grace got %d of %d bytes", what, n, len(payload))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sendAndWait("first node pair")
	for _, p := range []*pionPeer{ada, grace} {
		pair, err := p.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: selected pair %v %v, want relay", p.name, pair, err)
		}
	}
	if nodes[0].TURN().AllocationCount() == 0 || nodes[1].TURN().AllocationCount() == 0 {
		t.Fatalf("allocations: node a %d, node b %d; want each peer on its own node's TURN",
			nodes[0].TURN().AllocationCount(), nodes[1].TURN().AllocationCount())
	}
	art.logf("call up across nodes; stopping node %s", nodes[0].name)
	ada.resumeOn(t, ctx, wsURL(nodes[2].App), nodes[0].stop)
	ada.iceRestart(t, grace.id)
	sendAndWait("after the resume on a third node")
	if nodes[2].TURN().AllocationCount() == 0 {
		t.Fatal("ada's new relay is not on the third node's TURN")
	}
}

// Per-user TURN quotas hold across nodes: allocations of one user id on
// one node count on the others.
func TestClusterTURNQuota(t *testing.T) {
	art := newArtifacts(t)
	nodes := startClusterNodes(t, art, 2, func(c *config.Config) { c.TURN.UserQuota = 2 })
	creds := nodes[0].TURN().Credentials("alice", time.Hour)
	var clients []*turn.Client
	allocate := func(nd *clusterNode) error {
		t.Helper()
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, err := turn.NewClient(&turn.ClientConfig{
			STUNServerAddr: nd.TURN().UDPAddr().String(),
			TURNServerAddr: nd.TURN().UDPAddr().String(),
			Conn:           conn,
			Username:       creds.Username,
			Password:       creds.Password,
			Realm:          config.Default().TURN.Realm,
			RTO:            200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); conn.Close() })
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relay, err := c.Allocate()
		if err == nil {
			t.Cleanup(func() { relay.Close() })
			clients = append(clients, c)
		}
		return err
	}
	// One on each node: the second node's credentials are the first's.
	if err := allocate(nodes[0]); err != nil {
		t.Fatalf("first allocation on node a: %v", err)
	}
	if err := allocate(nodes[1]); err != nil {
		t.Fatalf("second allocation, on node b with node a's credentials: %v", err)
	}
	waitClusterCount(t, nodes, "alice", 1)
	for _, nd := range nodes {
		if err := allocate(nd); err == nil {
			t.Fatalf("a third allocation of alice on %s was accepted (user_quota 2 across the cluster)", nd.name)
		}
	}
}

func waitClusterCount(t *testing.T, nodes []*clusterNode, user string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, nd := range nodes {
		for nd.Cluster().RemoteAllocations(user) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%s counts %d allocations of %s elsewhere, want %d", nd.name, nd.Cluster().RemoteAllocations(user), user, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
