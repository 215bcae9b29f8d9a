package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// protocol is what differs between the servers under test: the URL, the
// join handshake, the addressing of a signal message and the frames back.
type protocol interface {
	Name() string
	// URL is the WebSocket URL client i dials, given the server's http base.
	URL(base string, i int) string
	// Hello is the frame client i of room sends first, or nil when the URL
	// alone joins.
	Hello(i, room int) []byte
	// PresetID is client i's id when the client chooses it, or "" when the
	// server assigns it in its join answer.
	PresetID(i int) string
	// Signal is an ICE candidate for peer to, carrying stamp (the send time)
	// in its payload.
	Signal(to string, stamp time.Duration) ([]byte, error)
	// Heartbeat is the keepalive frame every client must send each
	// HeartbeatEvery, or nil when the server keeps the socket alive itself.
	Heartbeat() []byte
	HeartbeatEvery() time.Duration
	// Parse classifies a frame from the server.
	Parse(frame []byte) (inbound, error)
}

type inboundKind int

const (
	kindOther  inboundKind = iota // presence and the like: counted nowhere
	kindJoined                    // the join answer; id is set when the server assigns it
	kindSignal                    // a relayed message; stamp is set
	kindError                     // the server reports a problem; detail says which
)

type inbound struct {
	kind   inboundKind
	id     string
	stamp  time.Duration
	detail string
}

// benchPayload is the relayed payload: a real-sized ICE candidate, as
// browsers trickle them, plus the send time.
type benchPayload struct {
	// T is nanoseconds since the bench's epoch, read back by the receiving
	// goroutine of the same process: one monotonic clock, no skew.
	T         int64        `json:"t"`
	Candidate iceCandidate `json:"candidate"`
}

type iceCandidate struct {
	Candidate     string `json:"candidate"`
	SDPMid        string `json:"sdpMid"`
	SDPMLineIndex int    `json:"sdpMLineIndex"`
}

const benchCandidate = "candidate:842163049 1 udp 1677729535 192.0.2.10 61432 typ srflx raddr 10.0.0.5 rport 61432 generation 0 ufrag Xk9f network-cost 999"

func newPayload(stamp time.Duration) benchPayload {
	return benchPayload{
		T:         int64(stamp),
		Candidate: iceCandidate{Candidate: benchCandidate, SDPMid: "0"},
	}
}

// The load client costs as much CPU per message as the servers, on the same
// two cores, so its hot path avoids reflection: a signal frame is appended
// as bytes (the same bytes json.Marshal makes of it: TestSignalFrames), and
// a relayed one has its stamp read straight from the payload's start.

// payloadTail follows the stamp in every payload (benchPayload's JSON).
var payloadTail = `,"candidate":{"candidate":"` + benchCandidate + `","sdpMid":"0","sdpMLineIndex":0}}}`

// appendSignal is json.Marshal of {"type":typ, key:to, "payload":newPayload(stamp)}
// for an id that needs no escaping.
func appendSignal(typ, key, to string, stamp time.Duration) ([]byte, error) {
	if !plainID(to) {
		return nil, fmt.Errorf("peer id %q needs JSON escaping", to)
	}
	b := make([]byte, 0, 64+len(to)+len(payloadTail))
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = append(b, to...)
	b = append(b, `","payload":{"t":`...)
	b = strconv.AppendInt(b, int64(stamp), 10)
	return append(b, payloadTail...), nil
}

