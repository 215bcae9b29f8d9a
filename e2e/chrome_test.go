package e2e

// The harness of the browser tests: a whole callbox in-process (package app)
// and one headless Chromium per peer, each its own process with its own
// profile, driven by chromedp. Every test leaves screenshots and a log in
// e2e/artifacts/<test>/ for a person to look at.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/internal/testutil"
)

// Timeouts of the browser tests. Generous because the race detector and
// other engineers' tests share two cores with three Chromiums.
const (
	browserStartTimeout = 60 * time.Second // launch and first navigation
	actionTimeout       = 30 * time.Second // one click, one evaluation
	connectTimeout      = 60 * time.Second // peers connected with media flowing
)

// chromiumFlags are the flags every test browser gets; see FIELD-NOTES.md.
func chromiumFlags(profile string) []chromedp.ExecAllocatorOption {
	return append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.NoSandbox, // root in a container
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
		// A camera with a test pattern, a microphone with a beep, and
		// permission prompts (camera, microphone, screen) answered yes.
		// 10 frames/s rather than 30: a third of the encoding work on a
		// shared machine, still plenty to see frames rise.
		chromedp.Flag("use-fake-device-for-media-stream", "fps=10"),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		// getDisplayMedia picks the screen without a picker in headless mode.
		chromedp.Flag("auto-select-desktop-capture-source", "Entire screen"),
		// Remote audio plays without a click, as after a person's "Join".
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// The closed network here makes Chromium retry its own services.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		// Tests run on one machine: real host candidates instead of mDNS
		// names, and loopback interfaces may carry ICE (a CI box may have
		// no other).
		chromedp.Flag("disable-features", "Translate"),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
	)
}

// requireChromium returns the browser's path, or skips (fails under CI=true).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: install the Debian package chromium")
	}
	t.Skip("chromium not found: install the Debian package chromium to run the browser tests")
	return ""
}

// artifacts collects one test's screenshots and log under e2e/artifacts/<test>/.
type artifacts struct {
	dir   string
	mu    sync.Mutex
	log   *os.File
	start time.Time
}

func newArtifacts(t *testing.T) *artifacts {
	t.Helper()
	dir := filepath.Join("artifacts", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "log.txt"))
	if err != nil {
		t.Fatal(err)
	}
	a := &artifacts{dir: dir, log: f, start: time.Now()}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.log.Close()
	})
	return a
}

// Write makes artifacts the io.Writer of the app's logger.
func (a *artifacts) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.Write(p)
}

func (a *artifacts) logf(format string, args ...any) {
	fmt.Fprintf(a, "%8.3fs test: %s\n", time.Since(a.start).Seconds(), fmt.Sprintf(format, args...))
}

// runApp runs callbox (package app, the real assembly) until stop, which
// is graceful (as SIGTERM), idempotent, and also run at the test's end.
func runApp(t *testing.T, cfg config.Config, logger *slog.Logger) (a *app.App, stop func()) {
	t.Helper()
	a, err := app.New(cfg, logger)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	return a, testutil.Run(t, "app.Run", 20*time.Second, a.Run)
}

// callboxServer is a callbox running in-process for one test.
type callboxServer struct {
	*app.App
	art *artifacts
}

// startCallbox runs callbox on 127.0.0.1 with ephemeral ports and relaying
// to loopback allowed (the browsers' relay candidates are on 127.0.0.1).
func startCallbox(t *testing.T, art *artifacts, edit func(*config.Config)) *callboxServer {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.TURN.Listen = "127.0.0.1:0"
	cfg.Metrics.Listen = ""
	cfg.TURN.AllowLoopbackPeers = true
	if edit != nil {
		edit(&cfg)
	}
	a, _ := runApp(t, cfg, slog.New(slog.NewTextHandler(art, &slog.HandlerOptions{Level: slog.LevelInfo})))
	art.logf("callbox at %s, TURN udp %s tcp %s", a.HTTPURL(), a.TURN().UDPAddr(), a.TURN().TCPAddr())
	return &callboxServer{App: a, art: art}
}

