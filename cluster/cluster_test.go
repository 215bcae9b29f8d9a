package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/natstest"
	"github.com/callbox/callbox/signal"
)

// Three nodes on a three-server NATS cluster, one peer on each: presence,
// targeted signals, one chat order, rename and leave, all across nodes.
func TestRoomAcrossNodes(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 3)
	nodes := startCluster(t, nats, testSignal(nil), "a", "b", "c")
	const room = "across"

	// The membership view is replicated: a welcome lists the peers its node
	// has heard of, so each join waits until the node has (a join an
	// instant after another on a different node gets "joined" instead;
	// one CI run joined grace before node b had heard of ada).
	ada := join(t, nodes[0], room, "ada")
	waitMembers(t, nodes[1], room, 1)
	grace := join(t, nodes[1], room, "grace")
	if len(grace.w.Peers) != 1 || grace.w.Peers[0].ID != ada.w.ID || grace.w.Peers[0].Name != "ada" {
		t.Fatalf("grace's welcome peers = %+v, want ada from the other node", grace.w.Peers)
	}
	if m := ada.expectPresence("joined", grace.w.ID); m.Peer.Name != "grace" {
		t.Fatalf("ada saw %+v", m)
	}
	waitMembers(t, nodes[2], room, 2)
	linus := join(t, nodes[2], room, "linus")
	if len(linus.w.Peers) != 2 {
		t.Fatalf("linus's welcome peers = %+v, want two", linus.w.Peers)
	}
	ada.expectPresence("joined", linus.w.ID)
	grace.expectPresence("joined", linus.w.ID)

	t.Run("signal", func(t *testing.T) {
		ada.send(map[string]any{"type": "signal", "to": grace.w.ID, "payload": map[string]string{"sdp": "offer-1"}})
		m := grace.expect("signal")
		if m.From != ada.w.ID || string(m.Payload) != `{"sdp":"offer-1"}` {
			t.Fatalf("grace got %+v", m)
		}
		// Never to a peer of another room, whatever node holds it.
		other := join(t, nodes[1], "elsewhere", "eve")
		ada.send(map[string]any{"type": "signal", "to": other.w.ID, "payload": 1})
		if m := ada.expect("error"); m.Code != "unknown_peer" {
			t.Fatalf("ada got %+v, want unknown_peer", m)
		}
	})

	t.Run("chat order", func(t *testing.T) {
		const each = 15
		clients := []*client{ada, grace, linus}
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() {
				for i := range each {
					c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
					c.ws.WriteJSON(map[string]any{"type": "chat", "text": fmt.Sprintf("%s %d", c.name, i)})
				}
			})
		}
		seqs := make([][]int64, len(clients))
		texts := make([][]string, len(clients))
		for i, c := range clients {
			wg.Go(func() {
				for len(seqs[i]) < each*len(clients) {
					m, err := c.read()
					if err != nil {
						t.Errorf("%s: %v", c.name, err)
						return
					}
					if m.Type == "chat" {
						seqs[i] = append(seqs[i], m.Seq)
						texts[i] = append(texts[i], m.Text)
					}
				}
			})
		}
		wg.Wait()
		for i := range clients {
			if !slices.IsSorted(seqs[i]) || len(slices.Compact(slices.Clone(seqs[i]))) != len(seqs[i]) {
				t.Errorf("%s: seqs not increasing: %v", clients[i].name, seqs[i])
			}
			if !slices.Equal(texts[i], texts[0]) {
				t.Errorf("%s saw another order than %s:\n%v\n%v", clients[i].name, clients[0].name, texts[i], texts[0])
			}
		}
		// A joiner on any node gets the same history.
		late := join(t, nodes[2], room, "late")
		if n := len(late.w.History); n != each*3 {
			t.Fatalf("late's history has %d chats, want %d", n, each*3)
		}
		for i, h := range late.w.History {
			if h.Text != texts[0][i] {
				t.Fatalf("history[%d] = %q, want %q", i, h.Text, texts[0][i])
			}
		}
		late.send(map[string]any{"type": "leave"})
		for _, c := range clients {
			c.expectPresence("left", late.w.ID)
		}
	})

	t.Run("rename and leave", func(t *testing.T) {
		grace.send(map[string]any{"type": "rename", "name": "grace h."})
		for _, c := range []*client{ada, linus} {
			if m := c.expectPresence("renamed", grace.w.ID); m.Name != "grace h." {
				t.Fatalf("%s saw %+v", c.name, m)
			}
		}
		linus.send(map[string]any{"type": "leave"})
		for _, c := range []*client{ada, grace} {
			if m := c.expectPresence("left", linus.w.ID); m.Reason != "left" {
				t.Fatalf("%s saw %+v", c.name, m)
			}
		}
	})
}

