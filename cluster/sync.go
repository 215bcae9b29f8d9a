package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// The repair of the view: other nodes' events applied in their order, gaps
// and restarts answered by a state request, dead nodes found by their
// missing heartbeats.

// loop is the one goroutine that applies other nodes' events and states
// and tells the hub, so the hub hears them in order.
func (n *Node) loop(ctx context.Context, evs chan *nats.Msg) {
	defer n.wg.Done()
	hb := n.cfg.Heartbeat
	t := time.NewTicker(hb)
	defer t.Stop()
	for {
		var out notes
		select {
		case <-ctx.Done():
			return
		case m := <-evs:
			n.onEvent(m.Data, &out)
		case f := <-n.fetched:
			n.onFetched(f, &out)
		case now := <-t.C:
			n.tick(now, &out)
		}
		n.tell(out)
	}
}

func (n *Node) tell(out notes) {
	for _, ev := range out {
		if ev.Type == noteRelease {
			n.hub.Release(ev.Room, ev.ID)
			continue
		}
		n.hub.RemoteEvent(ev)
	}
}

func (n *Node) onEvent(data []byte, out *notes) {
	ev, err := parseEvent(data)
	if err != nil {
		n.metrics.malformed.Inc()
		n.log.Debug("cluster: malformed event", "err", err)
		return
	}
	if ev.Node == n.name {
		if ev.Boot != n.boot && !n.twinLogged.Swap(true) {
			n.log.Error("cluster: another process uses this node name; give each node its own cluster.node", "other_boot", ev.Boot)
		}
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	ns := n.v.nodes[ev.Node]
	if ns == nil || ns.boot != ev.Boot {
		if ns != nil {
			n.log.Info("cluster: node restarted", "peer_node", ev.Node)
		}
		ns = &nodeState{boot: ev.Boot}
		n.v.nodes[ev.Node] = ns
	}
	ns.lastSeen = now
	if ns.dead && ev.Type != evBye {
		ns.dead, ns.synced = false, false
		n.log.Info("cluster: node is back", "peer_node", ev.Node)
	}
	switch ev.Type {
	case evAlive:
		// Heartbeats follow the node's events on one connection: a
		// different number means some went missing.
	case evBye:
		ns.dead, ns.synced, ns.turn = true, false, nil
		n.v.died(ev.Node, now, n.window, out)
		n.log.Info("cluster: node left the cluster", "peer_node", ev.Node)
		return
	default:
		switch {
		case ns.synced && ev.Ver <= ns.ver:
			return // in the state already
		case ns.synced && ev.Ver == ns.ver+1:
			ns.ver = ev.Ver
		default:
			ns.synced = false
			if len(ns.buf) < maxBuf {
				ns.buf = append(ns.buf, ev)
			}
		}
		n.applyLocked(ns, ev, out)
	}
	if !ns.synced || (ev.Type == evAlive && ev.Ver != ns.ver) {
		n.fetchLocked(ev.Node, ns)
	}
}

func (n *Node) applyLocked(ns *nodeState, ev wireEvent, out *notes) {
	if ev.Type == evTURN {
		if ns.turn == nil {
			ns.turn = make(map[string]int)
		}
		setCount(ns.turn, ev.User, ev.N)
		return
	}
	n.v.apply(ev, out)
}

func setCount(m map[string]int, user string, count int) {
	if count <= 0 {
		delete(m, user)
	} else {
		m[user] = count
	}
}

// fetchLocked asks node for its whole state, once at a time.
func (n *Node) fetchLocked(node string, ns *nodeState) {
	ns.synced = false
	if ns.fetching || n.closed {
		return
	}
	ns.fetching = true
	n.metrics.resyncs.Inc()
	boot := ns.boot
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		st, err := n.requestState(node)
		f := fetchResult{node: node, boot: boot, st: st, err: err}
		select {
		case n.fetched <- f:
		default:
			// The loop is gone (closing) or flooded: the next heartbeat asks again.
			n.mu.Lock()
			ns.fetching = false
			n.mu.Unlock()
		}
	}()
}

// requestState asks node for its state and collects its pages, in order,
// within requestTimeout.
func (n *Node) requestState(node string) (wireState, error) {
	inbox := n.nc.NewInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return wireState{}, err
	}
	defer sub.Unsubscribe()
	if err := n.nc.PublishRequest(subjState+node, inbox, nil); err != nil {
		return wireState{}, err
	}
	deadline := time.Now().Add(requestTimeout)
	var all wireState
	for page := 0; ; page++ {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return wireState{}, fmt.Errorf("cluster: state of %s, page %d: %w", node, page, err)
		}
		st, err := parseState(msg.Data)
		if err == nil && page > 0 && (st.Boot != all.Boot || st.Ver != all.Ver) {
			err = fmt.Errorf("%w: pages of two states", errWire)
		}
		if err == nil && (st.Page != page || len(all.Members)+len(st.Members) > maxMembers) {
			err = fmt.Errorf("%w: page %d of state", errWire, st.Page)
		}
		if err != nil {
			n.metrics.malformed.Inc()
			return wireState{}, err
		}
		if page == 0 {
			all = st
		} else {
			all.Members = append(all.Members, st.Members...)
		}
		if st.Last {
			all.TURN = st.TURN
			return all, nil
		}
	}
}

func (n *Node) onFetched(f fetchResult, out *notes) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ns := n.v.nodes[f.node]
	if ns == nil {
		return
	}
	ns.fetching = false
	if f.err != nil {
		n.log.Debug("cluster: state request failed", "peer_node", f.node, "err", f.err)
		return
	}
	st := f.st
	if st.Node != f.node {
		n.metrics.malformed.Inc()
		return
	}
	if st.Boot != ns.boot || ns.dead {
		return // a newer incarnation, or gone again: the next heartbeat tells
	}
	n.v.replace(st, out)
	ns.ver, ns.synced = st.Ver, true
	ns.turn = st.TURN
	// Events newer than the state, already seen, go again on top of it.
	buf := ns.buf
	ns.buf = nil
	for _, ev := range buf {
		switch {
		case ev.Ver <= ns.ver:
		case ev.Ver == ns.ver+1:
			ns.ver = ev.Ver
			n.applyLocked(ns, ev, out)
		default:
			ns.synced = false // still a gap: the next heartbeat asks again
			return
		}
	}
}

// tick finds dead nodes, gives up their peers past the window, and drops
// the chat copies of rooms this node no longer serves.
func (n *Node) tick(now time.Time, out *notes) {
	n.mu.Lock()
	alive := 0
	for node, ns := range n.v.nodes {
		if ns.dead {
			continue
		}
		if now.Sub(ns.lastSeen) > deadAfter*n.cfg.Heartbeat {
			ns.dead, ns.synced, ns.turn = true, false, nil
			n.v.died(node, now, n.window, out)
			n.log.Warn("cluster: node stopped answering; its peers may resume here", "peer_node", node)
			continue
		}
		alive++
	}
	n.v.expire(now, out)
	local := make(map[string]bool)
	for _, m := range n.v.members {
		if m.node == n.name {
			local[m.room] = true
		}
	}
	n.mu.Unlock()
	n.metrics.nodes.Set(float64(alive))
	n.chat.prune(local, now)
}
