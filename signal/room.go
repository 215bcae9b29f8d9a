package signal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"
)

// room is created by its first join and removed from the hub with its last
// peer. Lock order: Hub.mu before room.mu.
type room struct {
	name string // static after construction

	mu sync.Mutex
	// guarded by mu
	peers   map[string]*peer
	seq     int64     // last chat seq
	history []chatMsg // ring of the last cfg.History chats, oldest at head
	head    int
}

// peer is a member of a room; it outlives its socket for the resume window.
type peer struct {
	// static after construction
	id    string
	token string // resume token
	room  *room

	// guarded by room.mu
	name    string
	conn    *client  // nil while reconnecting
	pending [][]byte // signals held while reconnecting

	// iceRefresh is when the sweeper pushes fresh ICE servers (Unix ns; 0: never).
	iceRefresh atomic.Int64
}

// info lists the room's peers but except, then those other hubs hold.
func (r *room) info(except *peer, remote []Member) []peerInfo {
	out := make([]peerInfo, 0, len(r.peers)+len(remote))
	for _, p := range r.peers {
		if p != except {
			out = append(out, peerInfo{ID: p.id, Name: p.name, Reconnecting: p.conn == nil})
		}
	}
	for _, m := range remote {
		out = append(out, peerInfo{ID: m.ID, Name: m.Name, Reconnecting: m.Reconnecting})
	}
	return out
}

// broadcast queues b for every connected peer but except. Caller holds r.mu.
func (r *room) broadcast(b []byte, except *peer) {
	for _, p := range r.peers {
		if p != except && p.conn != nil {
			p.conn.send(b)
		}
	}
}

func (r *room) addChat(m chatMsg, max int) {
	if len(r.history) > max || (r.head != 0 && len(r.history) < max) {
		// [signal] history changed under a full ring (SetConfig): lay the
		// ring out oldest first, keep the newest max, and go on from there.
		h := r.chatsAfter(-1)
		r.history, r.head = h[len(h)-min(len(h), max):], 0
	}
	if max == 0 {
		return
	}
	if len(r.history) < max {
		r.history = append(r.history, m)
		return
	}
	r.history[r.head] = m
	r.head = (r.head + 1) % max
}