// The room and room-count limits count the peers of every node.
func TestLimitsAcrossNodes(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(func(s *config.Signal) {
		s.MaxPeersPerRoom = 2
		s.MaxRooms = 2
	}), "a", "b", "c")

	join(t, nodes[0], "full", "ada")
	join(t, nodes[1], "full", "grace")
	waitMembers(t, nodes[2], "full", 2)
	if m := hello(t, nodes[2], "full", "linus"); m.Code != "room_full" || !m.Fatal {
		t.Fatalf("third peer on a third node got %+v, want room_full", m)
	}
	join(t, nodes[2], "second", "linus")
	waitMembers(t, nodes[0], "second", 1)
	if m := hello(t, nodes[0], "third", "eve"); m.Code != "too_many_rooms" {
		t.Fatalf("a third room got %+v, want too_many_rooms", m)
	}
}

func hello(t *testing.T, tn *testNode, room, name string) msg {
	t.Helper()
	c := dial(t, tn)
	c.name = name
	c.send(map[string]any{"type": "hello", "version": 1, "room": room, "name": name})
	m, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitMembers(t *testing.T, tn *testNode, room string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to see %d peers in %s", tn.name, n, room), 5*time.Second, func() bool {
		tn.node.mu.Lock()
		defer tn.node.mu.Unlock()
		return len(tn.node.v.rooms[room]) == n
	})
}

// A peer whose socket drops resumes on another node: same id, the signals
// sent to it meanwhile, the chat it missed; the room sees it come back.
func TestResumeOnAnotherNode(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(nil), "a", "b", "c")
	const room = "resume"
	ada := join(t, nodes[0], room, "ada")
	grace := join(t, nodes[1], room, "grace")
	ada.expectPresence("joined", grace.w.ID)
	ada.send(map[string]any{"type": "chat", "text": "before"})
	seen := ada.expect("chat").Seq
	grace.expect("chat")

	nodes[0].hub.DropSockets()
	grace.expectPresence("reconnecting", ada.w.ID)
	grace.send(map[string]any{"type": "signal", "to": ada.w.ID, "payload": "held"})
	grace.send(map[string]any{"type": "chat", "text": "missed"})
	grace.expect("chat")

	back := resume(t, nodes[2], room, ada, seen)
	if !back.w.Resumed || back.w.ID != ada.w.ID {
		t.Fatalf("welcome %+v, want ada resumed with id %s", back.w, ada.w.ID)
	}
	if len(back.w.Peers) != 1 || back.w.Peers[0].ID != grace.w.ID {
		t.Fatalf("resumed welcome peers %+v", back.w.Peers)
	}
	if len(back.w.History) != 1 || back.w.History[0].Text != "missed" {
		t.Fatalf("resumed history %+v, want only the missed chat", back.w.History)
	}
	if m := back.expect("signal"); string(m.Payload) != `"held"` || m.From != grace.w.ID {
		t.Fatalf("held signal: %+v", m)
	}
	grace.expectPresence("resumed", ada.w.ID)

	// The session lives on node c now: signals find it there, and node a
	// has let it go.
	grace.send(map[string]any{"type": "signal", "to": ada.w.ID, "payload": "after"})
	if m := back.expect("signal"); string(m.Payload) != `"after"` {
		t.Fatalf("after the move: %+v", m)
	}
	if h := health(t, nodes[0]); h.Peers != 0 {
		t.Fatalf("node a still holds %d peers", h.Peers)
	}
	// An old token cannot be resumed twice on a third node.
	if m := helloResume(t, nodes[1], room, ada); m.Code != "" && m.Type != "welcome" {
		// A second resume takes the session over again (as on one node).
		t.Logf("second resume: %+v", m)
	}
}

