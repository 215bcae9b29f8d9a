package certs

import (
	"context"
	"errors"
	"sync"

	"github.com/caddyserver/certmagic"
)

// errStopped is what certmagic's leftover jobs get from storage once Run
// has returned.
var errStopped = errors.New("certs: manager stopped")

// guardedStorage is the Manager's storage as certmagic sees it. certmagic
// runs renewals on its own package-wide job queue, which cannot be waited
// for; close waits for the storage operations in flight and refuses later
// ones, so that nothing writes to acme_storage after Run has returned.
type guardedStorage struct {
	inner certmagic.Storage

	mu     sync.RWMutex // held for reading by each operation, for writing by close
	closed bool         // guarded by mu
}

func (s *guardedStorage) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// enter starts an operation; the caller calls s.mu.RUnlock when it ends.
func (s *guardedStorage) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errStopped
	}
	return nil
}

func (s *guardedStorage) Lock(ctx context.Context, name string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.inner.Lock(ctx, name)
}

// Unlock always goes through: a lock left behind would be held until it
// goes stale, and FileStorage keeps refreshing a lock file until it is
// unlocked.
func (s *guardedStorage) Unlock(ctx context.Context, name string) error {
	return s.inner.Unlock(ctx, name)
}

func (s *guardedStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.inner.Store(ctx, key, value)
}

func (s *guardedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.inner.Load(ctx, key)
}

func (s *guardedStorage) Delete(ctx context.Context, key string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return s.inner.Delete(ctx, key)
}

func (s *guardedStorage) Exists(ctx context.Context, key string) bool {
	if s.enter() != nil {
		return false
	}
	defer s.mu.RUnlock()
	return s.inner.Exists(ctx, key)
}

func (s *guardedStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.inner.List(ctx, path, recursive)
}

func (s *guardedStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.enter(); err != nil {
		return certmagic.KeyInfo{}, err
	}
	defer s.mu.RUnlock()
	return s.inner.Stat(ctx, key)
}