// browser is one headless Chromium with one tab.
type browser struct {
	t    *testing.T
	name string
	ctx  context.Context // the tab; never give it a timeout (it would end the browser)
	art  *artifacts
	shot int
}

// startBrowsers launches one browser per name, in parallel, each on url(name).
func startBrowsers(t *testing.T, art *artifacts, url func(name string) string, names ...string) []*browser {
	t.Helper()
	return startBrowsersWith(t, art, url, nil, names...)
}

// startBrowsersWith is startBrowsers with extra allocator options per name.
func startBrowsersWith(t *testing.T, art *artifacts, url func(name string) string,
	extra map[string][]chromedp.ExecAllocatorOption, names ...string) []*browser {
	t.Helper()
	exe := requireChromium(t)
	bs := make([]*browser, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			b, err := newBrowser(t, art, exe, name, extra[name]...)
			if err == nil {
				bs[i] = b
				err = b.navigate(url(name))
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return bs
}

// newBrowser launches one Chromium; it may run on any goroutine (no t.Fatal).
func newBrowser(t *testing.T, art *artifacts, exe, name string, extra ...chromedp.ExecAllocatorOption) (*browser, error) {
	profile := t.TempDir()
	opts := append(chromiumFlags(profile), chromedp.ExecPath(exe), chromedp.WSURLReadTimeout(browserStartTimeout))
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(func(f string, a ...any) { art.logf("%s chromedp: "+f, append([]any{name}, a...)...) }))
	b := &browser{t: t, name: name, ctx: ctx, art: art}
	// Screenshots first, then the browser goes (cleanups run last-in first-out).
	var console sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		console.Wait()
	})
	t.Cleanup(func() { b.screenshot("final") })
	// Start the browser and its tab now, so the console is subscribed before
	// the page loads. No timeout on ctx here (it would end the browser):
	// WSURLReadTimeout bounds the launch.
	if err := chromedp.Do(ctx); err != nil {
		return nil, fmt.Errorf("%s: start chromium: %w", name, err)
	}
	messages := chromedp.Console(ctx)
	console.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			art.logf("%s console %s", name, m.String())
		}
	})
	return b, nil
}

func (b *browser) navigate(url string) error {
	b.art.logf("%s opens %s", b.name, url)
	ctx, cancel := context.WithTimeout(b.ctx, browserStartTimeout)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Navigate(url))
	if errors.Is(err, context.DeadlineExceeded) {
		// Chromium sometimes never reports the load as finished although the
		// page runs (seen with denied media permissions): trust the document.
		if state, err2 := evalJS[string](b, `document.readyState`); err2 == nil && state != "loading" {
			b.art.logf("%s: load not reported after %v, document is %s: going on", b.name, browserStartTimeout, state)
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("%s: open %s: %w", b.name, url, err)
	}
	return nil
}

// evalJS evaluates js (awaiting a promise) and decodes its JSON value into T.
func evalJS[T any](b *browser, js string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// mustEvalJS is evalJS that fails the test.
func mustEvalJS[T any](b *browser, js string) T {
	b.t.Helper()
	v, err := evalJS[T](b, js)
	if err != nil {
		b.t.Fatalf("%s: eval %s: %v", b.name, js, err)
	}
	return v
}

// do runs actions with the action timeout and fails the test on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.art.logf("%s: %s", b.name, what)
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %s: %v", b.name, what, err)
	}
}

