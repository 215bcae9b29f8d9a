package signal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// ProtocolVersion is the only version of docs/protocol.md this hub speaks.
const ProtocolVersion = 1

// Limits of docs/protocol.md that are part of the protocol, not the config.
const (
	maxRoomLen    = 64
	maxNameLen    = 64
	maxChatLen    = 4000
	maxPending    = 64 // signals held for a reconnecting peer
	maxUserIDLen  = 64 // /api/turn username
	resumeTokenSz = 18 // random bytes of a resume token
)

// Error codes of docs/protocol.md.
const (
	CodeBadMessage    = "bad_message"
	CodeHelloRequired = "hello_required"
	CodeBadVersion    = "bad_version"
	CodeBadRoom       = "bad_room"
	CodeBadName       = "bad_name"
	CodeBadChat       = "bad_chat"
	CodeUnauthorized  = "unauthorized"
	CodeInviteInvalid = "invite_invalid"
	CodeInviteExpired = "invite_expired"
	CodeResumeFailed  = "resume_failed"
	CodeRoomFull      = "room_full"
	CodeTooManyRooms  = "too_many_rooms"
	CodeUnknownPeer   = "unknown_peer"
	CodeRateLimited   = "rate_limited"
	CodeTooLarge      = "too_large"
	CodeSlowConsumer  = "slow_consumer"
	CodeAlreadyJoined = "already_joined"
)

// ProtocolError is an error the client must see: it becomes an `error`
// message and, when Fatal, the reason of the close frame that follows.
type ProtocolError struct {
	Code   string
	Reason string
	Fatal  bool
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("signal: %s: %s", e.Code, e.Reason)
}

// CloseCode is the WebSocket close code that follows a fatal error.
func (e *ProtocolError) CloseCode() int {
	switch e.Code {
	case CodeTooManyRooms, CodeSlowConsumer:
		return websocket.CloseTryAgainLater
	case CodeTooLarge:
		return websocket.CloseMessageTooBig
	default:
		return websocket.ClosePolicyViolation
	}
}

func protoErr(code string, fatal bool, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Reason: fmt.Sprintf(format, args...), Fatal: fatal}
}

// inMsg is every client message: one struct, so one decode, and the type
// says which fields matter.
type inMsg struct {
	Type     string          `json:"type"`
	Version  *int            `json:"version"`
	Room     string          `json:"room"`
	Name     string          `json:"name"`
	Password string          `json:"password"`
	Invite   string          `json:"invite"`
	Resume   string          `json:"resume"`
	LastSeq  int64           `json:"lastSeq"`
	To       string          `json:"to"`
	Payload  json.RawMessage `json:"payload"`
	Text     string          `json:"text"`
}

// decode parses one client message. Every failure is the non-fatal
// bad_message: the caller decides whether the context makes it fatal.
func decode(data []byte) (*inMsg, error) {
	m := new(inMsg)
	if err := decodeInto(data, m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeInto is decode into a zeroed m.
func decodeInto(data []byte, m *inMsg) error {
	if decodeSignal(data, m) {
		return nil
	}
	*m = inMsg{} // what the fast path set before it gave up
	if err := json.Unmarshal(data, m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return protoErr(CodeBadMessage, false, "field %q has the wrong type", te.Field)
		}
		return protoErr(CodeBadMessage, false, "not a JSON object")
	}
	switch m.Type {
	case "hello", "chat", "rename", "leave":
	case "signal":
		if m.To == "" {
			return protoErr(CodeBadMessage, false, "signal without \"to\"")
		}
		if len(m.Payload) == 0 || string(m.Payload) == "null" {
			return protoErr(CodeBadMessage, false, "signal without \"payload\"")
		}
	case "":
		return protoErr(CodeBadMessage, false, "message without \"type\"")
	default:
		return protoErr(CodeBadMessage, false, "unknown type %.32q", m.Type)
	}
	return nil
}

// ValidRoom checks a room name: 1 to 64 characters of A-Z a-z 0-9 - _.
func ValidRoom(room string) error {
	if room == "" || len(room) > maxRoomLen {
		return protoErr(CodeBadRoom, true, "room name must be 1 to %d characters", maxRoomLen)
	}
	for i := 0; i < len(room); i++ {
		c := room[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return protoErr(CodeBadRoom, true, "room name may hold only A-Z a-z 0-9 - _")
		}
	}
	return nil
}

// cleanName trims a display name and checks it: 1 to 64 characters, no
// control characters.
func cleanName(name string, fatal bool) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > maxNameLen {
		return "", protoErr(CodeBadName, fatal, "display name must be 1 to %d characters", maxNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", protoErr(CodeBadName, fatal, "display name must not hold control characters")
		}
	}
	return name, nil
}

