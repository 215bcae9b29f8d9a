package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

// fileStamp is what the poller compares to tell that a file changed. Size
// and inode catch a replacement within the mtime's granularity (a rename
// over the old file, as certbot and cp --remove-destination do).
type fileStamp struct {
	cert, key fileState
}

type fileState struct {
	modTime time.Time
	size    int64
	ino     uint64
	missing bool
}

func statFiles(certFile, keyFile string) fileStamp {
	return fileStamp{cert: statFile(certFile), key: statFile(keyFile)}
}

func statFile(name string) fileState {
	fi, err := os.Stat(name)
	if err != nil {
		return fileState{missing: true}
	}
	return fileState{modTime: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
}

// loadPair reads a PEM certificate chain and its key. Its errors name the
// file at fault, which tls.LoadX509KeyPair's do not.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: key_file: %w", err)
	}
	if err := checkChain(certPEM); err != nil {
		return nil, fmt.Errorf("certs: cert_file %s: %w", certFile, err)
	}
	if block, _ := pem.Decode(keyPEM); block == nil {
		return nil, fmt.Errorf("certs: key_file %s: no PEM data", keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The chain parsed above, so the fault is the key or the match.
		return nil, fmt.Errorf("certs: key_file %s (for cert_file %s): %w", keyFile, certFile, err)
	}
	return &pair, nil
}

// checkChain parses every CERTIFICATE block, so a truncated chain is an
// error here rather than a handshake failure later.
func checkChain(data []byte) error {
	n, sawKey := 0, false
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		// Other blocks are skipped as tls.X509KeyPair does: a combined
		// key+chain file may serve as both cert_file and key_file.
		if block.Type != "CERTIFICATE" {
			sawKey = sawKey || strings.HasSuffix(block.Type, "PRIVATE KEY")
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	switch {
	case n == 0 && sawKey:
		return fmt.Errorf("holds a private key but no certificate (cert_file and key_file swapped?)")
	case n == 0:
		return fmt.Errorf("no CERTIFICATE PEM block")
	}
	return nil
}