func helloResume(t *testing.T, tn *testNode, room string, old *client) msg {
	t.Helper()
	c := dial(t, tn)
	c.send(map[string]any{"type": "hello", "version": 1, "room": room, "name": old.name, "resume": old.w.Resume})
	m, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type healthz struct {
	Status  string `json:"status"`
	Peers   int    `json:"peers"`
	Cluster string `json:"cluster"`
}

func health(t *testing.T, tn *testNode) healthz {
	t.Helper()
	resp, err := http.Get(tn.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h healthz
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// A node dies mid-call: the room sees its peer reconnecting, the peer
// resumes on another node, and the call goes on.
func TestNodeDiesPeersResume(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(nil), "a", "b", "c")
	const room = "crash"
	ada := join(t, nodes[0], room, "ada")
	grace := join(t, nodes[1], room, "grace")
	ada.expectPresence("joined", grace.w.ID)

	nodes[0].crash()
	grace.expectPresence("reconnecting", ada.w.ID)
	back := resume(t, nodes[2], room, ada, 0)
	if !back.w.Resumed || back.w.ID != ada.w.ID {
		t.Fatalf("welcome %+v", back.w)
	}
	grace.expectPresence("resumed", ada.w.ID)
	back.send(map[string]any{"type": "signal", "to": grace.w.ID, "payload": "still here"})
	if m := grace.expect("signal"); m.From != ada.w.ID {
		t.Fatalf("grace got %+v", m)
	}
	grace.send(map[string]any{"type": "chat", "text": "welcome back"})
	if m := back.expect("chat"); m.Text != "welcome back" {
		t.Fatalf("ada got %+v", m)
	}
}

// A peer of a dead node that does not come back leaves after the window.
func TestDeadNodePeersLeaveAfterWindow(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(func(s *config.Signal) { s.ResumeWindow = time.Second }), "a", "b")
	ada := join(t, nodes[0], "gone", "ada")
	grace := join(t, nodes[1], "gone", "grace")
	ada.expectPresence("joined", grace.w.ID)
	nodes[0].crash()
	grace.expectPresence("reconnecting", ada.w.ID)
	if m := grace.expectPresence("left", ada.w.ID); m.Reason != "timeout" {
		t.Fatalf("grace saw %+v", m)
	}
}

// NATS goes away: each node keeps its own rooms going and says so; when
// NATS is back the nodes find each other's peers again.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(func(s *config.Signal) { s.ResumeWindow = 2 * time.Second }), "a", "b")
	const room = "outage"
	ada := join(t, nodes[0], room, "ada")
	grace := join(t, nodes[1], room, "grace")
	ada.expectPresence("joined", grace.w.ID)

	nats[0].Stop()
	waitFor(t, "healthz to report the outage", 5*time.Second, func() bool { return health(t, nodes[0]).Cluster == "disconnected" })
	// Past the window the far peer is gone from each side's view.
	ada.expectPresence("reconnecting", grace.w.ID)
	ada.expectPresence("left", grace.w.ID)
	grace.expectPresence("reconnecting", ada.w.ID)
	grace.expectPresence("left", ada.w.ID)
	// Node a still serves its room: a local joiner, signals and chat.
	bob := join(t, nodes[0], room, "bob")
	if len(bob.w.Peers) != 1 || bob.w.Peers[0].ID != ada.w.ID {
		t.Fatalf("bob's peers during the outage: %+v", bob.w.Peers)
	}
	ada.expectPresence("joined", bob.w.ID)
	bob.send(map[string]any{"type": "signal", "to": ada.w.ID, "payload": "local"})
	if m := ada.expect("signal"); m.From != bob.w.ID {
		t.Fatalf("ada got %+v", m)
	}
	bob.send(map[string]any{"type": "chat", "text": "offline chat"})
	if m := ada.expect("chat"); m.Text != "offline chat" {
		t.Fatalf("ada got %+v", m)
	}

	nats[0].Restart()
	grace.expectPresence("joined", ada.w.ID)
	ada.expectPresence("joined", grace.w.ID)
	waitFor(t, "healthz to report the cluster back", 10*time.Second, func() bool { return health(t, nodes[0]).Cluster == "ok" })
	grace.send(map[string]any{"type": "signal", "to": bob.w.ID, "payload": "across again"})
	if m := bob.expect("signal"); m.From != grace.w.ID {
		t.Fatalf("bob got %+v", m)
	}
	grace.send(map[string]any{"type": "chat", "text": "back"})
	for _, c := range []*client{ada, bob} {
		if m := c.expect("chat"); m.Text != "back" {
			t.Fatalf("%s got %+v", c.name, m)
		}
	}
}

