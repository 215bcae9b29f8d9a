package e2e

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// A person's first visit: the start page makes a room with an unguessable
// name and shows its link; the call page asks for a name, previews the
// camera, joins; the name is remembered for the next call.
func TestBrowserStartFlow(t *testing.T) {
	art := newArtifacts(t)
	s := startServer(t, art, nil)
	b := startBrowsers(t, art, func(string) string { return s.HTTPURL() + "/" }, "visitor")[0]

	b.screenshot("home")
	b.do("start a new call",
		chromedp.Click(chromedp.CSS("#new-call")),
		chromedp.WaitVisible(chromedp.CSS("#created")))
	link := mustEval[string](b, `document.getElementById("share-link").value`)
	prefix := s.HTTPURL() + "/r/"
	room := strings.TrimPrefix(link, prefix)
	// 20 characters of a 32-letter alphabet, in groups of four: 100 bits.
	if !strings.HasPrefix(link, prefix) || len(room) != 24 || strings.Count(room, "-") != 4 {
		t.Fatalf("share link %q: want %s + 20 random characters in groups of 4", link, prefix)
	}
	b.screenshot("created")

	b.do("join now", chromedp.Click(chromedp.CSS("#open-call")))
	waitPhase(t, b, "lobby")
	waitFor(t, "the camera preview", connectTimeout, func() (bool, string, error) {
		w, err := eval[float64](b, `document.getElementById("preview").videoWidth`)
		return w > 0, "", err
	})
	b.screenshot("lobby")
	b.do("enter a name and join",
		chromedp.SendKeys(chromedp.CSS("#name"), "Ada Lovelace"),
		chromedp.Click(chromedp.CSS("#join")))
	waitPhase(t, b, "call")
	waitText(t, b, ".tile-name", "Ada Lovelace (you)")
	b.screenshot("alone-in-call")

	// The next call page remembers the name and waits for a click.
	if err := b.navigate(s.HTTPURL() + "/r/" + randomRoom("next")); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, b, "lobby")
	waitFor(t, "the remembered name", actionTimeout, func() (bool, string, error) {
		name, err := eval[string](b, `document.getElementById("name").value`)
		return name == "Ada Lovelace", name, err
	})
}
