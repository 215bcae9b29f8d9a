package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/callbox/callbox/config"
)

// callAndChat waits until ada and grace are connected with video rising
// both ways, then each says one line and both see both, in order.
func callAndChat(t *testing.T, art *artifacts, ada, grace *browser, adaSays, graceSays string) {
	t.Helper()
	for _, b := range []*browser{ada, grace} {
		ps := b.waitConnected(1)
		art.logf("%s sees %v", b.name, ps)
	}
	for _, b := range []*browser{ada, grace} {
		b.waitFramesRising()
	}
	ada.screenshot("connected")
	grace.screenshot("connected")
	sendChat(t, ada, adaSays)
	sendChat(t, grace, graceSays)
	for _, b := range []*browser{ada, grace} {
		waitChat(t, b, adaSays, graceSays)
	}
}

// Two people join a room, see each other's video and chat both ways.
func TestBrowserCall(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	room := randomRoom("call")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "") }, "ada", "grace")
	ada, grace := bs[0], bs[1]
	callAndChat(t, art, ada, grace, "hello from ada", "hi ada, grace here")
	// Names come from the hub, not from the sender's page.
	if names := mustEvalJS[string](grace, `[...document.querySelectorAll("#chat-log .msg-name")].map(e => e.textContent).join(",")`); names != "ada,You" {
		t.Errorf("grace's chat names = %q, want ada,You", names)
	}
	ada.screenshot("chat")
	grace.screenshot("chat")

	// With her chat closed, grace gets an unread count and a marker.
	grace.do("close chat", chromedp.Click(chromedp.CSS("#chat-close")))
	sendChat(t, ada, "are you there?")
	waitText(t, grace, "#chat-badge", "1")
	if n := mustEvalJS[int](grace, `document.querySelectorAll("#chat-log .chat-divider").length`); n != 1 {
		t.Errorf("grace's chat has %d unread markers, want 1", n)
	}
	grace.screenshot("unread")
	grace.do("open chat", chromedp.Click(chromedp.CSS("#btn-chat")))
	if hidden := mustEvalJS[bool](grace, `document.getElementById("chat-badge").hidden`); !hidden {
		t.Error("unread badge still shown after opening the chat")
	}

	// The fake microphone beeps: the far tile lights up while it does.
	// While it does not, the state says what the ring waits for: the
	// far side's mic announced on, and an inbound level above 0.04 over
	// the last stats interval (intervalLevel).
	for _, b := range bs {
		waitUntil(t, b.name+" seeing the other one speak", connectTimeout, func() (bool, string, error) {
			on, err := evalJS[bool](b, `!!document.querySelector('.tile.speaking:not([data-peer="local"])')`)
			if err != nil || on {
				return on, "", err
			}
			state, err := evalJS[string](b, `window.callbox.peers().then(ps => JSON.stringify({
				statsTicks: window.callbox.state().statsTicks,
				tiles: [...document.querySelectorAll('.tile:not([data-peer="local"])')].map(t => t.className),
				peers: ps.map(p => ({mic: p.media.mic, audioLevel: p.audioLevel, intervalLevel: p.rates.audioLevel, packetsReceived: p.packetsReceived, connectionState: p.connectionState}))}))`)
			return false, state, err
		})
	}
}

// sendChat types text into the chat box and presses Enter, as a person does.
func sendChat(t *testing.T, b *browser, text string) {
	t.Helper()
	if open := mustEvalJS[bool](b, `!document.getElementById("chat").hidden`); !open {
		b.do("open chat", chromedp.Click(chromedp.CSS("#btn-chat")))
	}
	b.do("chat "+text,
		chromedp.WaitVisible(chromedp.CSS("#chat-input")),
		chromedp.SendKeys(chromedp.CSS("#chat-input"), text+"\r"))
}

