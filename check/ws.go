package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// serverMsg is the part of the hub's messages (docs/protocol.md) the check
// reads: welcome and error.
type serverMsg struct {
	Type       string      `json:"type"`
	ID         string      `json:"id"`
	Room       string      `json:"room"`
	Code       string      `json:"code"`
	Reason     string      `json:"reason"`
	Fatal      bool        `json:"fatal"`
	ICEServers []iceServer `json:"iceServers"`
	ICEExpires int64       `json:"iceExpires"` // Unix ms
}

// iceServer is an RTCIceServer; urls may be one string or a list.
type iceServer struct {
	URLs       []string `json:"-"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// maxServerMsg bounds what the check reads of one message: a welcome with
// a full room and its chat history stays well under it.
const maxServerMsg = 1 << 20

func (s *iceServer) UnmarshalJSON(b []byte) error {
	var raw struct {
		URLs       json.RawMessage `json:"urls"`
		Username   string          `json:"username"`
		Credential string          `json:"credential"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	s.Username, s.Credential = raw.Username, raw.Credential
	s.URLs = nil
	if len(raw.URLs) == 0 {
		return nil
	}
	var one string
	if err := json.Unmarshal(raw.URLs, &one); err == nil {
		s.URLs = []string{one}
		return nil
	}
	return json.Unmarshal(raw.URLs, &s.URLs)
}

// decodeServerMsg parses one message from the hub.
func decodeServerMsg(b []byte) (*serverMsg, error) {
	if len(b) > maxServerMsg {
		return nil, fmt.Errorf("check: server message of %d bytes, more than %d", len(b), maxServerMsg)
	}
	var m serverMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("check: server message: %w", err)
	}
	if m.Type == "" {
		return nil, errors.New("check: server message without a type")
	}
	return &m, nil
}

// joinAdvice turns the hub's error codes into what the user should do.
func joinAdvice(code, base, room string) string {
	switch code {
	case "unauthorized":
		return "the server asks for a password ([signal] access = \"password\"): pass -password"
	case "invite_expired":
		return fmt.Sprintf("the invite link has expired: make a fresh one with callbox invite -config FILE -room %s", room)
	case "invite_invalid":
		return fmt.Sprintf("the server admits invite links only ([signal] access = \"invite\"): pass an invite link, as callbox check '%s/r/%s?invite=…' (make one with callbox invite), or -invite TOKEN", base, room)
	case "room_full":
		return "the room is full: leave -room out to use a throwaway room"
	case "too_many_rooms":
		return "the server has [signal] max_rooms rooms open: raise it or try later"
	case "bad_room":
		return "-room may hold only A-Z a-z 0-9 - _ (1 to 64 characters)"
	}
	return ""
}

func (r *runner) checkWebSocket(ctx context.Context) {
	if r.dnsFailed {
		r.add(NameWebSocket, Skip, "skipped: "+r.target.Host+" does not resolve", "")
		return
	}
	room := r.opts.Room
	if room == "" {
		room = r.target.Room
	}
	if room == "" {
		room = randomRoom()
	}
	invite := r.opts.Invite
	if invite == "" {
		invite = r.target.Invite
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(r.target.Base(), "http") + "/ws"
	d := websocket.Dialer{TLSClientConfig: r.tlsConfig(r.target.Host), HandshakeTimeout: r.opts.StepTimeout}
	hdr := http.Header{}
	// A browser sends its page's origin; the hub refuses foreign ones.
	hdr.Set("Origin", r.target.Base())
	ws, resp, err := d.DialContext(sctx, wsURL, hdr)
	if err != nil {
		r.add(NameWebSocket, Fail, fmt.Sprintf("%s: %s", wsURL, wsDialDetail(sctx, resp, err)), wsDialAdvice(resp, r.target))
		return
	}
	defer ws.Close()
	ws.SetReadLimit(maxServerMsg)
	// The deadline unblocks the read when ctx ends first.
	deadline, _ := sctx.Deadline()
	ws.SetReadDeadline(deadline)
	ws.SetWriteDeadline(deadline)
	stop := context.AfterFunc(sctx, func() { ws.SetReadDeadline(time.Now()) })
	defer stop()

	hello := map[string]any{"type": "hello", "version": 1, "room": room, "name": "callbox check"}
	if r.opts.Password != "" {
		hello["password"] = r.opts.Password
	}
	if invite != "" {
		hello["invite"] = invite
	}
	if err := ws.WriteJSON(hello); err != nil {
		r.add(NameWebSocket, Fail, "sending hello: "+describeNetErr(sctx, err), "")
		return
	}
	start := time.Now()
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				r.add(NameWebSocket, Fail, fmt.Sprintf("the server closed the socket: %d %s", ce.Code, ce.Text), "")
			} else {
				r.add(NameWebSocket, Fail, "waiting for welcome: "+describeNetErr(sctx, err),
					"behind a reverse proxy, check that it passes WebSockets through (the Upgrade and Connection headers)")
			}
			return
		}
		m, err := decodeServerMsg(data)
		if err != nil {
			r.add(NameWebSocket, Fail, err.Error(), "something other than callbox answers at /ws")
			return
		}
		switch m.Type {
		case "welcome":
			r.welcome = m
			ws.WriteJSON(map[string]string{"type": "leave"})
			r.add(NameWebSocket, OK, fmt.Sprintf("joined room %s as %s in %s", m.Room, m.ID, time.Since(start).Round(time.Millisecond)), "")
			return
		case "error":
			if !m.Fatal {
				continue
			}
			r.add(NameWebSocket, Fail, fmt.Sprintf("hello refused: %s (%s)", m.Code, m.Reason), joinAdvice(m.Code, r.target.Base(), room))
			return
		}
		// Presence or chat before welcome is not in the protocol: ignore.
	}
}

func wsDialDetail(ctx context.Context, resp *http.Response, err error) string {
	if resp != nil {
		return fmt.Sprintf("upgrade answered %s", resp.Status)
	}
	return describeNetErr(ctx, err)
}

func wsDialAdvice(resp *http.Response, t Target) string {
	if resp == nil {
		return fmt.Sprintf("is callbox running, and TCP port %s open in the firewall?", t.Port)
	}
	switch resp.StatusCode {
	case http.StatusForbidden:
		return fmt.Sprintf("the hub refused the origin %s: a reverse proxy must pass the Host header on (nginx: proxy_set_header Host $host), or add %q to [signal] origins", t.Base(), t.Host)
	case http.StatusTooManyRequests:
		return "too many sockets from this address ([signal] max_connections_per_ip)"
	case http.StatusServiceUnavailable:
		return "the server is shutting down"
	}
	return "behind a reverse proxy, check that it forwards /ws with the Upgrade and Connection headers (nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\")"
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
