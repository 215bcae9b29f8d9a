//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The bounds of the NAT tests: generous, because four Chromiums and a
// race-built callbox share two cores (at a load average of 76, a call took
// 80 s to connect). The times measured are what docs/connectivity.md
// reports; these only catch a call that does not connect at all.
const (
	natConnectTimeout = 2 * time.Minute // pages opened to every peer connection connected
	recoverTimeout    = 3 * time.Minute // a fault to video flowing again (97 s seen at load 28)
)

// natCall is one call of the fault test: two browsers, each behind a router.
type natCall struct {
	name    string
	clients []*natClient
	bs      []*browser
}

// Faults in the test network, on two calls at once: one direct (both
// behind port-restricted NATs) and one relayed (both behind symmetric
// NATs). A client's uplink is cut for 10 s, then callbox is restarted;
// after each, both calls must be connected again with video flowing both
// ways, and while callbox is down the direct call's video must go on.
func TestNATFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute or more (a 10 s cut, a restart, four browsers); run without -short")
	}
	art := newArtifacts(t)
	n := newNatNet(t)
	cb := startNatCallbox(t, n, art)

	calls := []*natCall{{name: "direct"}, {name: "relayed"}}
	kinds := [][]natKind{{natPortRestr, natPortRestr}, {natSymmetric, natSymmetric}}
	var names []string
	var clients []*natClient
	for i, call := range calls {
		for j, k := range kinds[i] {
			c, err := n.addClient(k)
			if err != nil {
				t.Fatal(err)
			}
			call.clients = append(call.clients, c)
			clients = append(clients, c)
			names = append(names, fmt.Sprintf("%s-%s", call.name, []string{"ada", "grace"}[j]))
		}
	}
	bs := nsBrowsers(t, art, names, clients)
	var urls []string
	for i, call := range calls {
		call.bs = bs[2*i : 2*i+2]
		room := randomRoom("fault-" + call.name)
		for _, b := range call.bs {
			urls = append(urls, cb.pageURL(room, b.name))
		}
	}
	openAll(t, bs, urls)
	waitAllConnected(t, bs, time.Now(), natConnectTimeout)
	for _, b := range bs {
		b.waitFramesRising()
	}
	for i, call := range calls {
		facts, note, problems := settledPath(t, call.bs, kinds[i], []pathWant{wantDirect, wantRelay}[i])
		for j, b := range call.bs {
			art.logf("%s before the faults: %v %s", b.name, facts[j], note)
		}
		if len(problems) > 0 {
			t.Fatal(strings.Join(problems, "; "))
		}
	}
	var report strings.Builder

	t.Run("uplink cut", func(t *testing.T) {
		// Both calls' first clients lose their uplink; the two cuts
		// start within one command of each other.
		var cut, restored time.Time
		for _, call := range calls {
			if err := call.clients[0].setUplink(false); err != nil {
				t.Fatal(err)
			}
			if cut.IsZero() {
				cut = time.Now()
			}
		}
		art.logf("uplinks of %s and %s cut", calls[0].bs[0].name, calls[1].bs[0].name)
		time.Sleep(time.Until(cut.Add(10 * time.Second)))
		for _, call := range calls {
			if err := call.clients[0].setUplink(true); err != nil {
				t.Fatal(err)
			}
			if restored.IsZero() {
				restored = time.Now()
			}
		}
		art.logf("uplinks restored after %v", restored.Sub(cut))
		took := waitRecovered(t, art, calls, restored, cut, nil)
		fmt.Fprintf(&report, "| uplink of one client cut (%.1f s) | %s | %s |\n",
			restored.Sub(cut).Seconds(), recovery(took[0]), recovery(took[1]))
	})

	t.Run("callbox restart", func(t *testing.T) {
		welcomes := map[*browser]int{}
		for _, b := range bs {
			st, err := b.state()
			if err != nil {
				t.Fatal(err)
			}
			welcomes[b] = st.Welcomes
		}
		base := frames(t, calls[0])
		stopped := time.Now()
		if err := cb.stop(); err != nil {
			t.Fatal(err)
		}
		down := time.Since(stopped)
		// The direct call needs no server: its video goes on while callbox
		// is down, 10 frames each at least. That is one second of the fake
		// camera's 10 frames/s, but right after the uplink cut above the
		// sender's rate may still be climbing back (8 frames in 3 s seen), so
		// callbox stays down for two seconds and then until the frames are
		// there, 10 s at most: a call that stopped gets nowhere near.
		time.Sleep(2 * time.Second)
		after := frames(t, calls[0])
		for deadline := stopped.Add(10 * time.Second); time.Now().Before(deadline) && !allRose(base, after, 10); {
			time.Sleep(200 * time.Millisecond)
			after = frames(t, calls[0])
		}
		for i, b := range calls[0].bs {
			art.logf("%s decoded %v frames while callbox stopped and was down", b.name, after[i]-base[i])
			if after[i] < base[i]+10 {
				t.Errorf("%s: the direct call's video stopped with callbox (%v frames, then %v %v after the stop)", b.name, base[i], after[i], time.Since(stopped).Round(time.Millisecond))
			}
		}
		if err := cb.start(); err != nil {
			t.Fatal(err)
		}
		back := time.Since(stopped)
		art.logf("callbox stopped in %v, back after %v", down, back)
		// Recovered means back on the hub too (a welcome from the new
		// process), so whatever the pages do on rejoining is measured.
		took := waitRecovered(t, art, calls, stopped, time.Time{}, welcomes)
		// The pages resume their sessions on the new process (resume
		// tokens are signed with a key it derives again), so the direct
		// call keeps its connection through the restart.
		if took[0].rebuilt {
			t.Errorf("the direct call was rebuilt after the restart; it should keep its connection")
		}
		fmt.Fprintf(&report, "| callbox restarted: SIGTERM (%.1f s to stop), started again, serving %.1f s after the SIGTERM | %s | %s |\n",
			down.Seconds(), back.Seconds(), recovery(took[0]), recovery(took[1]))
	})

	doc := "| fault | direct call (port-restricted both sides) | relayed call (symmetric both sides) |\n| --- | --- | --- |\n" + report.String()
	if err := os.WriteFile(filepath.Join(art.dir, "faults.md"), []byte(doc), 0o644); err != nil {
		t.Error(err)
	}
	if os.Getenv(writeConnectivityEnv) == "1" && !t.Failed() {
		if err := replaceSection(filepath.Join("..", "docs", "connectivity.md"), "faults", doc); err != nil {
			t.Error(err)
		}
	}
}

