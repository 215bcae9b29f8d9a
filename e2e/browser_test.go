package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// Two people join a room, see each other's video and chat both ways.
func TestBrowserCall(t *testing.T) {
	art := newArtifacts(t)
	s := startServer(t, art, nil)
	room := randomRoom("call")
	bs := startBrowsers(t, art, func(name string) string { return callURL(s, room, name, "") }, "ada", "grace")
	ada, grace := bs[0], bs[1]

	for _, b := range bs {
		ps := b.waitConnected(1)
		art.logf("%s sees %v", b.name, ps)
	}
	for _, b := range bs {
		b.waitFramesRising()
	}
	ada.screenshot("connected")
	grace.screenshot("connected")

	sendChat(t, ada, "hello from ada")
	sendChat(t, grace, "hi ada, grace here")
	for _, b := range bs {
		waitChat(t, b, "hello from ada", "hi ada, grace here")
	}
	// Names come from the hub, not from the sender's page.
	if names := mustEval[string](grace, `[...document.querySelectorAll("#chat-log .msg-name")].map(e => e.textContent).join(",")`); names != "ada,You" {
		t.Errorf("grace's chat names = %q, want ada,You", names)
	}
	ada.screenshot("chat")
	grace.screenshot("chat")
}

// sendChat types text into the chat box and presses Enter, as a person does.
func sendChat(t *testing.T, b *browser, text string) {
	t.Helper()
	if open := mustEval[bool](b, `!document.getElementById("chat").hidden`); !open {
		b.do("open chat", chromedp.Click(chromedp.CSS("#btn-chat")))
	}
	b.do("chat "+text,
		chromedp.WaitVisible(chromedp.CSS("#chat-input")),
		chromedp.SendKeys(chromedp.CSS("#chat-input"), text+"\r"))
}

// waitChat waits until b's chat log shows every text, in order.
func waitChat(t *testing.T, b *browser, texts ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s's chat to show %q", b.name, texts), actionTimeout, func() (bool, string, error) {
		got, err := eval[[]string](b, `[...document.querySelectorAll("#chat-log .msg-text")].map(e => e.textContent)`)
		if err != nil {
			return false, "", err
		}
		return strings.Join(got, "\n") == strings.Join(texts, "\n"), fmt.Sprint(got), nil
	})
}
