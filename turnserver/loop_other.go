//go:build !linux

package turnserver

// Without epoll each relay keeps its own reader (see loop_linux.go).
type epollSet struct{}

func (*epollSet) close() error           { return nil }
func (l *udpListener) initEpoll() error  { return nil }
func (l *udpListener) serveEpoll() error { return nil }
func (l *udpListener) own(*relayConn)    {}
func (l *udpListener) disown(*relayConn) {}
