package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
	"github.com/callbox/callbox/turnserver"
)

// TestPionPeersRelayThroughCallbox is the real thing without a browser: two
// pion/webrtc peers signal through the hub over real WebSockets, take the
// ICE servers it hands out (minted by callbox's own TURN server), are held
// to relay candidates, and move bytes over a data channel through TURN.
func TestPionPeersRelayThroughCallbox(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	tcfg := config.Default().TURN
	tcfg.Listen = "127.0.0.1:0"
	tcfg.Secrets = []string{"e2e-secret-0123456789"}
	tcfg.AllowLoopbackPeers = true
	turn, err := turnserver.New(tcfg, turnserver.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer turn.Close()

	ice := func(user string) ([]signal.ICEServer, time.Time) {
		c := turn.Credentials(user, tcfg.CredentialTTL)
		return []signal.ICEServer{
			{URLs: turn.STUNURIs()},
			{URLs: c.URIs, Username: c.Username, Credential: c.Password},
		}, c.Expires
	}
	hub, err := signal.NewHub(config.Default().Signal, signal.Options{Logger: logger, ICE: ice})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	hub.Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
	}()
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Grace joins first; Ada joins second and offers (the peer that sees
	// "joined" waits for the newcomer's offer).
	grace := newPionPeer(t, ctx, wsURL, "grace")
	ada := newPionPeer(t, ctx, wsURL, "ada")

	payload := make([]byte, 256<<10)
	rand.Read(payload)
	var received bytes.Buffer
	got := make(chan struct{})
	dc := openDataChannel(t, ctx, ada, grace, func(data []byte) {
		received.Write(data) // pion calls this from one goroutine per channel
		if received.Len() == len(payload) {
			close(got)
		}
	})
	for off := 0; off < len(payload); off += 16 << 10 {
		for dc.BufferedAmount() > 1<<20 {
			time.Sleep(time.Millisecond)
		}
		if err := dc.Send(payload[off : off+16<<10]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatalf("grace got %d of %d bytes", received.Len(), len(payload))
	}
	if !bytes.Equal(received.Bytes(), payload) {
		t.Fatal("the bytes that crossed differ from the bytes sent")
	}
	for _, p := range []*pionPeer{ada, grace} {
		pair, err := p.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("%s: no selected candidate pair: %v", p.name, err)
		}
		if pair.Local.Typ != webrtc.ICECandidateTypeRelay || pair.Remote.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: selected pair %s, want relay on both ends", p.name, pair)
		}
		t.Logf("%s: selected pair %s", p.name, pair)
	}
	if n := turn.AllocationCount(); n < 2 {
		t.Fatalf("callbox TURN holds %d allocations, want the two peers'", n)
	}
}

// openDataChannel opens a data channel from ada to grace through the hub
// (both start reading their sockets, ada offers) and hands what grace
// receives on it to recv.
func openDataChannel(t *testing.T, ctx context.Context, ada, grace *pionPeer, recv func([]byte)) *webrtc.DataChannel {
	t.Helper()
	grace.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) { recv(m.Data) })
	})
	dc, err := ada.pc.CreateDataChannel("bytes", nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan struct{})
	dc.OnOpen(func() { close(opened) })
	ada.start(t)
	grace.start(t)
	ada.offer(t, grace.id)
	select {
	case <-opened:
	case <-ctx.Done():
		t.Fatalf("the data channel did not open: ada %s, grace %s", ada.pc.ICEConnectionState(), grace.pc.ICEConnectionState())
	}
	return dc
}

// pionPeer is one side: a WebSocket to the hub and a PeerConnection.
type pionPeer struct {
	name   string
	id     string
	resume string // the welcome's resume token
	ws     *websocket.Conn
	pc     *webrtc.PeerConnection

	wmu sync.Mutex // gorilla allows one writer; pion's callbacks and the reader both send
	wg  sync.WaitGroup
	t   *testing.T

	mu    sync.Mutex
	other string // guarded by mu: the other peer's id, learnt from signaling

	// owned by the reader goroutine: candidates that arrived before the
	// description they belong to (pion gathers, and sends, as soon as
	// SetLocalDescription returns, which can be before the offer is sent).
	early []webrtc.ICECandidateInit
}

