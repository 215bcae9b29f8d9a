package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/callbox/callbox/signal"
)

var _ signal.Router = (*Node)(nil)

// Join implements signal.Router: the limits count every node's peers, as
// this node last heard of them. Two joins on two nodes at the same moment
// may each take the last place: the limits are exact to within the joins
// in flight (docs/cluster.md).
func (n *Node) Join(room string, maxPeers, maxRooms int) error {
	n.mu.Lock()
	peers := n.v.rooms[room]
	full := len(peers) >= maxPeers
	tooMany := peers == nil && len(n.v.rooms) >= maxRooms
	n.mu.Unlock()
	switch {
	case full:
		return &signal.ProtocolError{Code: signal.CodeRoomFull, Fatal: true,
			Reason: "room " + room + " is full (" + itoa(maxPeers) + " peers across the cluster)"}
	case tooMany:
		return &signal.ProtocolError{Code: signal.CodeTooManyRooms, Fatal: true,
			Reason: "the cluster has " + itoa(maxRooms) + " rooms, its limit"}
	}
	if n.chatUp() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		n.chat.ensure(ctx, n, room)
	}
	return nil
}

// chatUp: the chat stream can be used now. While NATS is away a join
// does not wait for a history load that would time out.
func (n *Node) chatUp() bool { return n.ready.Load() && n.nc != nil && n.nc.IsConnected() }

// Peers implements signal.Router.
func (n *Node) Peers(room string) []signal.Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []signal.Member
	for _, m := range n.v.rooms[room] {
		if m.node != n.name {
			out = append(out, signal.Member{ID: m.id, Name: m.name, Reconnecting: m.rec})
		}
	}
	return out
}

// History implements signal.Router.
func (n *Node) History(room string) []signal.Chat { return n.chat.history(room) }

// Publish implements signal.Router: the view takes the change at once (so
// limits and claims see it), and the others hear it in this node's order.
func (n *Node) Publish(ev signal.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	m := n.v.members[ev.ID]
	if ev.Type != "joined" && (m == nil || m.node != n.name) {
		return
	}
	empty := false
	switch ev.Type {
	case "joined":
		m = &member{room: ev.Room, id: ev.ID, name: ev.Name, tok: tokenHash(ev.Token), node: n.name, gen: 1, rec: ev.Reconnecting}
		n.v.put(m)
	case "left":
		n.v.remove(m)
		empty = n.v.rooms[ev.Room] == nil
	case "renamed":
		m.name = ev.Name
	case "reconnecting":
		m.rec = true
	case "resumed":
		m.rec = false
	default:
		return
	}
	n.publishLocked(wireEvent{Type: ev.Type, Room: m.room, ID: m.id, Name: m.name, Reason: ev.Reason, Tok: m.tok, Gen: m.gen, Rec: m.rec})
	if empty {
		n.purgeLocked(ev.Room)
	}
}

// Signal implements signal.Router.
func (n *Node) Signal(room, to string, frame []byte) bool {
	n.mu.Lock()
	m := n.v.members[to]
	ok := m != nil && m.room == room && m.node != n.name && n.nc != nil
	var node string
	if ok {
		node = m.node
	}
	n.mu.Unlock()
	if !ok {
		return false
	}
	n.sendSignal(node, room, to, frame, "")
	return true
}

func (n *Node) sendSignal(node, room, to string, frame []byte, hop string) {
	msg := nats.NewMsg(subjSignal + node)
	msg.Header.Set(hdrRoom, room)
	msg.Header.Set(hdrTo, to)
	if hop != "" {
		msg.Header.Set(hdrHop, hop)
	}
	msg.Data = frame
	if err := n.nc.PublishMsg(msg); err != nil {
		n.metrics.publishErrors.Inc()
		return
	}
	n.metrics.signals.WithLabelValues("out").Inc()
}

// hdrHop marks a signal forwarded once already: a peer that moved on
// while its signal was on the way gets it from the node it left, once.
const hdrHop = "Callbox-Hop"

func (n *Node) onSignal(msg *nats.Msg) {
	room, to := msg.Header.Get(hdrRoom), msg.Header.Get(hdrTo)
	if signal.ValidRoom(room) != nil || !validName(to, maxIDLen) || !validFrame(msg.Data) {
		n.metrics.malformed.Inc()
		return
	}
	n.metrics.signals.WithLabelValues("in").Inc()
	if n.hub.DeliverSignal(room, to, msg.Data) || msg.Header.Get(hdrHop) != "" {
		return
	}
	n.mu.Lock()
	m := n.v.members[to]
	var node string
	if m != nil && m.room == room && m.node != n.name {
		node = m.node
	}
	n.mu.Unlock()
	if node != "" {
		n.sendSignal(node, room, to, msg.Data, n.name)
	}
}

// Chat implements signal.Router: the stream stamps it; every node,
// this one included, hears it from its consumer in the stream's order.
func (n *Node) Chat(room string, c signal.Chat) bool {
	if !n.chatUp() {
		return false
	}
	b, _ := json.Marshal(wireChat{From: c.From, Name: c.Name, Time: c.Time, Text: c.Text})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := n.js.Publish(ctx, subjChat+room, b); err != nil {
		n.metrics.publishErrors.Inc()
		n.log.Warn("cluster: chat not stored; delivered on this node only", "room", room, "err", err)
		return false
	}
	return true
}