// TURN allocations of one user on one node count against the quota on
// every node.
func TestTURNCountsAcrossNodes(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(nil), "a", "b")
	nodes[0].node.LocalAllocations("alice", 2)
	waitFor(t, "b to count alice's allocations on a", 5*time.Second, func() bool {
		return nodes[1].node.RemoteAllocations("alice") == 2
	})
	if n := nodes[0].node.RemoteAllocations("alice"); n != 0 {
		t.Fatalf("a counts %d remote allocations of its own user", n)
	}
	nodes[0].node.LocalAllocations("alice", 0)
	waitFor(t, "b to see them go", 5*time.Second, func() bool { return nodes[1].node.RemoteAllocations("alice") == 0 })
	nodes[0].node.LocalAllocations("bob", 1)
	waitFor(t, "b to count bob's", 5*time.Second, func() bool { return nodes[1].node.RemoteAllocations("bob") == 1 })
	nodes[0].crash()
	waitFor(t, "a dead node's allocations to stop counting", 5*time.Second, func() bool {
		return nodes[1].node.RemoteAllocations("bob") == 0
	})
}

// A NATS that wants a user and password: the right ones join the cluster,
// a wrong one leaves the node on its own, saying so.
func TestNATSCredentials(t *testing.T) {
	t.Parallel()
	nats := natstest.StartWith(t, 1, func(o *server.Options) { o.Username, o.Password = "callbox", "s3cret-password" })
	scfg := testSignal(nil)
	start := func(name, password string) *Node {
		n, err := New(config.Cluster{NATS: []string{nats[0].URL()}, Node: name, User: "callbox", Password: password, Replicas: 1, Heartbeat: testHeartbeat},
			Options{Signal: scfg})
		if err != nil {
			t.Fatal(err)
		}
		hub, err := signal.NewHub(scfg, signal.Options{Router: n})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(hub); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			hub.Shutdown(ctx)
			n.Close()
		})
		return n
	}
	good1, good2 := start("good1", "s3cret-password"), start("good2", "s3cret-password")
	bad := start("bad", "wrong")
	waitFor(t, "the two good nodes to see each other", 10*time.Second, func() bool {
		return good1.Alive() == 1 && good2.Alive() == 1 && good1.Status() == "ok"
	})
	if s := bad.Status(); s != "disconnected" {
		t.Fatalf("node with a wrong password: status %q", s)
	}
}

// A node with more peers than fit in one NATS message answers a state
// request in pages, and the asker gets them all.
func TestStateInPages(t *testing.T) {
	t.Parallel()
	nats := startNATS(t, 1)
	nodes := startCluster(t, nats, testSignal(nil), "a", "b")
	const peers = 2*statePage + 17
	a := nodes[0].node
	a.mu.Lock()
	for i := range peers {
		id := fmt.Sprintf("p%05d", i)
		a.v.put(&member{room: fmt.Sprintf("room-%d", i%300), id: id, name: "peer " + id, tok: tokenHash(id), node: a.name, gen: 1})
	}
	a.turnLocal["alice"] = 3
	a.mu.Unlock()
	st, err := nodes[1].node.requestState(a.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != peers || st.TURN["alice"] != 3 || st.Node != a.name {
		t.Fatalf("state of %d members, turn %v; want %d and alice 3", len(st.Members), st.TURN, peers)
	}
}
