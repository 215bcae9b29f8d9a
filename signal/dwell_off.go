//go:build !signaldwell

package signal

// dwellMark is empty in a normal build: the dwell histogram (dwell_on.go)
// exists only in a build with the signaldwell tag.
type dwellMark struct{}

func (*dwellMark) mark()    {}
func (*dwellMark) relayed() {}
func (h *Hub) reportDwell() {}
