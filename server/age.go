package server

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Age is a retention period as operators write it: Go durations (12h,
// 90m) with days in front (30d, 1d12h). Zero keeps things for good.
type Age time.Duration

// ParseAge reads an age: "30d", "1d12h", "36h", or "0" for never.
func ParseAge(s string) (Age, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	var days int64
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q: want a whole number of days before d, as in 30d or 1d12h", s)
		}
		// Beyond about 290 years a time.Duration overflows.
		if n > 100_000 {
			return 0, fmt.Errorf("%q: at most 100000d", s)
		}
		days, rest = n, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("%q: want an age like 30d, 1d12h or 36h", s)
		}
		if d < 0 {
			return 0, fmt.Errorf("%q: must not be negative", s)
		}
	}
	return Age(time.Duration(days)*24*time.Hour + d), nil
}

// String writes whole days as days, the way the age was likely written.
func (a Age) String() string {
	d := time.Duration(a)
	if d == 0 {
		return "0"
	}
	day := 24 * time.Hour
	if d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	if d > day {
		return fmt.Sprintf("%dd%s", d/day, d%day)
	}
	return d.String()
}

// UnmarshalText reads the environment variable.
func (a *Age) UnmarshalText(b []byte) error {
	v, err := ParseAge(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Set reads the flag.
func (a *Age) Set(s string) error { return a.UnmarshalText([]byte(s)) }

// Type names the flag's value in --help.
func (a *Age) Type() string { return "age" }