// waitChat waits until b's chat log shows every text, in order.
func waitChat(t *testing.T, b *browser, texts ...string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%s's chat to show %q", b.name, texts), actionTimeout, func() (bool, string, error) {
		got, err := evalJS[[]string](b, `[...document.querySelectorAll("#chat-log .msg-text")].map(e => e.textContent)`)
		if err != nil {
			return false, "", err
		}
		return strings.Join(got, "\n") == strings.Join(texts, "\n"), fmt.Sprint(got), nil
	})
}

// With ?relay=1 both peers use only relay candidates, through callbox's own
// TURN server: over UDP, and over TCP when UDP to the TURN port is dropped.
func TestBrowserRelay(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			art := newArtifacts(t)
			s := startCallbox(t, art, nil)
			port := s.TURN().UDPAddr().Port
			// Chromium may keep a working TCP relay pair even when UDP would
			// do: take the other transport away so the choice is forced.
			if transport == "tcp" {
				dropPort(t, art, "udp", port)
			} else {
				dropPort(t, art, "tcp", port)
			}
			room := randomRoom("relay-" + transport)
			bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "&relay=1") }, "ada", "grace")
			for _, b := range bs {
				b.waitConnected(1)
				// Chromium may nominate whichever relay pair answers first and
				// move to the better one (UDP) a moment later.
				b.waitRelayedOver(transport)
			}
			for _, b := range bs {
				b.waitFramesRising()
			}
			wantURL := fmt.Sprintf(":%d?transport=%s", port, transport)
			for _, b := range bs {
				ps, err := b.peers()
				if err != nil || len(ps) != 1 {
					t.Fatalf("%s: peers %v, %v", b.name, ps, err)
				}
				p := ps[0]
				art.logf("%s selected pair: %v", b.name, p)
				if p.LocalCandidateType != "relay" || p.RemoteCandidateType != "relay" {
					t.Errorf("%s: selected pair %s/%s, want relay/relay", b.name, p.LocalCandidateType, p.RemoteCandidateType)
				}
				if p.RelayProtocol != transport {
					t.Errorf("%s: reaches TURN over %q, want %s", b.name, p.RelayProtocol, transport)
				}
				if !strings.HasSuffix(p.LocalCandidateURL, wantURL) {
					t.Errorf("%s: relay candidate from %q, want callbox's TURN (…%s)", b.name, p.LocalCandidateURL, wantURL)
				}
				b.do("open connection details", chromedp.Click(chromedp.CSS(".tile-info")))
				b.screenshot("relayed")
			}
			if n := s.TURN().AllocationCount(); n < 2 {
				t.Errorf("TURN server holds %d allocations, want at least 2", n)
			}
		})
	}
}

// The page restarts ICE when its path breaks: a call relayed over UDP (TCP
// to TURN blocked, so no TCP relay candidates exist) loses UDP and gets TCP
// back; only fresh candidates, gathered by an ICE restart, can carry it on.
func TestBrowserICERestart(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	port := s.TURN().UDPAddr().Port
	allowTCP := dropPort(t, art, "tcp", port)
	room := randomRoom("restart")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "&relay=1") }, "ada", "grace")
	for _, b := range bs {
		b.waitConnected(1)
		b.waitRelayedOver("udp")
	}
	dropPort(t, art, "udp", port)
	allowTCP()
	for _, b := range bs {
		b.waitRelayedOver("tcp")
	}
	restarts := 0
	for _, b := range bs {
		ps, err := b.peers()
		if err != nil || len(ps) != 1 {
			t.Fatalf("%s: peers %v, %v", b.name, ps, err)
		}
		restarts += ps[0].Restarts
	}
	if restarts == 0 {
		t.Error("the call moved to TCP without an ICE restart by either page")
	}
	for _, b := range bs {
		b.waitFramesRising()
		ps, _ := b.peers()
		art.logf("%s after the drop: %v", b.name, ps)
		b.screenshot("recovered")
	}
}