type hubMsg struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	Resume     string `json:"resume"`
	Resumed    bool   `json:"resumed"`
	From       string `json:"from"`
	Peers      []struct{ ID string }
	ICEServers []signal.ICEServer `json:"iceServers"`
	Payload    json.RawMessage    `json:"payload"`
	Code       string             `json:"code"`
	Reason     string             `json:"reason"`
}

type sigPayload struct {
	Description *webrtc.SessionDescription `json:"description,omitempty"`
	Candidate   *webrtc.ICECandidateInit   `json:"candidate,omitempty"`
}

func newPionPeer(t *testing.T, ctx context.Context, url, name string) *pionPeer {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dial hub: %v", name, err)
	}
	p := &pionPeer{name: name, ws: ws, t: t}
	p.send(map[string]any{"type": "hello", "version": 1, "room": "pion-e2e", "name": name})
	var w hubMsg
	if err := ws.ReadJSON(&w); err != nil || w.Type != "welcome" {
		t.Fatalf("%s: welcome: %+v %v", name, w, err)
	}
	p.id, p.resume = w.ID, w.Resume
	var servers []webrtc.ICEServer
	for _, s := range w.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		if s.Username != "" && !strings.HasSuffix(s.Username, ":"+w.ID) {
			t.Fatalf("%s: TURN username %q is not minted for peer %s", name, s.Username, w.ID)
		}
	}
	p.pc, err = webrtc.NewPeerConnection(webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil || p.peerID() == "" {
			return
		}
		init := c.ToJSON()
		p.signal(p.peerID(), sigPayload{Candidate: &init})
	})
	t.Cleanup(func() {
		p.pc.Close()
		p.ws.Close()
		p.wg.Wait()
	})
	return p
}

func (p *pionPeer) peerID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.other
}

func (p *pionPeer) setPeerID(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.other = id
}

func (p *pionPeer) send(v any) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := p.ws.WriteJSON(v); err != nil {
		p.t.Errorf("%s: send: %v", p.name, err)
	}
}

func (p *pionPeer) signal(to string, payload sigPayload) {
	p.send(map[string]any{"type": "signal", "to": to, "payload": payload})
}

// offer starts negotiation towards peer id to.
func (p *pionPeer) offer(t *testing.T, to string) {
	p.setPeerID(to)
	o, err := p.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	p.signal(to, sigPayload{Description: &o})
}

// start runs the reader that applies the other side's descriptions and
// candidates; it ends when the socket closes (Cleanup).
func (p *pionPeer) start(t *testing.T) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			var m hubMsg
			if err := p.ws.ReadJSON(&m); err != nil {
				return
			}
			switch m.Type {
			case "error":
				t.Errorf("%s: hub error %s: %s", p.name, m.Code, m.Reason)
			case "signal":
				p.setPeerID(m.From)
				var s sigPayload
				if err := json.Unmarshal(m.Payload, &s); err != nil {
					t.Errorf("%s: payload: %v", p.name, err)
					continue
				}
				if err := p.apply(m.From, s); err != nil {
					t.Errorf("%s: %v", p.name, err)
				}
			}
		}
	}()
}

func (p *pionPeer) apply(from string, s sigPayload) error {
	switch {
	case s.Description != nil:
		if err := p.pc.SetRemoteDescription(*s.Description); err != nil {
			return fmt.Errorf("set remote %s: %w", s.Description.Type, err)
		}
		for _, c := range p.early {
			if err := p.pc.AddICECandidate(c); err != nil {
				return fmt.Errorf("add early candidate: %w", err)
			}
		}
		p.early = nil
		if s.Description.Type == webrtc.SDPTypeOffer {
			a, err := p.pc.CreateAnswer(nil)
			if err != nil {
				return err
			}
			if err := p.pc.SetLocalDescription(a); err != nil {
				return err
			}
			p.signal(from, sigPayload{Description: &a})
		}
	case s.Candidate != nil && p.pc.RemoteDescription() == nil:
		p.early = append(p.early, *s.Candidate)
	case s.Candidate != nil:
		if err := p.pc.AddICECandidate(*s.Candidate); err != nil {
			return fmt.Errorf("add candidate: %w", err)
		}
	}
	return nil
}
