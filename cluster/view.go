package cluster

import (
	"time"

	"github.com/callbox/callbox/signal"
)

// member is one peer of the cluster as this node sees it.
type member struct {
	room, id, name, tok string
	node                string // the node holding its socket (or its session)
	gen                 uint64 // +1 each time it moves to another node
	rec                 bool   // reconnecting
	// deadline, when set, is when the peer of a dead node is given up.
	deadline time.Time
}

// nodeState is what this node knows of another.
type nodeState struct {
	boot     string
	ver      uint64 // last message applied in order
	synced   bool   // ver is trustworthy: no gap since the last state
	fetching bool
	lastSeen time.Time
	dead     bool
	turn     map[string]int // TURN allocations per user
	// buf holds the events applied while not synced, to apply again
	// over a state that is older than some of them.
	buf []wireEvent
}

// maxBuf bounds nodeState.buf; past it the next state request repairs.
const maxBuf = 4096

// view is the cluster's membership: every peer of every node, this one's
// included. Its lock is a leaf: nothing is called while it is held but
// nats.Conn.Publish, which only buffers.
type view struct {
	self    string
	members map[string]*member            // by id
	rooms   map[string]map[string]*member // by room, then id
	byTok   map[string]*member
	nodes   map[string]*nodeState
}

func newView(self string) *view {
	return &view{
		self:    self,
		members: make(map[string]*member),
		rooms:   make(map[string]map[string]*member),
		byTok:   make(map[string]*member),
		nodes:   make(map[string]*nodeState),
	}
}

func (v *view) put(m *member) {
	if old := v.members[m.id]; old != nil {
		v.remove(old)
	}
	v.members[m.id] = m
	r := v.rooms[m.room]
	if r == nil {
		r = make(map[string]*member)
		v.rooms[m.room] = r
	}
	r[m.id] = m
	if m.tok != "" {
		v.byTok[m.tok] = m
	}
}

func (v *view) remove(m *member) {
	if v.members[m.id] != m {
		return
	}
	delete(v.members, m.id)
	if r := v.rooms[m.room]; r != nil {
		delete(r, m.id)
		if len(r) == 0 {
			delete(v.rooms, m.room)
		}
	}
	if v.byTok[m.tok] == m {
		delete(v.byTok, m.tok)
	}
}

// notes collects what the hub must be told; it is told after the view's
// lock is released, in order.
type notes []signal.Event

func (n *notes) add(typ string, m *member, reason string) {
	ev := signal.Event{Type: typ, Room: m.room, ID: m.id, Reason: reason, Reconnecting: m.rec}
	if typ == "joined" || typ == "renamed" {
		ev.Name = m.name
	}
	*n = append(*n, ev)
}

// noteRelease is a note that is not presence: the hub must drop its peer.
const noteRelease = "release"

// upsert applies "this peer is held by node, with these fields" from an
// event or a state reply, unless the view knows a newer owner.
func (v *view) upsert(node string, wm wireMember, out *notes) {
	m := v.members[wm.ID]
	if m == nil {
		m = &member{room: wm.Room, id: wm.ID, name: wm.Name, tok: wm.Tok, node: node, gen: wm.Gen, rec: wm.Rec}
		v.put(m)
		out.add("joined", m, "")
		return
	}
	if m.node != node && m.gen > wm.Gen {
		return // it moved on since
	}
	if m.node == v.self && node != v.self {
		// Taken over by a claim this node did not answer in time: the
		// hub must let its copy go.
		*out = append(*out, signal.Event{Type: noteRelease, Room: m.room, ID: m.id})
	}
	if m.room != wm.Room { // ids are random: a new peer, not a move
		out.add("left", m, "left")
		v.remove(m)
		v.upsert(node, wm, out)
		return
	}
	m.node, m.gen, m.deadline = node, max(m.gen, wm.Gen), time.Time{}
	if wm.Tok != "" && wm.Tok != m.tok {
		if v.byTok[m.tok] == m {
			delete(v.byTok, m.tok)
		}
		m.tok = wm.Tok
		v.byTok[m.tok] = m
	}
	if wm.Name != "" && wm.Name != m.name {
		m.name = wm.Name
		out.add("renamed", m, "")
	}
	if wm.Rec != m.rec {
		m.rec = wm.Rec
		if m.rec {
			out.add("reconnecting", m, "")
		} else {
			out.add("resumed", m, "")
		}
	}
}

// apply is one event of another node, in that node's order.
func (v *view) apply(ev wireEvent, out *notes) {
	m := v.members[ev.ID]
	owned := m != nil && m.node == ev.Node
	switch ev.Type {
	case "joined":
		v.upsert(ev.Node, wireMember{Room: ev.Room, ID: ev.ID, Name: ev.Name, Tok: ev.Tok, Gen: ev.Gen, Rec: ev.Rec}, out)
	case "resumed":
		// A resume on the node that held it, or a claim from another node.
		if m == nil || ev.Gen >= m.gen {
			v.upsert(ev.Node, wireMember{Room: ev.Room, ID: ev.ID, Name: ev.Name, Tok: ev.Tok, Gen: ev.Gen}, out)
		}
	case "left":
		if owned {
			v.remove(m)
			out.add("left", m, ev.Reason)
		}
	case "renamed":
		if owned && m.name != ev.Name {
			m.name = ev.Name
			out.add("renamed", m, "")
		}
	case "reconnecting":
		if owned && !m.rec {
			m.rec = true
			out.add("reconnecting", m, "")
		}
	case evMoved:
		if owned && ev.Gen > m.gen {
			m.node, m.gen = ev.To, ev.Gen
		}
	}
}

// replace makes node's peers those of its state reply.
func (v *view) replace(st wireState, out *notes) {
	seen := make(map[string]bool, len(st.Members))
	for _, wm := range st.Members {
		seen[wm.ID] = true
		v.upsert(st.Node, wm, out)
	}
	for _, m := range v.members {
		if m.node == st.Node && !seen[m.id] {
			v.remove(m)
			out.add("left", m, "left")
		}
	}
}

// died marks node's peers reconnecting until window has passed.
func (v *view) died(node string, now time.Time, window time.Duration, out *notes) {
	for _, m := range v.members {
		if m.node != node {
			continue
		}
		m.deadline = now.Add(window)
		if !m.rec {
			m.rec = true
			out.add("reconnecting", m, "")
		}
	}
}

// expire gives up the peers of dead nodes whose window has passed.
func (v *view) expire(now time.Time, out *notes) {
	for _, m := range v.members {
		if !m.deadline.IsZero() && !now.Before(m.deadline) {
			v.remove(m)
			out.add("left", m, "timeout")
		}
	}
}

// state is this node's own part of the view.
func (v *view) state(boot string, ver uint64, turn map[string]int) wireState {
	st := wireState{Node: v.self, Boot: boot, Ver: ver, Members: []wireMember{}, TURN: turn}
	for _, m := range v.members {
		if m.node == v.self {
			st.Members = append(st.Members, wireMember{Room: m.room, ID: m.id, Name: m.name, Tok: m.tok, Gen: m.gen, Rec: m.rec})
		}
	}
	return st
}
