package certs

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/callbox/callbox/config"
)

// BenchmarkHandshake is a full TLS 1.3 handshake over an in-memory pipe
// with the Manager's config: the cost of a new HTTPS or turns: connection,
// certificate lookup included.
func BenchmarkHandshake(b *testing.B) {
	for _, mode := range []string{"files", "acme"} {
		b.Run(mode, func(b *testing.B) {
			m := benchManager(b, mode)
			serverCfg := m.TLSConfig()
			clientCfg := &tls.Config{ServerName: "bench.callbox.test", InsecureSkipVerify: true}
			b.ReportAllocs()
			for b.Loop() {
				c, s := net.Pipe()
				errc := make(chan error, 1)
				go func() {
					srv := tls.Server(s, serverCfg)
					errc <- srv.Handshake()
					s.Close()
				}()
				cli := tls.Client(c, clientCfg)
				if err := cli.Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkGetCertificate is the lookup alone, as each handshake does it.
func BenchmarkGetCertificate(b *testing.B) {
	for _, mode := range []string{"files", "acme"} {
		b.Run(mode, func(b *testing.B) {
			get := benchManager(b, mode).TLSConfig().GetCertificate
			hello := &tls.ClientHelloInfo{ServerName: "bench.callbox.test", Conn: dummyConn{}}
			b.ReportAllocs()
			for b.Loop() {
				if c, err := get(hello); err != nil || c == nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchManager serves a self-signed pair from files, or from certmagic's
// cache as an ACME certificate would be (without a CA).
func benchManager(b *testing.B, mode string) *Manager {
	dir := b.TempDir()
	certFile, keyFile, _ := writePair(b, dir, "bench.callbox.test")
	if mode == "files" {
		m, err := New(config.TLS{CertFile: certFile, KeyFile: keyFile}, nil)
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	m, err := New(config.TLS{ACMEDomains: []string{"bench.callbox.test"}, ACMECA: config.LetsEncrypt, ACMEStorage: dir}, nil)
	if err != nil {
		b.Fatal(err)
	}
	cache, magic := m.acme.newMagic()
	b.Cleanup(cache.Stop)
	pair, err := loadPair(certFile, keyFile)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := magic.CacheUnmanagedTLSCertificate(context.Background(), *pair, nil); err != nil {
		b.Fatal(err)
	}
	m.acme.magic.Store(magic)
	return m
}

type dummyConn struct{ net.Conn }

func (dummyConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }
func (dummyConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
