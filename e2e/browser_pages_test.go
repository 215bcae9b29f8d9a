package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"
)

// A person's first visit: the start page makes a room with an unguessable
// name and shows its link; the call page asks for a name, previews the
// camera, joins; the name is remembered for the next call.
func TestBrowserStartFlow(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	b := startBrowsers(t, art, func(string) string { return s.HTTPURL() + "/" }, "visitor")[0]

	b.screenshot("home")
	b.do("start a new call",
		chromedp.Click(chromedp.CSS("#new-call")),
		chromedp.WaitVisible(chromedp.CSS("#created")))
	link := mustEvalJS[string](b, `document.getElementById("share-link").value`)
	prefix := s.HTTPURL() + "/r/"
	room := strings.TrimPrefix(link, prefix)
	// 20 characters of a 32-letter alphabet, in groups of four: 100 bits.
	if !strings.HasPrefix(link, prefix) || len(room) != 24 || strings.Count(room, "-") != 4 {
		t.Fatalf("share link %q: want %s + 20 random characters in groups of 4", link, prefix)
	}
	b.screenshot("created")

	b.do("join now", chromedp.Click(chromedp.CSS("#open-call")))
	waitPhase(t, b, "lobby")
	waitUntil(t, "the camera preview", connectTimeout, func() (bool, string, error) {
		w, err := evalJS[float64](b, `document.getElementById("preview").videoWidth`)
		return w > 0, "", err
	})
	b.screenshot("lobby")
	b.do("enter a name and join",
		chromedp.SendKeys(chromedp.CSS("#name"), "Ada Lovelace"),
		chromedp.Click(chromedp.CSS("#join")))
	waitPhase(t, b, "call")
	waitText(t, b, ".tile-name", "Ada Lovelace (you)")
	b.screenshot("alone-in-call")
	// The same call on a phone: controls within reach, chat closed.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.screenshot("phone")
	b.do("phone chat", chromedp.Click(chromedp.CSS("#btn-chat")))
	b.screenshot("phone-chat")
	b.do("desktop viewport", chromedp.EmulateReset())
	b.do("dark theme", darkTheme(true))
	b.screenshot("dark")
	b.do("light theme", darkTheme(false))

	// The next call page remembers the name and waits for a click.
	if err := b.navigate(s.HTTPURL() + "/r/" + randomRoom("next")); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, b, "lobby")
	waitUntil(t, "the remembered name", actionTimeout, func() (bool, string, error) {
		name, err := evalJS[string](b, `document.getElementById("name").value`)
		return name == "Ada Lovelace", name, err
	})
}

// darkTheme makes the page see prefers-color-scheme: dark (or the system's again).
func darkTheme(on bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		p := emulation.SetEmulatedMediaParams{}
		if on {
			p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
		}
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, p)
		return err
	})
}

// Someone who refuses the camera and microphone still joins: the page says
// why nobody sees them, and they see and hear the others.
func TestBrowserMediaDenied(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	room := randomRoom("denied")
	deny := map[string][]chromedp.ExecAllocatorOption{
		"shy": {chromedp.Flag("use-fake-ui-for-media-stream", "deny")},
	}
	bs := startBrowsersWith(t, art, func(name string) string { return callURL(s, room, name, "") }, deny, "ada", "shy")
	ada, shy := bs[0], bs[1]
	for _, b := range bs {
		b.waitConnected(1)
	}
	shy.waitFramesRising()
	waitUntil(t, "ada to see shy's camera off", connectTimeout, func() (bool, string, error) {
		ps, err := ada.peers()
		if err != nil || len(ps) != 1 {
			return false, fmt.Sprint(ps), err
		}
		return !ps[0].Media.Cam && !ps[0].Media.Mic, ps[0].String(), nil
	})
	waitText(t, ada, `.tile:not([data-peer="local"]).no-video .avatar`, "S")
	ada.screenshot("shy-without-camera")
	shy.screenshot("denied")
}

// A page served over plain HTTP on a name other than localhost is not a
// secure context: the browser hides camera and microphone. The page says
// how to fix it, and the person still joins to watch and listen.
func TestBrowserInsecureContext(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	port := s.HTTPURL()[strings.LastIndex(s.HTTPURL(), ":"):]
	room := randomRoom("insecure")
	// callbox.test resolves to 127.0.0.1 for "remote" only: an http:// page
	// on that name is what a person gets from a LAN server without TLS.
	remote := map[string][]chromedp.ExecAllocatorOption{
		"remote": {chromedp.Flag("host-resolver-rules", "MAP callbox.test 127.0.0.1")},
	}
	bs := startBrowsersWith(t, art, func(name string) string {
		if name == "remote" {
			return "http://callbox.test" + port + "/r/" + room
		}
		return callURL(s, room, name, "")
	}, remote, "ada", "remote")
	ada, rem := bs[0], bs[1]
	waitText(t, rem, "#lobby-problems", "HTTPS")
	if secure := mustEvalJS[bool](rem, `window.isSecureContext`); secure {
		t.Fatal("the page on callbox.test is a secure context; the test proves nothing")
	}
	rem.screenshot("insecure-lobby")
	rem.do("join", chromedp.SendKeys(chromedp.CSS("#name"), "Remote"), chromedp.Click(chromedp.CSS("#join")))
	rem.waitConnected(1)
	ada.waitConnected(1)
	rem.waitFramesRising()
	rem.screenshot("watching")
}

// A hello that reaches the hub too late is answered hello_required (a slow
// uplink, or a hub restarting on a busy machine: seen in TestNATFaults at
// load 50–60): the page connects again instead of giving up. Here the page's
// first WebSocket is answered so by the test; every later one, and the
// page itself, goes to callbox through a reverse proxy.
func TestBrowserHelloRequired(t *testing.T) {
	art := newArtifacts(t)
	s := startCallbox(t, art, nil)
	target, err := url.Parse(s.HTTPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var refused atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" || !refused.CompareAndSwap(false, true) {
			proxy.ServeHTTP(w, r)
			return
		}
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		defer ws.Close()
		art.logf("the first WebSocket is answered hello_required")
		deadline := time.Now().Add(5 * time.Second)
		ws.SetWriteDeadline(deadline)
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"error","code":"hello_required","reason":"no hello within 10s","fatal":true}`))
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "no hello within 10s"), deadline)
	}))
	t.Cleanup(front.Close)
	room := randomRoom("hello")
	b := startBrowsers(t, art, func(name string) string { return front.URL + "/r/" + room + "?name=" + name }, "ada")[0]
	waitUntil(t, "ada joined after hello_required", connectTimeout, func() (bool, string, error) {
		st, err := b.state()
		return err == nil && refused.Load() && st.Welcomes >= 1 && st.Signaling == "open", fmt.Sprintf("%+v", st), err
	})
	b.screenshot("joined")
}
