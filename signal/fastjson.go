package signal

import "encoding/json"

// decodeSignal is decode's fast path for the message every call sends most:
// a signal whose keys are exactly type, to and payload (each once, in any
// order) and whose type and to are strings of printable ASCII without
// escapes. It validates the payload as it skips it, as json.Unmarshal
// would, without reflection. ok is false for anything else, which then
// takes json.Unmarshal and its error messages; FuzzDecodeSignal checks that
// whatever it accepts, json.Unmarshal decodes the same.
func decodeSignal(data []byte, out *inMsg) (ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i++
	var seen uint8
	for {
		key, j, ok := plainString(data, skipSpace(data, i))
		if !ok {
			return false
		}
		i = skipSpace(data, j)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipSpace(data, i+1)
		var bit uint8
		switch string(key) {
		case "type":
			bit = 1
			var v []byte
			if v, i, ok = plainString(data, i); !ok || string(v) != "signal" {
				return false
			}
			out.Type = "signal"
		case "to":
			bit = 2
			var v []byte
			if v, i, ok = plainString(data, i); !ok {
				return false
			}
			out.To = string(v)
		case "payload":
			bit = 4
			start := i
			if i, ok = skipValue(data, i, 0); !ok {
				return false
			}
			// No copy: the payload aliases the pooled read buffer, which
			// outlives handle, and relay copies it into the outgoing frame.
			out.Payload = json.RawMessage(data[start:i:i])
		default:
			return false
		}
		if seen&bit != 0 {
			return false // a repeated key: json.Unmarshal's rules apply
		}
		seen |= bit
		i = skipSpace(data, i)
		if i >= len(data) {
			return false
		}
		if data[i] == '}' {
			i++
			break
		}
		if data[i] != ',' {
			return false
		}
		i++
	}
	if skipSpace(data, i) != len(data) || seen != 7 || out.To == "" || string(out.Payload) == "null" {
		return false
	}
	return true
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a string of printable ASCII without escapes at d[i];
// j is past its closing quote.
func plainString(d []byte, i int) (s []byte, j int, ok bool) {
	if i >= len(d) || d[i] != '"' {
		return nil, 0, false
	}
	for j = i + 1; j < len(d); j++ {
		switch c := d[j]; {
		case c == '"':
			return d[i+1 : j], j + 1, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// maxFastDepth bounds skipValue's recursion; deeper payloads take
// json.Unmarshal (whose own limit is 10,000).
const maxFastDepth = 64

// skipValue returns the end of the JSON value at d[i], checking its syntax.
func skipValue(d []byte, i, depth int) (int, bool) {
	if i >= len(d) || depth > maxFastDepth {
		return 0, false
	}
	switch c := d[i]; {
	case c == '{':
		i = skipSpace(d, i+1)
		if i < len(d) && d[i] == '}' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = skipString(d, skipSpace(d, i)); !ok {
				return 0, false
			}
			if i = skipSpace(d, i); i >= len(d) || d[i] != ':' {
				return 0, false
			}
			if i, ok = skipValue(d, skipSpace(d, i+1), depth+1); !ok {
				return 0, false
			}
			if i = skipSpace(d, i); i >= len(d) {
				return 0, false
			}
			if d[i] == '}' {
				return i + 1, true
			}
			if d[i] != ',' {
				return 0, false
			}
			i++
		}
	case c == '[':
		i = skipSpace(d, i+1)
		if i < len(d) && d[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = skipValue(d, skipSpace(d, i), depth+1); !ok {
				return 0, false
			}
			if i = skipSpace(d, i); i >= len(d) {
				return 0, false
			}
			if d[i] == ']' {
				return i + 1, true
			}
			if d[i] != ',' {
				return 0, false
			}
			i++
		}
	case c == '"':
		return skipString(d, i)
	case c == 't':
		return skipLiteral(d, i, "true")
	case c == 'f':
		return skipLiteral(d, i, "false")
	case c == 'n':
		return skipLiteral(d, i, "null")
	default:
		return skipNumber(d, i)
	}
}

func skipLiteral(d []byte, i int, lit string) (int, bool) {
	if len(d)-i < len(lit) || string(d[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// skipString skips a JSON string: escapes checked, control characters
// refused, other bytes taken as they are (as encoding/json does).
func skipString(d []byte, i int) (int, bool) {
	if i >= len(d) || d[i] != '"' {
		return 0, false
	}
	for i++; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			if i++; i >= len(d) {
				return 0, false
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(d)-i < 5 {
					return 0, false
				}
				for _, h := range d[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return 0, false
					}
				}
				i += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// skipNumber skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(d []byte, i int) (int, bool) {
	digits := func(i int) int {
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		return i
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(d) && d[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}