// allRose reports whether every count in after is at least n above its
// counterpart in base.
func allRose(base, after []float64, n float64) bool {
	for i := range base {
		if after[i] < base[i]+n {
			return false
		}
	}
	return true
}

// frames is the video frames each browser of call has decoded so far.
func frames(t *testing.T, call *natCall) []float64 {
	t.Helper()
	var out []float64
	for _, b := range call.bs {
		ps, err := b.peers()
		if err != nil || len(ps) != 1 {
			t.Fatalf("%s: peers %v, %v", b.name, ps, err)
		}
		out = append(out, ps[0].FramesDecoded)
	}
	return out
}

// recovered is how one call came back: after how long, the longest time
// a side decoded no new frame, and whether the pages kept their
// connection or built a new one.
type recovered struct {
	took     time.Duration
	freeze   time.Duration // longest stretch without a new frame on either side (sampled)
	restarts int           // ICE restarts the pages made
	rebuilt  bool          // a new RTCPeerConnection (the page rejoined under a new id)
	pair     string
}

func recovery(r recovered) string {
	how := fmt.Sprintf("same connection, %d ICE restart(s)", r.restarts)
	if r.rebuilt {
		how = "new connection (the pages rejoined under new ids)"
	}
	return fmt.Sprintf("video both ways again after %.1f s, longest freeze %.1f s; %s; now %s",
		r.took.Seconds(), r.freeze.Seconds(), how, r.pair)
}

// watch follows one browser's video: the peer it shows (a new id is a new
// connection, counting frames from zero), its frames, and when they last grew.
type watch struct {
	id       string
	frames   float64
	base     float64 // frames of this connection when recovery began
	progress time.Time
	freeze   time.Duration
	rebuilt  bool
}

