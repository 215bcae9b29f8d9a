// Package natstest runs real NATS servers in-process for tests: one, or
// several clustered, on 127.0.0.1, each with JetStream in a temp folder.
package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is one in-process NATS server.
type Server struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
}

// Start runs n NATS servers clustered on 127.0.0.1 and waits until
// JetStream answers. A JetStream cluster needs its routes configured before
// it starts, so the cluster ports are taken from the kernel (port 0) and
// handed back just before the servers bind them. NATS_LOG=1 shows their logs.
func Start(t testing.TB, n int) []*Server {
	t.Helper()
	return StartWith(t, n, nil)
}

// StartWith is Start with edit applied to each server's options (users,
// TLS) before it starts.
func StartWith(t testing.TB, n int, edit func(*server.Options)) []*Server {
	t.Helper()
	var routes []string
	var ports []int
	if n > 1 {
		for range n {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
			routes = append(routes, "nats://"+ln.Addr().String())
			ln.Close()
		}
	}
	suffix := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	var out []*Server
	for i := range n {
		s := &Server{t: t, opts: &server.Options{
			ServerName: "callbox-test-" + strconv.Itoa(i) + "-" + suffix,
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      os.Getenv("NATS_LOG") == "",
			NoSigs:     true,
		}}
		if n > 1 {
			s.opts.Cluster = server.ClusterOpts{Name: "callbox-test-" + suffix, Host: "127.0.0.1", Port: ports[i]}
			s.opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		if edit != nil {
			edit(s.opts)
		}
		s.Restart()
		// Restarts keep the port: clients reconnect to the same URL.
		s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
		out = append(out, s)
		t.Cleanup(s.Stop)
	}
	waitJetStream(t, out[0].URL(), out[0].opts.Username, out[0].opts.Password)
	return out
}

// Restart starts the server again after Stop, on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	srv, err := server.NewServer(s.opts)
	if err != nil {
		s.t.Fatalf("nats: %v", err)
	}
	if os.Getenv("NATS_LOG") != "" {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("nats: not ready in 10s")
	}
	s.srv = srv
}

// Stop shuts the server down; its clients see the connection drop.
func (s *Server) Stop() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// URL is the client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port) }

// waitJetStream waits until a stream can be created: a clustered
// JetStream elects its meta leader first.
func waitJetStream(t testing.TB, url, user, password string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, password))
	if err != nil {
		t.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "PROBE")
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats: jetstream not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