func checkChat(text string) error {
	if strings.TrimSpace(text) == "" || utf8.RuneCountInString(text) > maxChatLen {
		return protoErr(CodeBadChat, false, "chat text must be 1 to %d characters", maxChatLen)
	}
	return nil
}

// Server-to-client messages.

type peerInfo struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Reconnecting bool   `json:"reconnecting"`
}

type chatMsg struct {
	Type string `json:"type"` // always "chat"
	Seq  int64  `json:"seq"`
	From string `json:"from"`
	Name string `json:"name"`
	Time int64  `json:"time"`
	Text string `json:"text"`
}

type welcomeMsg struct {
	Type         string      `json:"type"`
	ID           string      `json:"id"`
	Room         string      `json:"room"`
	Name         string      `json:"name"`
	Resume       string      `json:"resume"`
	ResumeWindow int64       `json:"resumeWindow"`
	Resumed      bool        `json:"resumed"`
	Peers        []peerInfo  `json:"peers"`
	ICEServers   []ICEServer `json:"iceServers"`
	ICEExpires   int64       `json:"iceExpires"`
	History      []chatMsg   `json:"history"`
}

type iceMsg struct {
	Type       string      `json:"type"`
	ICEServers []ICEServer `json:"iceServers"`
	ICEExpires int64       `json:"iceExpires"`
}

type joinedMsg struct {
	Type string   `json:"type"`
	Peer peerInfo `json:"peer"`
}

type presenceMsg struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
}

type signalOut struct {
	Type    string          `json:"type"`
	From    string          `json:"from"`
	Payload json.RawMessage `json:"payload"`
}

type reconnectMsg struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
	After  int64  `json:"after"`
}

type errorMsg struct {
	Type   string `json:"type"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
	Fatal  bool   `json:"fatal"`
}

// encode marshals a server message. Every type above marshals without
// error (no channels, funcs or cyclic values), so a failure is a bug.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("signal: encode %T: %v", v, err))
	}
	return b
}

func encodeError(e *ProtocolError) []byte {
	return encode(errorMsg{Type: "error", Code: e.Code, Reason: e.Reason, Fatal: e.Fatal})
}

// signalHead is what every relayed signal starts with, up to the sender's id.
const signalHead = `{"type":"signal","from":"`

// encodeSignal is encode(signalOut{...}) for the hot path: the payload's
// bytes are spliced in after json.Compact instead of re-marshalled through
// reflection. json.Marshal also escapes <, > and & and U+2028/U+2029 in a
// raw payload; payloads holding any of those (or a byte that may start
// U+2028/U+2029), and ids needing escapes, take encode itself, so the bytes
// on the wire are the same either way (FuzzEncodeSignal checks).
func encodeSignal(from string, payload json.RawMessage) []byte {
	return appendSignal(nil, from, payload)
}

// appendSignal is encodeSignal appending to dst.
func appendSignal(dst []byte, from string, payload json.RawMessage) []byte {
	if !plainJSON(from) || !plainPayload(payload) {
		return append(dst, encode(signalOut{Type: "signal", From: from, Payload: payload})...)
	}
	buf := bytes.NewBuffer(dst)
	buf.Grow(len(signalHead) + len(from) + len(`","payload":}`) + len(payload))
	buf.WriteString(signalHead)
	buf.WriteString(from)
	buf.WriteString(`","payload":`)
	if err := json.Compact(buf, payload); err != nil {
		return append(dst, encode(signalOut{Type: "signal", From: from, Payload: payload})...) // panics: not JSON
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// frameBufs hold relayed frames while they are written.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// plainPayload tells whether payload holds none of the bytes json.Marshal
// escapes in a raw message: < > & and 0xE2, which starts U+2028 and U+2029.
func plainPayload(payload []byte) bool {
	for _, b := range payload {
		if b == '<' || b == '>' || b == '&' || b == 0xe2 {
			return false
		}
	}
	return true
}

// plainJSON tells whether s is printable ASCII that a JSON string holds as
// it is (peer ids are base64url).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