// Claim implements signal.Router.
func (n *Node) Claim(room, token string) (signal.Claimed, bool) {
	tok := tokenHash(token)
	n.mu.Lock()
	m := n.v.byTok[tok]
	if m == nil || m.room != room || m.node == n.name || n.closed || n.nc == nil {
		n.mu.Unlock()
		n.metrics.claims.WithLabelValues("unknown").Inc()
		return signal.Claimed{}, false
	}
	owner, gen, rec := m.node, m.gen, m.rec
	ownerDead := n.v.nodes[owner] == nil || n.v.nodes[owner].dead
	n.mu.Unlock()

	var pending [][]byte
	if !ownerDead {
		req, _ := json.Marshal(wireClaim{Room: room, ID: m.id, Tok: tok, By: n.name, Gen: gen + 1})
		msg, err := n.nc.Request(subjClaim+owner, req, requestTimeout)
		var reply wireClaimReply
		if err == nil {
			reply, err = parseClaimReply(msg.Data)
		}
		switch {
		case err == nil && !reply.OK:
			n.metrics.claims.WithLabelValues("refused").Inc()
			return signal.Claimed{}, false
		case err == nil:
			pending = reply.Pending
		default:
			// No answer: the owner is gone or cut off. Its peers are
			// the cluster's to resume, as after its heartbeats stop.
			n.log.Info("cluster: claim unanswered; taking the session", "peer_node", owner, "err", err)
			rec = true
		}
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	// The owner's "moved" may have come in first: it names this node.
	if n.v.members[m.id] != m || n.closed || !(m.gen == gen || m.node == n.name && m.gen == gen+1) {
		n.metrics.claims.WithLabelValues("raced").Inc()
		return signal.Claimed{}, false
	}
	m.node, m.gen, m.rec, m.deadline = n.name, gen+1, false, time.Time{}
	n.publishLocked(wireEvent{Type: "resumed", Room: m.room, ID: m.id, Name: m.name, Tok: m.tok, Gen: m.gen})
	n.metrics.claims.WithLabelValues("ok").Inc()
	claimed := signal.Claimed{ID: m.id, Name: m.name, Reconnecting: rec || ownerDead, Pending: pending}
	n.mu.Unlock()
	// The room's chat, for the history after the resumer's lastSeq.
	if n.chatUp() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		n.chat.ensure(ctx, n, room)
		cancel()
	}
	n.mu.Lock() // for the deferred unlock
	return claimed, true
}

// onClaim gives up one of this node's peers to the node resuming it.
func (n *Node) onClaim(msg *nats.Msg) {
	reply := wireClaimReply{}
	defer func() {
		b, _ := json.Marshal(reply)
		msg.Respond(b)
	}()
	c, err := parseClaim(msg.Data)
	if err != nil {
		n.metrics.malformed.Inc()
		return
	}
	n.mu.Lock()
	m := n.v.members[c.ID]
	ok := m != nil && m.node == n.name && m.tok == c.Tok && m.room == c.Room
	n.mu.Unlock()
	if !ok {
		return
	}
	pending, ok := n.hub.Release(c.Room, c.ID)
	if !ok {
		return
	}
	n.mu.Lock()
	if n.v.members[c.ID] == m {
		m.node, m.gen = c.By, max(m.gen+1, c.Gen)
		n.publishLocked(wireEvent{Type: evMoved, Room: m.room, ID: m.id, To: c.By, Gen: m.gen})
	}
	n.mu.Unlock()
	reply = wireClaimReply{OK: true, Pending: pending}
}

// onState answers a node that missed some of this node's events.
func (n *Node) onState(msg *nats.Msg) {
	n.mu.Lock()
	turn := make(map[string]int, len(n.turnLocal))
	for u, c := range n.turnLocal {
		turn[u] = c
	}
	st := n.v.state(n.boot, n.ver, turn)
	n.mu.Unlock()
	if msg.Reply == "" {
		return
	}
	members := st.Members
	for page := 0; ; page++ {
		p := st
		p.Page, p.Members = page, members[:min(len(members), statePage)]
		members = members[len(p.Members):]
		p.Last = len(members) == 0
		if !p.Last {
			p.TURN = nil
		}
		b, _ := json.Marshal(p)
		if err := n.nc.Publish(msg.Reply, b); err != nil {
			n.metrics.publishErrors.Inc()
			return
		}
		if p.Last {
			return
		}
	}
}

// Status implements signal.Router.
func (n *Node) Status() string {
	switch {
	case n.nc == nil || !n.nc.IsConnected():
		return "disconnected"
	case !n.ready.Load():
		return "chat_unavailable"
	}
	return "ok"
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// Alive is how many other nodes this node hears from and is in step with.
func (n *Node) Alive() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	alive := 0
	for _, ns := range n.v.nodes {
		if !ns.dead && ns.synced {
			alive++
		}
	}
	return alive
}
