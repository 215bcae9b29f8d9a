package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// label is how a status reads in the text report: failures shout.
func (s Status) label() string {
	if s == Fail {
		return "FAIL"
	}
	return string(s)
}

// WriteText renders the report for people: one line per check, advice
// indented under it, and a summary line.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "callbox check %s\n", r.URL)
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	counts := map[Status]int{}
	for _, c := range r.Checks {
		counts[c.Status]++
		fmt.Fprintf(&b, "  %-4s  %-*s  %s\n", c.Status.label(), width, c.Name, oneLine(c.Detail))
		if c.Advice != "" {
			fmt.Fprintf(&b, "        %-*s  → %s\n", width, "", oneLine(c.Advice))
		}
	}
	switch {
	case counts[Fail] > 0:
		fmt.Fprintf(&b, "%s, %s: calls through this server will fail for some or all people\n", plural(counts[Fail], "failure"), plural(counts[Warn], "warning"))
	case counts[Warn] > 0:
		fmt.Fprintf(&b, "no failures, %s\n", plural(counts[Warn], "warning"))
	default:
		fmt.Fprintln(&b, "all checks passed")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON renders the report for scripts, with "ok" false when a check failed.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		OK bool `json:"ok"`
		Report
	}{!r.Failed(), r})
}

// oneLine keeps a server-supplied reason from breaking the layout.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