func plainID(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// stampMark opens a bench payload in a relayed frame. Both servers pass the
// payload's bytes on unchanged, so the stamp follows it.
const stampMark = `"payload":{"t":`

// fastStamp reads the stamp of a relayed frame that starts with prefix;
// ok is false for any other frame, which then takes the full parse.
func fastStamp(frame []byte, prefix string) (time.Duration, bool) {
	if !bytes.HasPrefix(frame, []byte(prefix)) {
		return 0, false
	}
	i := bytes.Index(frame, []byte(stampMark))
	if i < 0 {
		return 0, false
	}
	var t int64
	digits := 0
	for _, c := range frame[i+len(stampMark):] {
		if c < '0' || c > '9' {
			if c != ',' && c != '}' {
				return 0, false
			}
			break
		}
		if digits++; digits > 18 {
			return 0, false
		}
		t = t*10 + int64(c-'0')
	}
	if digits == 0 {
		return 0, false
	}
	return time.Duration(t), true
}

// callboxProto speaks docs/protocol.md: hello/welcome, then signal to a peer id.
type callboxProto struct{}

func (callboxProto) Name() string                  { return "callbox" }
func (callboxProto) URL(base string, _ int) string { return wsBase(base) + "/ws" }
func (callboxProto) PresetID(int) string           { return "" }
func (callboxProto) Heartbeat() []byte             { return nil }
func (callboxProto) HeartbeatEvery() time.Duration { return 0 }

func (callboxProto) Hello(i, room int) []byte {
	b, _ := json.Marshal(struct {
		Type    string `json:"type"`
		Version int    `json:"version"`
		Room    string `json:"room"`
		Name    string `json:"name"`
	}{"hello", 1, "bench-" + strconv.Itoa(room), "b" + strconv.Itoa(i)})
	return b
}

func (callboxProto) Signal(to string, stamp time.Duration) ([]byte, error) {
	return appendSignal("signal", "to", to, stamp)
}

func (callboxProto) Parse(frame []byte) (inbound, error) {
	if t, ok := fastStamp(frame, `{"type":"signal",`); ok {
		return inbound{kind: kindSignal, stamp: t}, nil
	}
	// The welcome (a kilobyte of ICE servers and history) starts with the
	// id, as the hub's welcomeMsg orders its fields.
	if rest, ok := bytes.CutPrefix(frame, []byte(`{"type":"welcome","id":"`)); ok {
		if end := bytes.IndexByte(rest, '"'); end > 0 && bytes.IndexByte(rest[:end], '\\') < 0 {
			return inbound{kind: kindJoined, id: string(rest[:end])}, nil
		}
	}
	var m struct {
		Type    string          `json:"type"`
		ID      string          `json:"id"`
		Code    string          `json:"code"`
		Reason  string          `json:"reason"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(frame, &m); err != nil {
		return inbound{}, fmt.Errorf("callbox frame: %w", err)
	}
	switch m.Type {
	case "welcome":
		if m.ID == "" {
			return inbound{}, fmt.Errorf("callbox welcome without id")
		}
		return inbound{kind: kindJoined, id: m.ID}, nil
	case "signal":
		t, err := stampOf(m.Payload)
		return inbound{kind: kindSignal, stamp: t}, err
	case "error":
		return inbound{kind: kindError, detail: m.Code + ": " + m.Reason}, nil
	case "reconnect":
		return inbound{kind: kindError, detail: "reconnect: " + m.Reason}, nil
	case "":
		return inbound{}, fmt.Errorf("callbox frame without type")
	}
	return inbound{kind: kindOther}, nil
}

// peerjsProto speaks the PeerJS server's protocol: the id, token and key in
// the URL, OPEN back, then OFFER/ANSWER/CANDIDATE with dst and payload, and
// a HEARTBEAT from every client (its browser client sends one each 5 s).
type peerjsProto struct{}

func (peerjsProto) Name() string                  { return "peerjs" }
func (peerjsProto) Hello(int, int) []byte         { return nil }
func (peerjsProto) PresetID(i int) string         { return "b" + strconv.Itoa(i) }
func (peerjsProto) Heartbeat() []byte             { return []byte(`{"type":"HEARTBEAT"}`) }
func (peerjsProto) HeartbeatEvery() time.Duration { return 5 * time.Second }

func (p peerjsProto) URL(base string, i int) string {
	q := url.Values{"key": {"peerjs"}, "id": {p.PresetID(i)}, "token": {"tok" + strconv.Itoa(i)}}
	return wsBase(base) + "/peerjs?" + q.Encode()
}

func (peerjsProto) Signal(to string, stamp time.Duration) ([]byte, error) {
	return appendSignal("CANDIDATE", "dst", to, stamp)
}

func (peerjsProto) Parse(frame []byte) (inbound, error) {
	if t, ok := fastStamp(frame, `{"type":"CANDIDATE",`); ok {
		return inbound{kind: kindSignal, stamp: t}, nil
	}
	var m struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(frame, &m); err != nil {
		return inbound{}, fmt.Errorf("peerjs frame: %w", err)
	}
	switch m.Type {
	case "OPEN":
		return inbound{kind: kindJoined}, nil
	case "OFFER", "ANSWER", "CANDIDATE":
		t, err := stampOf(m.Payload)
		return inbound{kind: kindSignal, stamp: t}, err
	case "ERROR", "ID-TAKEN", "EXPIRE", "LEAVE":
		// EXPIRE and LEAVE mean a message found no peer: a loss here.
		var p struct {
			Msg string `json:"msg"`
		}
		_ = json.Unmarshal(m.Payload, &p) // the detail is best effort
		return inbound{kind: kindError, detail: m.Type + ": " + p.Msg}, nil
	case "":
		return inbound{}, fmt.Errorf("peerjs frame without type")
	}
	return inbound{kind: kindOther}, nil
}

func stampOf(payload json.RawMessage) (time.Duration, error) {
	var p struct {
		T *int64 `json:"t"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return 0, fmt.Errorf("signal payload: %w", err)
	}
	if p.T == nil || *p.T < 0 {
		return 0, fmt.Errorf("signal payload without a send time")
	}
	return time.Duration(*p.T), nil
}

// wsBase turns "http://host:port" into "ws://host:port".
func wsBase(base string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest
	}
	if rest, ok := strings.CutPrefix(base, "http://"); ok {
		return "ws://" + rest
	}
	return base
}
