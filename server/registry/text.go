package registry

import "strings"

// CleanText makes text from outside the control plane's API, such as what
// robots send, fit for a text column: a NUL byte, which neither PostgreSQL
// nor SQLite holds in text, and every invalid UTF-8 sequence become U+FFFD.
// Everything else is kept, so a line is marked rather than dropped. The
// registry applies it to the free text it writes for jobs (log lines,
// status messages, event reasons, the current step) and robots (version,
// OS, hostname).
func CleanText(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
