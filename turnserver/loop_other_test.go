//go:build !linux || callbox_portable

package turnserver

// size is how many sockets the loop was given (closed ones included).
func (lp *dataLoop) size() int { return int(lp.nextID.Load()) }