// waitRelayedOver waits until b's only peer is connected through a relay
// pair whose local candidate reaches TURN over transport.
func (b *browser) waitRelayedOver(transport string) {
	b.t.Helper()
	waitUntil(b.t, b.name+" relaying over "+transport, connectTimeout, func() (bool, string, error) {
		ps, err := b.peers()
		if err != nil || len(ps) != 1 {
			return false, fmt.Sprint(ps), err
		}
		p := ps[0]
		return p.ConnectionState == "connected" && p.LocalCandidateType == "relay" && p.RelayProtocol == transport, p.String(), nil
	})
}

// Fresh TURN credentials pushed by the hub are applied to running calls with
// setConfiguration, and the relayed call goes on past the first credential's
// expiry. The shortest lifetime the config allows is a minute, so the hub
// pushes at about 48 s: this test takes over a minute.
func TestBrowserICERefresh(t *testing.T) {
	if testing.Short() {
		t.Skip("takes over a minute (1-minute credentials); run without -short")
	}
	art := newArtifacts(t)
	s := startCallbox(t, art, func(c *config.Config) { c.TURN.CredentialTTL = time.Minute })
	room := randomRoom("refresh")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "&relay=1") }, "ada", "grace")
	first := map[*browser]string{}
	for _, b := range bs {
		ps := b.waitConnected(1)
		first[b] = ps[0].TURNUsername
		if first[b] == "" {
			t.Fatalf("%s: no TURN credential in the connection's configuration", b.name)
		}
	}
	for _, b := range bs {
		waitUntil(t, b.name+" applying fresh TURN credentials", 2*time.Minute, func() (bool, string, error) {
			ps, err := b.peers()
			if err != nil || len(ps) != 1 {
				return false, fmt.Sprint(ps), err
			}
			st, err := b.state()
			return st.ICEUpdates > 0 && ps[0].TURNUsername != first[b], fmt.Sprintf("%+v %v", st, ps[0]), err
		})
	}
	// Past the first credential's expiry: still relayed, still flowing.
	expiry := time.Now().Add(15 * time.Second)
	for _, b := range bs {
		ps, _ := b.peers()
		art.logf("%s: credential %s, then %s", b.name, first[b], ps[0].TURNUsername)
	}
	time.Sleep(time.Until(expiry))
	for _, b := range bs {
		b.waitConnected(1)
		b.waitFramesRising()
		b.screenshot("refreshed")
	}
}

// dropPort drops proto ("udp" or "tcp") packets to port on loopback until
// the returned func is called or the test ends, so TURN can be reached only
// the other way. Needs root (iptables).
func dropPort(t *testing.T, art *artifacts, proto string, port int) (undo func()) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		if ci {
			t.Fatal("dropping packets needs root (iptables)")
		}
		t.Skip("dropping packets needs root (iptables); run as root or under CI=true")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		if ci {
			t.Fatal("iptables not found: install the Debian package iptables")
		}
		t.Skip("iptables not found: install the Debian package iptables")
	}
	rule := []string{"INPUT", "-i", "lo", "-p", proto, "--dport", strconv.Itoa(port), "-j", "DROP"}
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables -I %v: %v: %s", rule, err, out)
	}
	art.logf("dropping %s to 127.0.0.1:%d", proto, port)
	var once sync.Once
	undo = func() {
		once.Do(func() {
			if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %v: %v: %s", rule, err, out)
			}
			art.logf("no longer dropping %s to 127.0.0.1:%d", proto, port)
		})
	}
	t.Cleanup(undo)
	return undo
}

// Three people: every one is connected to both others, video flowing.
func TestBrowserMesh(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	room := randomRoom("mesh")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "") }, "ada", "grace", "linus")
	for _, b := range bs {
		ps := b.waitConnected(2)
		art.logf("%s sees %v", b.name, ps)
	}
	for _, b := range bs {
		b.waitFramesRising()
		b.screenshot("mesh")
	}
}

