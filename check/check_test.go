package check

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/callbox/callbox/app"
	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
)

func testConfig() config.Config {
	cfg := config.Default()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.TURN.Listen = "127.0.0.1:0"
	cfg.TURN.AllowLoopbackPeers = true
	// Few sockets: two cores are shared with other tests.
	cfg.TURN.UDPSockets = 1
	cfg.Metrics.Listen = ""
	return cfg
}

// startApp runs a real callbox on loopback until the test ends.
func startApp(t testing.TB, cfg config.Config) *app.App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("app did not stop within 15s")
		}
	})
	return a
}

func testOptions(url string) Options {
	return Options{URL: url, Timeout: 20 * time.Second, StepTimeout: 2 * time.Second}
}

// runCheck runs the check and logs the text report, for failures to read.
func runCheck(t *testing.T, opts Options) Report {
	t.Helper()
	rep := Run(context.Background(), opts)
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Logf("\n%s", b.String())
	return rep
}

func mustGet(t *testing.T, rep Report, name string) Result {
	t.Helper()
	res, ok := rep.Get(name)
	if !ok {
		t.Fatalf("no %s check in the report", name)
	}
	return res
}

func TestHealthy(t *testing.T) {
	a := startApp(t, testConfig())
	rep := runCheck(t, testOptions(a.HTTPURL()))
	if rep.Failed() {
		t.Fatal("a healthy server failed the check")
	}
	want := map[string]Status{
		NameDNS: Skip, NameHTTPS: OK, NamePage: OK, NamePublicAddress: OK, NameWebSocket: OK, NameICE: OK,
		NameSTUN: Warn, NameTURNUDP: OK, NameTURNTCP: OK, NameTURNTLS: Skip, NameRelay: OK,
	}
	if len(rep.Checks) != len(want) {
		t.Errorf("%d checks, want %d", len(rep.Checks), len(want))
	}
	for name, st := range want {
		t.Run(name, func(t *testing.T) {
			if got := mustGet(t, rep, name); got.Status != st {
				t.Errorf("%s: %s (%s), want %s", name, got.Status, got.Detail, st)
			}
		})
	}
	if tls := mustGet(t, rep, NameTURNTLS); !strings.Contains(tls.Detail, "not offered") {
		t.Errorf("turn-tls: %q, want it to say not offered", tls.Detail)
	}
	if g := checkGoroutines(); g != "" {
		t.Errorf("goroutines of the check still running after Run returned:\n%s", g)
	}
	// The allocations the check made are released.
	deadline := time.Now().Add(5 * time.Second)
	for a.TURN().AllocationCount() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := a.TURN().AllocationCount(); n != 0 {
		t.Errorf("%d allocations left open after the check", n)
	}
}

// Each misconfiguration fails the check that should catch it, with the
// advice that fixes it.
func TestMisconfigured(t *testing.T) {
	cases := []struct {
		name    string
		cfg     func(*config.Config)
		after   func(*testing.T, *app.App) // breaks the running server
		opts    func(*Options)
		check   string
		advice  string // substring of the failing check's advice
		skipped []string
	}{
		{
			name: "wrong public_ip",
			cfg: func(c *config.Config) {
				// Clients are told to reach 127.0.0.1 while relays claim 127.0.0.2.
				c.TURN.Host = "127.0.0.1"
				c.TURN.PublicIP = "127.0.0.2"
			},
			check:  NameTURNUDP,
			advice: "turn.public_ip is probably wrong: relay address 127.0.0.2, server reachable at 127.0.0.1",
		},
		{
			name:    "TURN port closed",
			after:   func(t *testing.T, a *app.App) { a.TURN().Close() },
			check:   NameSTUN,
			advice:  "nothing listens on UDP",
			skipped: []string{NameRelay},
		},
		{
			name: "password mode without -password",
			cfg: func(c *config.Config) {
				c.Signal.Access = config.AccessPassword
				c.Signal.Password = "correct horse battery"
			},
			check:   NameWebSocket,
			advice:  "pass -password",
			skipped: []string{NameICE, NameSTUN, NameTURNUDP, NameTURNTCP, NameTURNTLS, NameRelay},
		},
		{
			name: "invite mode without an invite",
			cfg: func(c *config.Config) {
				c.Signal.Access = config.AccessInvite
				c.Signal.InviteSecret = "0123456789abcdef0123456789abcdef"
			},
			check:  NameWebSocket,
			advice: "pass an invite link",
		},
		{
			name: "plain HTTP on a public name",
			// localtest.invalid never resolves; the scheme alone decides.
			opts:   func(o *Options) { o.URL = "http://callbox.invalid" },
			check:  NameHTTPS,
			advice: "browsers hide the camera on plain HTTP: configure [tls]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			a := startApp(t, cfg)
			if tc.after != nil {
				tc.after(t, a)
			}
			opts := testOptions(a.HTTPURL())
			if tc.opts != nil {
				tc.opts(&opts)
			}
			rep := runCheck(t, opts)
			if !rep.Failed() {
				t.Fatal("the check passed a broken server")
			}
			res := mustGet(t, rep, tc.check)
			if res.Status != Fail {
				t.Fatalf("%s: %s (%s), want fail", tc.check, res.Status, res.Detail)
			}
			if !strings.Contains(res.Advice, tc.advice) {
				t.Errorf("%s advice %q, want it to contain %q", tc.check, res.Advice, tc.advice)
			}
			for _, name := range tc.skipped {
				if got := mustGet(t, rep, name); got.Status != Skip && got.Status != Fail {
					t.Errorf("%s: %s, want skip or fail", name, got.Status)
				}
			}
		})
	}
}