// chatsAfter returns the kept chats with seq > after, oldest first.
func (r *room) chatsAfter(after int64) []chatMsg {
	out := make([]chatMsg, 0, len(r.history))
	for i := range r.history {
		m := r.history[(r.head+i)%len(r.history)]
		if m.Seq > after {
			out = append(out, m)
		}
	}
	return out
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hello admits a socket into a room, as a new peer or as a resumed one.
func (h *Hub) hello(c *client, m *inMsg) error {
	if m.Version == nil || *m.Version != ProtocolVersion {
		return protoErr(CodeBadVersion, true, "this server speaks protocol version %d", ProtocolVersion)
	}
	if err := ValidRoom(m.Room); err != nil {
		return err
	}
	name, err := cleanName(m.Name, true)
	if err != nil {
		return err
	}
	if m.Resume != "" {
		return h.resume(c, m)
	}
	if err := checkAccess(h.conf(), m, time.Now()); err != nil {
		return err
	}
	// Credentials are minted after the access check and outside the locks;
	// they are handed out only if the join below succeeds.
	id := "p" + randomID(6)
	servers, expires := h.iceFor(id)
	// The cluster's limits, and the room's chat made ready, before the locks.
	if err := h.router.Join(m.Room, h.conf().MaxPeersPerRoom, h.conf().MaxRooms); err != nil {
		return err
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return protoErr(CodeTooManyRooms, true, "the server is shutting down")
	}
	for h.peers[id] != nil { // 48 random bits: practically never
		id = "p" + randomID(6)
		servers, expires = h.iceFor(id)
	}
	r := h.rooms[m.Room]
	if r == nil {
		if len(h.rooms) >= h.conf().MaxRooms {
			return protoErr(CodeTooManyRooms, true, "the server has %d rooms, its limit", h.conf().MaxRooms)
		}
		r = h.newRoomLocked(m.Room)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.peers) >= h.conf().MaxPeersPerRoom {
		return protoErr(CodeRoomFull, true, "room %s is full (%d peers)", r.name, h.conf().MaxPeersPerRoom)
	}
	p := &peer{id: id, token: h.newToken(r.name, id), room: r, name: name, conn: c}
	p.iceRefresh.Store(refreshAt(time.Now(), expires))
	r.peers[id] = p
	h.peers[id] = p
	h.resumes[p.token] = p
	c.peer = p
	c.send(encode(h.welcome(p, false, servers, expires, 0)))
	r.broadcast(encode(joinedMsg{Type: "joined", Peer: peerInfo{ID: id, Name: name}}), p)
	h.router.Publish(Event{Type: "joined", Room: r.name, ID: id, Name: name, Token: p.token})
	h.gaugesLocked()
	h.log.Debug("peer joined", "peer", id, "room", r.name, "ip", c.ip)
	return nil
}

// resume attaches a socket to the peer of a resume token: same id, same
// room. A peer still attached to an older socket is taken over (the old
// socket is often a dead one the server has not noticed yet).
func (h *Hub) resume(c *client, m *inMsg) error {
	failed := protoErr(CodeResumeFailed, true, "nothing to resume: the session ended or the window passed; join again")
	h.mu.Lock()
	p := h.resumes[m.Resume]
	h.mu.Unlock()
	if p == nil {
		return h.resumeClaimed(c, m, failed)
	}
	if p.room.name != m.Room {
		return failed
	}
	servers, expires := h.iceFor(p.id)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.resumes[m.Resume] != p || h.closing {
		return failed
	}
	r := p.room
	r.mu.Lock()
	defer r.mu.Unlock()
	old := p.conn
	p.conn = c
	c.peer = p
	delete(h.reconnecting, p)
	p.iceRefresh.Store(refreshAt(time.Now(), expires))
	c.send(encode(h.welcome(p, true, servers, expires, m.LastSeq)))
	for _, b := range p.pending {
		c.send(b)
	}
	p.pending = nil
	if old != nil {
		old.abort(reasonReplaced)
	} else {
		r.broadcast(encode(presenceMsg{Type: "resumed", ID: p.id}), p)
		h.router.Publish(Event{Type: "resumed", Room: r.name, ID: p.id})
	}
	h.metrics.resumes.Inc()
	h.log.Debug("peer resumed", "peer", p.id, "room", r.name, "ip", c.ip)
	return nil
}

// newRoomLocked adds an empty room to the hub, with the chat the router
// already holds for it. Caller holds h.mu.
func (h *Hub) newRoomLocked(name string) *room {
	r := &room{name: name, peers: make(map[string]*peer)}
	for _, c := range h.router.History(name) {
		r.seq = max(r.seq, c.Seq)
		r.addChat(c.msg(), h.conf().History)
	}
	h.rooms[name] = r
	return r
}

// resumeClaimed resumes a session another hub holds: that hub gives the
// peer up (or is gone) and this one takes it with the same id and token.
func (h *Hub) resumeClaimed(c *client, m *inMsg, failed error) error {
	cl, ok := h.router.Claim(m.Room, m.Resume)
	if !ok {
		cl, ok = h.restartClaim(m.Room, m.Resume)
	}
	if !ok {
		return failed
	}
	if cl.Name == "" {
		cl.Name = m.Name // a restart lost it; the hello carries it
	}
	servers, expires := h.iceFor(cl.ID)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.peers[cl.ID] != nil {
		return failed // a second resume of the same session won the race
	}
	if h.closing {
		// The cluster now says this hub holds the peer: say it left, or
		// it would stay in the room everywhere.
		h.router.Publish(Event{Type: "left", Room: m.Room, ID: cl.ID, Reason: "left"})
		return failed
	}
	r := h.rooms[m.Room]
	if r == nil {
		r = h.newRoomLocked(m.Room)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &peer{id: cl.ID, token: m.Resume, room: r, name: cl.Name, conn: c}
	p.iceRefresh.Store(refreshAt(time.Now(), expires))
	r.peers[p.id] = p
	h.peers[p.id] = p
	h.resumes[p.token] = p
	c.peer = p
	c.send(encode(h.welcome(p, true, servers, expires, m.LastSeq)))
	for _, b := range cl.Pending {
		c.send(b)
	}
	if cl.Reconnecting {
		r.broadcast(encode(presenceMsg{Type: "resumed", ID: p.id}), p)
	}
	h.metrics.resumes.Inc()
	h.gaugesLocked()
	h.log.Debug("peer resumed from another node", "peer", p.id, "room", r.name, "ip", c.ip)
	return nil
}

// welcome builds the welcome of p. Caller holds p.room.mu.
func (h *Hub) welcome(p *peer, resumed bool, servers []ICEServer, expires time.Time, lastSeq int64) welcomeMsg {
	r := p.room
	after := int64(0)
	if resumed {
		after = lastSeq
	}
	return welcomeMsg{
		Type: "welcome", ID: p.id, Room: r.name, Name: p.name,
		Resume: p.token, ResumeWindow: h.conf().ResumeWindow.Milliseconds(), Resumed: resumed,
		Peers: r.info(p, h.router.Peers(r.name)), ICEServers: servers, ICEExpires: unixMilli(expires),
		History: r.chatsAfter(after),
	}
}

// relay delivers a signal to one peer of the sender's room, or holds it
// for a reconnecting one.
func (h *Hub) relay(c *client, m *inMsg) {
	p := c.peer
	// The frame is built in a pooled buffer: sendDirect copies it only
	// when it cannot go out at once; what is held or forwarded is copied.
	bp := frameBufs.Get().(*[]byte)
	b := appendSignal((*bp)[:0], p.id, m.Payload)
	defer func() {
		if cap(b) <= 64<<10 {
			*bp = b[:0]
			frameBufs.Put(bp)
		}
	}()
	r := p.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.conn != c {
		return // replaced or removed: this socket is on its way out
	}
	t := r.peers[m.To]
	switch {
	case t == nil && h.router.Signal(r.name, m.To, bytes.Clone(b)): // held by another hub
	case t == nil || t == p:
		c.fail(protoErr(CodeUnknownPeer, false, "no peer %.64q in room %s", m.To, r.name))
	case t.conn != nil:
		t.conn.sendDirect(b)
		c.dwell.relayed()
	case len(t.pending) < maxPending:
		t.pending = append(t.pending, bytes.Clone(b))
	default:
		c.fail(protoErr(CodeUnknownPeer, false, "peer %s is reconnecting and has %d messages waiting", t.id, maxPending))
	}
}

// chat stamps and broadcasts under the room lock: the lock is what makes
// the seq order the delivery order for everybody.
func (h *Hub) chat(c *client, m *inMsg) {
	if err := checkChat(m.Text); err != nil {
		c.fail(err.(*ProtocolError))
		return
	}
	p := c.peer
	r := p.room
	r.mu.Lock()
	if p.conn != c {
		r.mu.Unlock()
		return
	}
	name := p.name
	r.mu.Unlock()
	if h.router.Chat(r.name, Chat{From: p.id, Name: name, Time: time.Now().UnixMilli(), Text: m.Text}) {
		return // stamped by the cluster; it comes back through DeliverChat
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.conn != c {
		return
	}
	r.seq++
	msg := chatMsg{Type: "chat", Seq: r.seq, From: p.id, Name: p.name, Time: time.Now().UnixMilli(), Text: m.Text}
	r.addChat(msg, h.conf().History)
	r.broadcast(encode(msg), nil)
}

func (h *Hub) rename(c *client, m *inMsg) {
	name, err := cleanName(m.Name, false)
	if err != nil {
		c.fail(err.(*ProtocolError))
		return
	}
	p := c.peer
	r := p.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.conn != c {
		return
	}
	p.name = name
	r.broadcast(encode(presenceMsg{Type: "renamed", ID: p.id, Name: name}), p)
	h.router.Publish(Event{Type: "renamed", Room: r.name, ID: p.id, Name: name})
}

// leave removes the peer at once and closes the socket with 1000.
func (h *Hub) leave(c *client) {
	p := c.peer
	h.mu.Lock()
	r := p.room
	r.mu.Lock()
	if p.conn == c {
		h.removeLocked(p, "left")
	}
	c.peer = nil
	r.mu.Unlock()
	h.mu.Unlock()
	c.closeWith(reasonLeft, 1000, "left")
}

// disconnect is the end of a socket: the hub forgets it, and its peer
// waits for a resume or leaves.
func (h *Hub) disconnect(c *client, reason string) {
	h.metrics.disconnect(reason)
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
	if h.perIP[c.ip]--; h.perIP[c.ip] <= 0 {
		delete(h.perIP, c.ip)
	}
	if p := c.peer; p != nil {
		r := p.room
		r.mu.Lock()
		if p.conn == c {
			switch {
			case h.closing:
				// The whole hub goes away; nobody is left to tell.
			case resumable(reason) && h.conf().ResumeWindow > 0:
				p.conn = nil
				h.reconnecting[p] = time.Now().Add(h.conf().ResumeWindow)
				r.broadcast(encode(presenceMsg{Type: "reconnecting", ID: p.id}), p)
				h.router.Publish(Event{Type: "reconnecting", Room: r.name, ID: p.id})
			case resumable(reason):
				h.removeLocked(p, "timeout")
			default:
				h.removeLocked(p, "kicked")
			}
		}
		r.mu.Unlock()
	}
	h.gaugesLocked()
	h.log.Debug("socket closed", "reason", reason, "ip", c.ip)
}

// removeLocked takes p out of its room and the hub and tells the room.
// Caller holds h.mu and p.room.mu.
func (h *Hub) removeLocked(p *peer, reason string) {
	r := p.room
	delete(r.peers, p.id)
	delete(h.peers, p.id)
	delete(h.resumes, p.token)
	delete(h.reconnecting, p)
	p.conn = nil
	p.pending = nil
	r.broadcast(encode(presenceMsg{Type: "left", ID: p.id, Reason: reason}), nil)
	h.router.Publish(Event{Type: "left", Room: r.name, ID: p.id, Reason: reason})
	if len(r.peers) == 0 && h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	h.gaugesLocked()
}

// expire ends the peers whose resume window has passed. Caller holds h.mu.
func (h *Hub) expireLocked(now time.Time) {
	for p, deadline := range h.reconnecting {
		if now.Before(deadline) {
			continue
		}
		p.room.mu.Lock()
		h.removeLocked(p, "timeout")
		p.room.mu.Unlock()
	}
}

// refreshAt is when fresh ICE servers are due: at four fifths of the
// credentials' lifetime.
func refreshAt(now, expires time.Time) int64 {
	if expires.IsZero() {
		return 0
	}
	life := expires.Sub(now)
	if life < time.Second {
		life = time.Second // do not spin on credentials that are (nearly) expired
	}
	return now.Add(life * 4 / 5).UnixNano()
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
