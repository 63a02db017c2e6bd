package specrules

import (
	"fmt"
	"strconv"
	"strings"
)

// signalNumbers are the Linux signal numbers (the same on amd64 and
// arm64, the platforms shoal runs on) by name without "SIG". The real-time
// signals follow glibc's numbering, as docker does: RTMIN is 34 (the
// kernel's 32 and 33 are glibc's own), RTMAX is 64.
var signalNumbers = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
	"FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
	"TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
	"TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
	"IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}

const (
	sigRTMin  = 34
	sigRTMax  = 64
	maxSignal = 64
)

// DefaultStopSignal is sent to stop a container when neither the spec nor
// the image names one.
const DefaultStopSignal = "SIGTERM"

// ParseSignal returns the number of a signal given as "SIGTERM", "term",
// "15", "RTMIN+3" or "SIGRTMAX-1". It is the one table the Control API
// validates stop signals with and the agent sends them by.
func ParseSignal(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("empty signal")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > maxSignal {
			return 0, fmt.Errorf("signal %d out of range 1-%d", n, maxSignal)
		}
		return n, nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, ok := signalNumbers[name]; ok {
		return n, nil
	}
	for _, rt := range []struct {
		prefix string
		base   int
		sign   int
	}{{"RTMIN", sigRTMin, 1}, {"RTMAX", sigRTMax, -1}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		if rest == "" {
			return rt.base, nil
		}
		off, err := strconv.Atoi(rest)
		if err == nil && (rest[0] == '+') == (rt.sign > 0) && (rest[0] == '+' || rest[0] == '-') {
			if n := rt.base + off; n >= sigRTMin && n <= sigRTMax {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