func TestPasswordAndCallLink(t *testing.T) {
	cfg := testConfig()
	cfg.Signal.Access = config.AccessPassword
	cfg.Signal.Password = "correct horse battery"
	a := startApp(t, cfg)
	opts := testOptions(a.HTTPURL() + "/r/standup")
	opts.Password = cfg.Signal.Password
	rep := runCheck(t, opts)
	if rep.Failed() {
		t.Fatal("check failed with the right password")
	}
	if ws := mustGet(t, rep, NameWebSocket); !strings.Contains(ws.Detail, "room standup") {
		t.Errorf("websocket: %q, want the room of the link", ws.Detail)
	}
}

// An invite link passed as the URL admits the check to its room; an
// expired one fails with its own advice.
func TestInviteLink(t *testing.T) {
	cfg := testConfig()
	cfg.Signal.Access = config.AccessInvite
	cfg.Signal.InviteSecret = "0123456789abcdef0123456789abcdef"
	a := startApp(t, cfg)
	cases := []struct {
		name    string
		expires time.Time
		status  Status
		detail  string
	}{
		{name: "valid", expires: time.Now().Add(time.Hour), status: OK, detail: "joined room standup"},
		{name: "expired", expires: time.Now().Add(-time.Hour), status: Fail, detail: "invite_expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := signal.MintInvite(cfg.Signal.InviteSecret, "standup", tc.expires)
			rep := runCheck(t, testOptions(a.HTTPURL()+"/r/standup?invite="+url.QueryEscape(token)))
			res := mustGet(t, rep, NameWebSocket)
			if res.Status != tc.status || !strings.Contains(res.Detail, tc.detail) {
				t.Errorf("websocket: %+v, want %s with %q", res, tc.status, tc.detail)
			}
			if tc.status == Fail && !strings.Contains(res.Advice, "invite link") {
				t.Errorf("advice %q, want it to ask for an invite link", res.Advice)
			}
		})
	}
}

// A TURN port where a silent peer swallows every packet: the check gives up
// within its step timeout, and says so.
func TestSilentTURNPort(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	rep := Report{}
	r := &runner{opts: Options{StepTimeout: 300 * time.Millisecond, Now: time.Now, Resolver: net.DefaultResolver}, log: slog.New(slog.DiscardHandler)}
	r.ice, _ = parseICE([]iceServer{{URLs: []string{"stun:" + silent.LocalAddr().String()}}}, 0)
	start := time.Now()
	r.checkSTUN(context.Background())
	rep = r.report
	res := mustGet(t, rep, NameSTUN)
	if res.Status != Fail || !strings.Contains(res.Detail, "timed out") || !strings.Contains(res.Advice, "firewall") {
		t.Errorf("stun: %+v, want a timeout with firewall advice", res)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s, want about the 300ms step timeout", took)
	}
}