// waitRecovered waits until every browser of every call is connected with
// video rising (10 frames more than when this was called, on the
// connection it then has), and returns per call how long after since.
// Freezes are counted from frozen (when the video is known to have
// stopped), or from now when it is zero. With welcomes, each page must
// also have had a welcome more than it had then.
func waitRecovered(t *testing.T, art *artifacts, calls []*natCall, since, frozen time.Time, welcomes map[*browser]int) []recovered {
	t.Helper()
	if frozen.IsZero() {
		frozen = time.Now()
	}
	ws := map[*browser]*watch{}
	for _, call := range calls {
		for _, b := range call.bs {
			w := &watch{progress: frozen}
			if ps, err := b.peers(); err == nil && len(ps) == 1 {
				w.id, w.frames, w.base = ps[0].ID, ps[0].FramesDecoded, ps[0].FramesDecoded
			}
			ws[b] = w
		}
	}
	out := make([]recovered, len(calls))
	done := make([]bool, len(calls))
	lastLog := time.Now()
	waitUntil(t, "both calls connected with video flowing again", recoverTimeout, func() (bool, string, error) {
		var state []string
		all := true
		var now time.Time
		for i, call := range calls {
			if done[i] {
				continue
			}
			ok := true
			r := recovered{}
			for _, b := range call.bs {
				w := ws[b]
				ps, err := b.peers()
				if err != nil || len(ps) != 1 {
					ok = false
					state = append(state, fmt.Sprintf("%s: %v %v", b.name, ps, err))
					continue
				}
				p := ps[0]
				now = time.Now() // evaluations are slow on a busy machine: each browser its own time
				if p.ID != w.id {
					w.rebuilt = w.rebuilt || w.id != ""
					w.id, w.frames, w.base = p.ID, 0, 0
				}
				if p.FramesDecoded < w.frames {
					// The receiver's counter started over on the same
					// connection (a new stream after a renegotiation,
					// seen after a restart in CI): count from zero.
					w.frames, w.base = 0, 0
				}
				if p.FramesDecoded > w.frames {
					w.freeze = max(w.freeze, now.Sub(w.progress))
					w.frames, w.progress = p.FramesDecoded, now
				}
				ok = ok && p.ConnectionState == "connected" && p.FramesDecoded >= w.base+10
				if before, wait := welcomes[b]; wait {
					st, err := b.state()
					ok = ok && err == nil && st.Welcomes > before && st.Signaling == "open"
				}
				r.freeze = max(r.freeze, w.freeze, now.Sub(w.progress))
				r.rebuilt = r.rebuilt || w.rebuilt
				r.restarts += p.Restarts
				r.pair = p.LocalCandidateType + "/" + p.RemoteCandidateType
				state = append(state, fmt.Sprintf("%s: %s %s/%s frames %v (from %v) bytes %v", b.name, p.ConnectionState,
					p.LocalCandidateType, p.RemoteCandidateType, p.FramesDecoded, w.base, p.BytesReceived))
			}
			if ok {
				r.took = now.Sub(since)
				out[i], done[i] = r, true
				art.logf("%s call recovered after %v: %+v", call.name, r.took, r)
			} else {
				all = false
			}
		}
		// The way there, for a failure's post-mortem.
		if time.Since(lastLog) >= 10*time.Second && !all {
			lastLog = time.Now()
			art.logf("waiting for recovery: %s", strings.Join(state, "; "))
		}
		return all, strings.Join(state, "; "), nil
	})
	return out
}

// replaceSection replaces what lies between <!-- name --> and
// <!-- /name --> in the file at path with body.
func replaceSection(path, name, body string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	open, end := "<!-- "+name+" -->\n", "<!-- /"+name+" -->"
	s := string(data)
	i, j := strings.Index(s, open), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s…%s section", path, strings.TrimSpace(open), end)
	}
	return os.WriteFile(path, []byte(s[:i+len(open)]+body+s[j:]), 0o644)
}

// replaceSection rewrites only its section, and refuses a file without one.
func TestReplaceSection(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"fills an empty section", "a\n<!-- s -->\n<!-- /s -->\nb\n", "a\n<!-- s -->\nnew\n<!-- /s -->\nb\n", true},
		{"replaces the old body", "<!-- s -->\nold\nold\n<!-- /s -->", "<!-- s -->\nnew\n<!-- /s -->", true},
		{"leaves other sections", "<!-- t -->\nx\n<!-- /t -->\n<!-- s -->\n<!-- /s -->", "<!-- t -->\nx\n<!-- /t -->\n<!-- s -->\nnew\n<!-- /s -->", true},
		{"no section", "nothing here\n", "nothing here\n", false},
		{"end before start", "<!-- /s -->\n<!-- s -->\n", "<!-- /s -->\n<!-- s -->\n", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("%d.md", i))
			if err := os.WriteFile(path, []byte(tt.in), 0o644); err != nil {
				t.Fatal(err)
			}
			err := replaceSection(path, "s", "new\n")
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok = %v", err, tt.ok)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Errorf("file = %q, want %q", got, tt.want)
			}
		})
	}
}
