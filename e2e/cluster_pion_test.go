package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// resumeOn moves p to another node as the web client does after the
// server's "reconnect": stop ends p's node (the hub tells p to reconnect
// and closes its socket); p dials url with its resume token, keeps its id,
// and takes the new node's ICE servers for its next ICE gathering.
func (p *pionPeer) resumeOn(t *testing.T, ctx context.Context, url string, stop func()) {
	t.Helper()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop()
	}()
	p.wg.Wait() // the reader ends with the old socket
	ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dial the next node: %v", p.name, err)
	}
	p.wmu.Lock()
	old := p.ws
	p.ws = ws
	p.wmu.Unlock()
	old.Close()
	p.send(map[string]any{"type": "hello", "version": 1, "room": "pion-e2e", "name": p.name, "resume": p.resume})
	var w hubMsg
	ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	if err := ws.ReadJSON(&w); err != nil || w.Type != "welcome" || !w.Resumed || w.ID != p.id {
		t.Fatalf("%s: resume on the next node: %+v %v", p.name, w, err)
	}
	ws.SetReadDeadline(time.Time{})
	var servers []webrtc.ICEServer
	for _, s := range w.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if err := p.pc.SetConfiguration(webrtc.Configuration{ICEServers: servers, ICETransportPolicy: webrtc.ICETransportPolicyRelay}); err != nil {
		t.Fatalf("%s: new ICE servers: %v", p.name, err)
	}
	p.start(t)
	<-stopped
}

// iceRestart renegotiates with fresh ICE credentials and candidates, over
// the TURN servers of p's current node.
func (p *pionPeer) iceRestart(t *testing.T, to string) {
	t.Helper()
	o, err := p.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	p.signal(to, sigPayload{Description: &o})
}
