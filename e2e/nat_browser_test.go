//go:build linux

package e2e

// Chromium inside a client's namespace. chromedp talks to the browser over
// the DevTools pipe (file descriptors 3 and 4, its default), which `ip
// netns exec` passes through: no debugging port, so no second interface
// in the client's namespace on which Chromium would gather candidates
// that bypass the NAT.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// nsBrowserOptions are the options of a browser in namespace ns: the
// launcher runs Chromium there, the self-signed certificate of callbox's
// HTTPS (and of its TURN over TLS) is accepted, and loopback does not
// carry ICE (each namespace has its own, useless to the other side).
//
// The launcher is a committed script, not one written per test: a file
// written while parallel tests fork browsers can be held open for writing
// by a child between its fork and exec, and exec then fails with "text
// file busy" (ETXTBSY, Go issue 22315), as it did once in CI.
func nsBrowserOptions(t *testing.T, exe, ns string) []chromedp.ExecAllocatorOption {
	t.Helper()
	launcher, err := filepath.Abs(filepath.Join("testdata", "chromium-in-netns"))
	if err != nil {
		t.Fatal(err)
	}
	return []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(launcher),
		chromedp.Env("CALLBOX_NETNS="+ns, "CALLBOX_CHROMIUM="+exe),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("allow-loopback-in-peer-connection", false),
	}
}

// nsBrowsers launches one browser per client, in parallel, without opening
// any page yet.
func nsBrowsers(t *testing.T, art *artifacts, names []string, clients []*natClient) []*browser {
	t.Helper()
	exe := requireChromium(t)
	bs := make([]*browser, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		opts := nsBrowserOptions(t, exe, c.ns)
		wg.Go(func() { bs[i], errs[i] = newBrowser(t, art, exe, names[i], opts...) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return bs
}

// openAll navigates every browser to its URL at once.
func openAll(t *testing.T, bs []*browser, urls []string) {
	t.Helper()
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() { errs[i] = b.navigate(urls[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// waitAllConnected polls every browser until each has its one peer
// connected, and returns how long that took from since.
func waitAllConnected(t *testing.T, bs []*browser, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	waitUntil(t, "every browser connected to its peer", timeout, func() (bool, string, error) {
		var states []string
		ok := true
		for _, b := range bs {
			ps, err := b.peers()
			if err != nil {
				return false, "", err
			}
			ok = ok && len(ps) == 1 && ps[0].ConnectionState == "connected"
			states = append(states, fmt.Sprintf("%s %v", b.name, ps))
		}
		took = time.Since(since)
		return ok, strings.Join(states, "; "), nil
	})
	return took
}