// The hub drops every socket mid-call: the pages resume their sessions (same
// ids) and the media, which never went through the hub, keeps flowing.
func TestBrowserResume(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	room := randomRoom("resume")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "") }, "ada", "grace")
	ids := map[*browser]pageState{}
	for _, b := range bs {
		b.waitConnected(1)
		st, err := b.state()
		if err != nil {
			t.Fatal(err)
		}
		ids[b] = st
	}
	n := s.Hub().DropSockets()
	art.logf("hub dropped %d sockets", n)
	if n != 2 {
		t.Errorf("DropSockets closed %d sockets, want 2", n)
	}
	for _, b := range bs {
		before := ids[b]
		waitUntil(t, b.name+" resuming its session", connectTimeout, func() (bool, string, error) {
			st, err := b.state()
			if err != nil {
				return false, "", err
			}
			return st.Welcomes > before.Welcomes && st.Signaling == "open", fmt.Sprintf("%+v", st), nil
		})
		st, _ := b.state()
		if st.ID != before.ID {
			t.Errorf("%s: id %s after resume, was %s: the session was not resumed", b.name, st.ID, before.ID)
		}
	}
	for _, b := range bs {
		b.waitFramesRising()
		b.waitConnected(1)
	}
	// Signaling works again: chat goes through the resumed sessions.
	sendChat(t, bs[1], "still here after the drop")
	for _, b := range bs {
		waitChat(t, b, "still here after the drop")
		b.screenshot("resumed")
	}
}

// Screen sharing replaces the camera track on the same sender: the far side
// decodes the screen, without renegotiation, then the camera again.
//
// The sharer's page sets contentHint "detail" on the screen track, so the
// encoder keeps its resolution: the far side then decodes frames exactly as
// wide as the screen track, a width the camera's scaling steps
// (1280, 960, 640, 480…) never produce.
func TestBrowserScreenShare(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	room := randomRoom("screen")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "") }, "ada", "grace")
	ada, grace := bs[0], bs[1]
	for _, b := range bs {
		b.waitConnected(1)
	}
	grace.waitFramesRising()

	// A real click: getDisplayMedia needs a user gesture.
	ada.do("share screen", chromedp.Click(chromedp.CSS("#btn-screen")))
	var width float64
	waitUntil(t, "ada sending her screen", actionTimeout, func() (bool, string, error) {
		ps, err := ada.peers()
		if err != nil || len(ps) != 1 {
			return false, fmt.Sprint(ps), err
		}
		width = ps[0].SendingWidth
		return ps[0].SendingVideo == "screen" && width > 0, ps[0].String(), nil
	})
	waitRemoteVideo(t, grace, fmt.Sprintf("the shared screen (%v wide)", width), func(p peerFacts) bool {
		return p.Media.Screen && p.FrameWidth == width
	})
	grace.waitFramesRising()
	ada.screenshot("sharing")
	grace.screenshot("sees-screen")

	ada.do("stop sharing", chromedp.Click(chromedp.CSS("#btn-screen")))
	waitUntil(t, "ada sending her camera", actionTimeout, func() (bool, string, error) {
		ps, err := ada.peers()
		if err != nil || len(ps) != 1 {
			return false, fmt.Sprint(ps), err
		}
		return ps[0].SendingVideo == "camera", ps[0].String(), nil
	})
	waitRemoteVideo(t, grace, "the camera again", func(p peerFacts) bool {
		return !p.Media.Screen && p.FrameWidth > 0 && p.FrameWidth != width
	})
	grace.waitFramesRising()
	grace.screenshot("camera-again")
}

// waitRemoteVideo waits until b's only remote peer satisfies ok.
func waitRemoteVideo(t *testing.T, b *browser, what string, ok func(peerFacts) bool) {
	t.Helper()
	waitUntil(t, b.name+" receiving "+what, connectTimeout, func() (bool, string, error) {
		ps, err := b.peers()
		if err != nil || len(ps) != 1 {
			return false, fmt.Sprint(ps), err
		}
		done := ok(ps[0])
		if done {
			b.art.logf("%s receives %s: %v", b.name, what, ps[0])
		}
		return done, ps[0].String(), nil
	})
}
