package cluster

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/callbox/callbox/signal"
)

// Subjects (docs/cluster.md). NODE is a node name, ROOM a room name: both
// are restricted to A-Z a-z 0-9 - _ (config.Cluster.Node, signal.ValidRoom),
// so neither can hold a subject's dot or wildcard.
const (
	subjEvents = "callbox.ev."    // + NODE: one node's changes and heartbeats, in its order
	subjSignal = "callbox.sig."   // + NODE: signal frames for that node's peers
	subjClaim  = "callbox.claim." // + NODE: request: give up a peer that resumes elsewhere
	subjState  = "callbox.state." // + NODE: request: the node's whole state
	subjChat   = "callbox.chat."  // + ROOM: the chat stream's subjects
	chatStream = "CALLBOX_CHAT"

	hdrRoom = "Callbox-Room"
	hdrTo   = "Callbox-To"
)

// Event types on subjEvents besides signal's presence types.
const (
	evAlive = "alive" // heartbeat
	evBye   = "bye"   // the node is shutting down: its peers may resume elsewhere at once
	evMoved = "moved" // a peer of this node resumed on node To
	evTURN  = "turn"  // this node's TURN allocations of User are now N
)

// wireEvent is one message on callbox.ev.NODE. Ver numbers a node's
// messages from 1 per boot (heartbeats carry the last Ver without taking
// one), so a receiver sees a gap and fetches the node's state.
type wireEvent struct {
	Node   string `json:"node"`
	Boot   string `json:"boot"`
	Ver    uint64 `json:"ver"`
	Type   string `json:"type"`
	Room   string `json:"room,omitempty"`
	ID     string `json:"id,omitempty"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
	Tok    string `json:"tok,omitempty"` // tokenHash of the resume token
	Gen    uint64 `json:"gen,omitempty"` // ownership generation: +1 each time the peer moves
	Rec    bool   `json:"rec,omitempty"` // reconnecting
	To     string `json:"to,omitempty"`
	User   string `json:"user,omitempty"`
	N      int    `json:"n,omitempty"`
}

// wireMember is a peer in a state reply.
type wireMember struct {
	Room string `json:"room"`
	ID   string `json:"id"`
	Name string `json:"name"`
	Tok  string `json:"tok"`
	Gen  uint64 `json:"gen"`
	Rec  bool   `json:"rec,omitempty"`
}

// wireState answers callbox.state.NODE: everything the node holds, as of
// Ver, in pages of at most statePage members (NATS's default max_payload
// is 1 MB; a node of 10,000 peers needs several), numbered from 0, the
// last one with Last and the TURN counts.
type wireState struct {
	Node    string         `json:"node"`
	Boot    string         `json:"boot"`
	Ver     uint64         `json:"ver"`
	Page    int            `json:"page"`
	Last    bool           `json:"last"`
	Members []wireMember   `json:"members"`
	TURN    map[string]int `json:"turn,omitempty"`
}

// statePage members are about 150 KB of JSON.
const statePage = 1000

// wireClaim asks the owner of a peer to give it up to node By.
type wireClaim struct {
	Room string `json:"room"`
	ID   string `json:"id"`
	Tok  string `json:"tok"`
	By   string `json:"by"`
	Gen  uint64 `json:"gen"`
}

type wireClaimReply struct {
	OK      bool     `json:"ok"`
	Pending [][]byte `json:"pending,omitempty"`
}

// wireChat is a message of the chat stream; its seq is the stream sequence.
type wireChat struct {
	From string `json:"from"`
	Name string `json:"name"`
	Time int64  `json:"time"`
	Text string `json:"text"`
}

// Bounds on what comes from NATS, as on what comes from browsers: NATS is
// inside the trust boundary, but a bug or a foreign publisher on the
// account must not be able to grow a node's memory or crash it.
const (
	maxIDLen    = 64
	maxNameLen  = 256 // bytes; signal allows 64 characters
	maxTextLen  = 4 * 4000
	maxTokLen   = 64
	maxMembers  = 1 << 20
	maxPending  = 64
	maxFrameLen = 1 << 20
)

var errWire = errors.New("cluster: malformed message")

// validName checks node, room, peer and user ids: the characters subjects
// and the protocol allow.
func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.@", c) >= 0) {
			return false
		}
	}
	return true
}

// parseEvent decodes and checks one callbox.ev message.
func parseEvent(data []byte) (wireEvent, error) {
	var ev wireEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return ev, fmt.Errorf("%w: %v", errWire, err)
	}
	if !validName(ev.Node, 64) || ev.Boot == "" || len(ev.Boot) > 64 {
		return ev, fmt.Errorf("%w: node or boot", errWire)
	}
	switch ev.Type {
	case evAlive, evBye:
		return ev, nil
	case evTURN:
		if !validName(ev.User, maxIDLen) || ev.N < 0 {
			return ev, fmt.Errorf("%w: turn user", errWire)
		}
		return ev, nil
	case "joined", "left", "renamed", "reconnecting", "resumed", evMoved:
	default:
		return ev, fmt.Errorf("%w: type %.32q", errWire, ev.Type)
	}
	if signal.ValidRoom(ev.Room) != nil || !validName(ev.ID, maxIDLen) || len(ev.Name) > maxNameLen ||
		len(ev.Tok) > maxTokLen || len(ev.Reason) > 64 {
		return ev, fmt.Errorf("%w: %s fields", errWire, ev.Type)
	}
	if ev.Type == evMoved && !validName(ev.To, 64) {
		return ev, fmt.Errorf("%w: moved without to", errWire)
	}
	return ev, nil
}

// parseState decodes and checks a state reply.
func parseState(data []byte) (wireState, error) {
	var st wireState
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%w: %v", errWire, err)
	}
	if !validName(st.Node, 64) || st.Boot == "" || len(st.Members) > statePage || st.Page < 0 {
		return st, fmt.Errorf("%w: state header", errWire)
	}
	for _, m := range st.Members {
		if signal.ValidRoom(m.Room) != nil || !validName(m.ID, maxIDLen) || len(m.Name) > maxNameLen || len(m.Tok) > maxTokLen {
			return st, fmt.Errorf("%w: state member", errWire)
		}
	}
	for u, n := range st.TURN {
		if !validName(u, maxIDLen) || n < 0 {
			return st, fmt.Errorf("%w: state turn", errWire)
		}
	}
	return st, nil
}

func parseClaim(data []byte) (wireClaim, error) {
	var c wireClaim
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%w: %v", errWire, err)
	}
	if signal.ValidRoom(c.Room) != nil || !validName(c.ID, maxIDLen) || !validName(c.By, 64) || c.Tok == "" || len(c.Tok) > maxTokLen {
		return c, fmt.Errorf("%w: claim", errWire)
	}
	return c, nil
}

func parseClaimReply(data []byte) (wireClaimReply, error) {
	var r wireClaimReply
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%w: %v", errWire, err)
	}
	if len(r.Pending) > maxPending {
		return r, fmt.Errorf("%w: %d pending", errWire, len(r.Pending))
	}
	for _, p := range r.Pending {
		if !validFrame(p) {
			return r, fmt.Errorf("%w: pending frame", errWire)
		}
	}
	return r, nil
}

// parseChat decodes a chat of the stream; room is the subject's last token.
func parseChat(subject string, data []byte) (room string, c wireChat, err error) {
	room, ok := strings.CutPrefix(subject, subjChat)
	if !ok || signal.ValidRoom(room) != nil {
		return "", c, fmt.Errorf("%w: chat subject %.80q", errWire, subject)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return "", c, fmt.Errorf("%w: %v", errWire, err)
	}
	if !validName(c.From, maxIDLen) || len(c.Name) > maxNameLen || c.Text == "" || len(c.Text) > maxTextLen {
		return "", c, fmt.Errorf("%w: chat fields", errWire)
	}
	return room, c, nil
}

// validFrame is a cheap check that a frame handed straight to a browser is
// what the hub encodes for a signal: a JSON object of type signal.
func validFrame(b []byte) bool {
	return len(b) <= maxFrameLen && len(b) > 0 && strings.HasPrefix(string(b), `{"type":"signal"`) && json.Valid(b)
}

// tokenHash is what the cluster knows of a resume token: enough to find
// the session, useless to resume it (the claimer must hold the token).
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte("callbox-resume\n" + token))
	return base64.RawURLEncoding.EncodeToString(sum[:18])
}
