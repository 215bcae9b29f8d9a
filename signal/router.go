package signal

import "errors"

// The hub holds what this process owns: the sockets and the peers attached
// to them, their rooms, resume tokens and pending signals. A Router carries
// what the hub's rooms share with other hubs: presence, signals to peers held
// elsewhere, one chat order per room, cluster-wide limits, and sessions that
// move between hubs on resume. Options.Router nil is one process: every room
// is whole in this hub, and the router (localRouter) has nothing to add.
//
// Calls from the hub to its Router are made with the hub's locks held except
// where a method says otherwise, so they must not block on the network and
// must not call back into the hub; the hub's Inbound methods take the hub's
// locks and are for the router's own goroutines.
type Router interface {
	// Join admits a new peer of room against the cluster-wide limits,
	// before the hub takes its locks (it may do network I/O): an error is
	// a *ProtocolError (room_full, too_many_rooms) or ErrUnavailable.
	Join(room string, maxPeers, maxRooms int) error
	// Peers are the peers of room held by other hubs.
	Peers(room string) []Member
	// History is the room's recent chat as the router knows it, oldest
	// first; nil when the hub keeps it alone.
	History(room string) []Chat
	// Publish tells the other hubs of a change to one of this hub's peers.
	Publish(ev Event)
	// Signal forwards an encoded signal frame to peer `to` of room held by
	// another hub; false when no hub holds it.
	Signal(room, to string, frame []byte) bool
	// Chat stamps m with the room's next seq and delivers it to every hub,
	// this one included, through Inbound.DeliverChat, in one order; false
	// when the hub must stamp and deliver it itself (one process, or the
	// cluster is unreachable). Called without the hub's locks.
	Chat(room string, m Chat) bool
	// Claim takes over the session of a resume token held by another hub,
	// which gives up the peer and its pending signals. Called without the
	// hub's locks.
	Claim(room, token string) (Claimed, bool)
	// Status is "" for one process, else "ok" or why the cluster is not.
	Status() string
}

// Inbound is what a Router calls on the hub: *Hub implements it.
type Inbound interface {
	// RemoteEvent shows another hub's peer's presence to this hub's
	// peers of the room.
	RemoteEvent(ev Event)
	// DeliverSignal hands a signal frame to this hub's peer `to` of room,
	// or holds it while the peer reconnects; false when there is no such peer.
	DeliverSignal(room, to string, frame []byte) bool
	// DeliverChat broadcasts a stamped chat to this hub's peers of room.
	DeliverChat(room string, m Chat)
	// Release gives up a peer that resumed on another hub: its socket, if
	// any, is closed as replaced, and nobody is told it left.
	Release(room, id string) (pending [][]byte, ok bool)
}

// ErrUnavailable is a Router's answer when it cannot admit anyone now.
var ErrUnavailable = errors.New("signal: cluster unavailable")

// Event is a change to one peer, between hubs. Type is joined, left,
// renamed, reconnecting or resumed, as the presence messages of
// docs/protocol.md.
type Event struct {
	Type   string `json:"type"`
	Room   string `json:"room"`
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Token is the peer's resume token (joined); a Router must not send it
	// anywhere in clear.
	Token        string `json:"-"`
	Reconnecting bool   `json:"reconnecting,omitempty"`
}

// Member is a peer held by another hub, as a welcome lists it.
type Member struct {
	ID           string
	Name         string
	Reconnecting bool
}

// Chat is a chat message; Seq is zero until stamped.
type Chat struct {
	Seq  int64  `json:"seq"`
	From string `json:"from"`
	Name string `json:"name"`
	Time int64  `json:"time"` // Unix ms
	Text string `json:"text"`
}

// Claimed is a session taken over from another hub.
type Claimed struct {
	ID           string
	Name         string
	Reconnecting bool     // the others saw it reconnecting: they are told it resumed
	Pending      [][]byte // signal frames held for it
}

// localRouter is one process: the hub's rooms are whole.
type localRouter struct{}

func (localRouter) Join(string, int, int) error        { return nil }
func (localRouter) Peers(string) []Member              { return nil }
func (localRouter) History(string) []Chat              { return nil }
func (localRouter) Publish(Event)                      {}
func (localRouter) Signal(string, string, []byte) bool { return false }
func (localRouter) Chat(string, Chat) bool             { return false }
func (localRouter) Claim(string, string) (Claimed, bool) {
	return Claimed{}, false
}
func (localRouter) Status() string { return "" }

func (c Chat) msg() chatMsg {
	return chatMsg{Type: "chat", Seq: c.Seq, From: c.From, Name: c.Name, Time: c.Time, Text: c.Text}
}

func chatOf(m chatMsg) Chat {
	return Chat{Seq: m.Seq, From: m.From, Name: m.Name, Time: m.Time, Text: m.Text}
}

// RemoteEvent implements Inbound.
func (h *Hub) RemoteEvent(ev Event) {
	r := h.room(ev.Room)
	if r == nil {
		return
	}
	var b []byte
	switch ev.Type {
	case "joined":
		b = encode(joinedMsg{Type: "joined", Peer: peerInfo{ID: ev.ID, Name: ev.Name, Reconnecting: ev.Reconnecting}})
	case "left", "renamed", "reconnecting", "resumed":
		b = encode(presenceMsg{Type: ev.Type, ID: ev.ID, Name: ev.Name, Reason: ev.Reason})
	default:
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers[ev.ID] != nil {
		return // ours: the hub told its peers itself
	}
	r.broadcast(b, nil)
}

// DeliverSignal implements Inbound.
func (h *Hub) DeliverSignal(room, to string, frame []byte) bool {
	r := h.room(room)
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.peers[to]
	switch {
	case t == nil:
		return false
	case t.conn != nil:
		t.conn.send(frame)
	case len(t.pending) < maxPending:
		t.pending = append(t.pending, frame)
	}
	return true
}

// DeliverChat implements Inbound. A chat at or below the room's last seq
// is one the room has (the history a join copied from the router).
func (h *Hub) DeliverChat(room string, c Chat) {
	r := h.room(room)
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.Seq <= r.seq {
		return
	}
	r.seq = c.Seq
	m := c.msg()
	r.addChat(m, h.conf().History)
	r.broadcast(encode(m), nil)
}

// Release implements Inbound.
func (h *Hub) Release(room, id string) ([][]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[id]
	if p == nil || p.room.name != room {
		return nil, false
	}
	r := p.room
	r.mu.Lock()
	defer r.mu.Unlock()
	pending, old := p.pending, p.conn
	delete(r.peers, p.id)
	delete(h.peers, p.id)
	delete(h.resumes, p.token)
	delete(h.reconnecting, p)
	p.conn, p.pending = nil, nil
	if old != nil {
		old.abort(reasonReplaced)
	}
	if len(r.peers) == 0 && h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	h.gaugesLocked()
	return pending, true
}

func (h *Hub) room(name string) *room {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[name]
}
