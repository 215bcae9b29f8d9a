package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/natstest"
	"github.com/callbox/callbox/signal"
)

type natsServer = natstest.Server

func startNATS(t testing.TB, n int) []*natsServer { return natstest.Start(t, n) }

// testNode is one callbox node: a hub with a cluster.Node as its router,
// served on httptest.
type testNode struct {
	name string
	hub  *signal.Hub
	node *Node
	srv  *httptest.Server
	ws   string
}

const testHeartbeat = 200 * time.Millisecond

func testSignal(mutate func(*config.Signal)) config.Signal {
	cfg := config.Default().Signal
	cfg.MessagesPerSecond = 1000
	cfg.MessageBurst = 1000
	cfg.ResumeWindow = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

func startNode(t testing.TB, name, natsURL string, scfg config.Signal) *testNode {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("test_node", name)
	node, err := New(config.Cluster{NATS: []string{natsURL}, Node: name, Replicas: 1, Heartbeat: testHeartbeat},
		Options{Logger: logger, Signal: scfg})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := signal.NewHub(scfg, signal.Options{Logger: logger, Router: node})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(hub); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	hub.Routes(mux)
	srv := httptest.NewServer(mux)
	tn := &testNode{name: name, hub: hub, node: node, srv: srv, ws: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"}
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tn.hub.Shutdown(ctx)
	tn.node.Close()
	tn.srv.Close()
	tn.srv = nil
}

// crash ends the node as a killed process would: sockets cut, no bye, no
// leave; the other nodes only notice its heartbeats stop.
func (tn *testNode) crash() {
	tn.node.mu.Lock()
	tn.node.closed = true
	tn.node.mu.Unlock()
	tn.node.nc.Close()
	tn.node.stop()
	tn.node.wg.Wait()
	tn.hub.DropSockets()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tn.hub.Shutdown(ctx)
	tn.srv.Close()
	tn.srv = nil
}

// startCluster runs one node per name, node i on NATS server i mod len.
func startCluster(t testing.TB, nats []*natsServer, scfg config.Signal, names ...string) []*testNode {
	t.Helper()
	var out []*testNode
	for i, name := range names {
		out = append(out, startNode(t, name+"-"+strconv.Itoa(int(time.Now().UnixNano()%1e6)), nats[i%len(nats)].URL(), scfg))
	}
	// Every node has heard every other before the test begins.
	waitFor(t, "nodes to see each other", 10*time.Second, func() bool {
		for _, n := range out {
			n.node.mu.Lock()
			alive := 0
			for _, ns := range n.node.v.nodes {
				if !ns.dead && ns.synced {
					alive++
				}
			}
			n.node.mu.Unlock()
			if alive < len(out)-1 || !n.node.ready.Load() {
				return false
			}
		}
		return true
	})
	return out
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// msg is any server message.
type msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Resume  string          `json:"resume"`
	Resumed bool            `json:"resumed"`
	Peers   []peer          `json:"peers"`
	Peer    peer            `json:"peer"`
	History []msg           `json:"history"`
	From    string          `json:"from"`
	Payload json.RawMessage `json:"payload"`
	Seq     int64           `json:"seq"`
	Text    string          `json:"text"`
	Code    string          `json:"code"`
	Reason  string          `json:"reason"`
	Fatal   bool            `json:"fatal"`
}

type peer struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Reconnecting bool   `json:"reconnecting"`
}

// client is a WebSocket client of one node.
type client struct {
	t    testing.TB
	name string
	ws   *websocket.Conn
	w    msg // its welcome
}

func dial(t testing.TB, tn *testNode) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(tn.ws, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", tn.name, err)
	}
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	return c
}

// join dials tn and joins room as name; it fails the test on anything but a welcome.
func join(t testing.TB, tn *testNode, room, name string) *client {
	t.Helper()
	c := dial(t, tn)
	c.name = name
	c.send(map[string]any{"type": "hello", "version": 1, "room": room, "name": name})
	c.w = c.expect("welcome")
	return c
}

// resume dials tn with old's resume token.
func resume(t testing.TB, tn *testNode, room string, old *client, lastSeq int64) *client {
	t.Helper()
	c := dial(t, tn)
	c.name = old.name
	c.send(map[string]any{"type": "hello", "version": 1, "room": room, "name": old.name, "resume": old.w.Resume, "lastSeq": lastSeq})
	c.w = c.expect("welcome")
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

func (c *client) read() (msg, error) {
	c.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m msg
	err := c.ws.ReadJSON(&m)
	return m, err
}

// expect reads until a message of type typ, skipping others (pings are
// answered by gorilla).
func (c *client) expect(typ string) msg {
	c.t.Helper()
	for {
		m, err := c.read()
		if err != nil {
			c.t.Fatalf("%s: waiting for %s: %v", c.name, typ, err)
		}
		if m.Type == typ {
			return m
		}
		if m.Type == "error" && m.Fatal {
			c.t.Fatalf("%s: waiting for %s: fatal error %s: %s", c.name, typ, m.Code, m.Reason)
		}
	}
}

// expectPresence waits for presence event typ about peer id.
func (c *client) expectPresence(typ, id string) msg {
	c.t.Helper()
	for {
		m := c.expect(typ)
		if m.ID == id || m.Peer.ID == id {
			return m
		}
	}
}