// A server that accepts connections and never answers: the whole run ends
// at Timeout, the check that hung fails and the rest say they never ran.
func TestOutOfTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts := Options{URL: "http://" + ln.Addr().String(), Timeout: 500 * time.Millisecond, StepTimeout: 5 * time.Second}
	start := time.Now()
	rep := runCheck(t, opts)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s with a 500ms timeout", took)
	}
	if res := mustGet(t, rep, NamePage); res.Status != Fail || !strings.Contains(res.Detail, "timed out") {
		t.Errorf("page: %+v, want a timeout", res)
	}
	for _, name := range []string{NameWebSocket, NameICE, NameRelay} {
		if res := mustGet(t, rep, name); res.Status != Skip || !strings.Contains(res.Detail, "out of time") {
			t.Errorf("%s: %+v, want skipped for lack of time", name, res)
		}
	}
}

// What the server says of its own relay address (/api/info): a VPS behind
// 1:1 NAT without turn.public_ip cannot be built on loopback, so its answer
// is served here as callbox's app package writes it.
func TestPublicAddressFromInfo(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   Status
		detail string
	}{
		{name: "set", status: 200, body: `{"tls":true,"turn":{"relayAddress":"203.0.113.7","publicIpSet":true}}`, want: OK, detail: "203.0.113.7 (turn.public_ip)"},
		{name: "private without public_ip", status: 200,
			body: `{"turn":{"relayAddress":"10.0.0.5","publicIpSet":false,"addressProblem":"relay address 10.0.0.5 is private or loopback but the listener 0.0.0.0:3478 is not"}}`,
			want: Fail, detail: "10.0.0.5 is private"},
		{name: "older server", status: 404, body: "404 page not found", want: Skip, detail: "no /api/info"},
		{name: "broken", status: 200, body: "<html>", want: Warn, detail: "/api/info"},
		{name: "error", status: 500, body: "", want: Warn, detail: "500"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/info" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			tg, err := ParseTarget(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			r := &runner{target: tg, opts: Options{StepTimeout: 2 * time.Second}, log: slog.New(slog.DiscardHandler)}
			r.checkPublicAddress(context.Background())
			res := mustGet(t, r.report, NamePublicAddress)
			if res.Status != tc.want || !strings.Contains(res.Detail, tc.detail) {
				t.Errorf("got %+v, want %s with %q", res, tc.want, tc.detail)
			}
			if tc.want == Fail && !strings.Contains(res.Advice, "turn.public_ip") {
				t.Errorf("advice %q, want it to name turn.public_ip", res.Advice)
			}
		})
	}
}

// checkGoroutines returns the stacks of goroutines the check or its pion
// clients started that are still running, waiting a moment for the ones
// that are just ending.
func checkGoroutines() string {
	var leaked []string
	for range 50 {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "callbox/check.(*allocation)") || strings.Contains(g, "pion/turn/v4/internal/client") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Join(leaked, "\n\n")
}

// Where UDP gets nowhere, the relay check makes its two clients over TCP.
func TestRelayOverTCP(t *testing.T) {
	a := startApp(t, testConfig())
	cred := a.TURN().Credentials("check-test", time.Hour)
	r := &runner{opts: Options{StepTimeout: 3 * time.Second, Now: time.Now, Resolver: net.DefaultResolver}, log: slog.New(slog.DiscardHandler)}
	defer r.closeAllocations()
	var tcp []string
	for _, u := range a.TURN().TURNURIs() {
		if strings.HasSuffix(u, "transport=tcp") {
			tcp = append(tcp, u)
		}
	}
	r.ice, _ = parseICE([]iceServer{{URLs: tcp, Username: cred.Username, Credential: cred.Password}}, 0)
	r.checkTURN(context.Background(), NameTURNUDP)
	r.checkTURN(context.Background(), NameTURNTCP)
	r.checkRelay(context.Background())
	if res := mustGet(t, r.report, NameTURNUDP); res.Status != Skip {
		t.Errorf("turn-udp: %+v, want skip (not offered)", res)
	}
	if res := mustGet(t, r.report, NameRelay); res.Status != OK || !strings.Contains(res.Detail, "over TCP") {
		t.Errorf("relay: %+v, want ok over TCP", res)
	}
}