// waitUntil polls check every 250 ms until it reports done, or fails after timeout.
// check returns a description of the current state for the failure message.
func waitUntil(t *testing.T, what string, timeout time.Duration, check func() (bool, string, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state, err := check()
		if err == nil && ok {
			return
		}
		if err != nil {
			state = err.Error()
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// screenshot saves a PNG of the page as <peer>-<n>-<label>.png.
func (b *browser) screenshot(label string) {
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG, whole page
	if err != nil {
		b.art.logf("%s: screenshot %s: %v", b.name, label, err)
		return
	}
	b.shot++
	name := filepath.Join(b.art.dir, fmt.Sprintf("%s-%d-%s.png", b.name, b.shot, label))
	if err := os.WriteFile(name, png, 0o644); err != nil {
		b.art.logf("%s: screenshot %s: %v", b.name, label, err)
	}
}

// peerFacts is one entry of window.callbox.peers() (web/static/js/room.js).
type peerFacts struct {
	ID                  string  `json:"id"`
	Name                string  `json:"name"`
	ConnectionState     string  `json:"connectionState"`
	LocalCandidateType  string  `json:"localCandidateType"`
	RemoteCandidateType string  `json:"remoteCandidateType"`
	Protocol            string  `json:"protocol"`
	RelayProtocol       string  `json:"relayProtocol"`
	LocalCandidateURL   string  `json:"localCandidateUrl"`
	FramesDecoded       float64 `json:"framesDecoded"`
	FrameWidth          float64 `json:"frameWidth"`
	FrameHeight         float64 `json:"frameHeight"`
	BytesReceived       float64 `json:"bytesReceived"`
	Reconnecting        bool    `json:"reconnecting"`
	Restarts            int     `json:"restarts"`
	SendingVideo        string  `json:"sendingVideo"`
	SendingWidth        float64 `json:"sendingWidth"`
	TURNUsername        string  `json:"turnUsername"`
	Media               struct {
		Mic, Cam, Screen bool
	} `json:"media"`
}

func (p peerFacts) String() string {
	j, _ := json.Marshal(p)
	return string(j)
}

// pageState is window.callbox.state().
type pageState struct {
	Phase      string `json:"phase"`
	ID         string `json:"id"`
	Signaling  string `json:"signaling"`
	Peers      int    `json:"peers"`
	Screen     bool   `json:"screen"`
	Welcomes   int    `json:"welcomes"`
	ICEUpdates int    `json:"iceUpdates"`
}

func (b *browser) peers() ([]peerFacts, error) {
	return evalJS[[]peerFacts](b, `window.callbox ? window.callbox.peers() : []`)
}

func (b *browser) state() (pageState, error) {
	return evalJS[pageState](b, `window.callbox ? window.callbox.state() : {phase: "loading"}`)
}

// waitConnected waits until b has n remote peers, all connected.
func (b *browser) waitConnected(n int) []peerFacts {
	b.t.Helper()
	var ps []peerFacts
	waitUntil(b.t, fmt.Sprintf("%s connected to %d peers", b.name, n), connectTimeout, func() (bool, string, error) {
		var err error
		ps, err = b.peers()
		if err != nil {
			return false, "", err
		}
		ok := len(ps) == n
		for _, p := range ps {
			ok = ok && p.ConnectionState == "connected"
		}
		return ok, fmt.Sprint(ps), nil
	})
	return ps
}

// waitFramesRising waits until every remote peer's decoded video frames grow
// by at least 10 over what they were when called: media is flowing now.
func (b *browser) waitFramesRising() {
	b.t.Helper()
	first, err := b.peers()
	if err != nil {
		b.t.Fatalf("%s: peers: %v", b.name, err)
	}
	base := map[string]float64{}
	for _, p := range first {
		base[p.ID] = p.FramesDecoded
	}
	waitUntil(b.t, b.name+" decoding video from every peer", connectTimeout, func() (bool, string, error) {
		ps, err := b.peers()
		if err != nil {
			return false, "", err
		}
		ok := len(ps) == len(base)
		for _, p := range ps {
			ok = ok && p.FramesDecoded >= base[p.ID]+10
		}
		return ok, fmt.Sprintf("base %v now %v", base, ps), nil
	})
}

// randomRoom is a fresh room name, so tests never share a room.
func randomRoom(prefix string) string {
	b := make([]byte, 6)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err)
	}
	return prefix + "-" + hex.EncodeToString(b)
}

// callURL is the call page of room joining at once as name, with extra query parameters.
func callURL(s *callboxServer, room, name, extra string) string {
	return s.HTTPURL() + "/r/" + room + "?name=" + name + extra
}
