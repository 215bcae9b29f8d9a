package certs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"
)

// After close, certmagic's leftover jobs can neither read nor write, but a
// lock they hold can still be released.
func TestGuardedStorage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := &guardedStorage{inner: &certmagic.FileStorage{Path: dir}}
	if err := s.Store(ctx, "certificates/a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "renew_a"); err != nil {
		t.Fatal(err)
	}
	s.close()

	ops := []struct {
		name string
		op   func() error
	}{
		{"store", func() error { return s.Store(ctx, "certificates/b", []byte("y")) }},
		{"load", func() error { _, err := s.Load(ctx, "certificates/a"); return err }},
		{"delete", func() error { return s.Delete(ctx, "certificates/a") }},
		{"list", func() error { _, err := s.List(ctx, "certificates", true); return err }},
		{"stat", func() error { _, err := s.Stat(ctx, "certificates/a"); return err }},
		{"lock", func() error { return s.Lock(ctx, "renew_b") }},
	}
	for _, tt := range ops {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, errStopped) {
				t.Errorf("%s after close: %v, want errStopped", tt.name, err)
			}
		})
	}
	if s.Exists(ctx, "certificates/a") {
		t.Error("Exists after close reports true")
	}
	if _, err := os.Stat(filepath.Join(dir, "certificates", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a store after close reached the disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "certificates", "a")); err != nil {
		t.Errorf("a delete after close reached the disk: %v", err)
	}
	lockFile := filepath.Join(dir, "locks", "renew_a.lock")
	if _, err := os.Stat(lockFile); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	if err := s.Unlock(ctx, "renew_a"); err != nil {
		t.Errorf("Unlock after close: %v", err)
	}
	if _, err := os.Stat(lockFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file still there after Unlock: %v", err)
	}
}
