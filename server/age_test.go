package server

import (
	"strings"
	"testing"
	"time"
)

func TestParseAge(t *testing.T) {
	day := 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"30d": 30 * day, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute,
		"0": 0, "": 0, " 7d ": 7 * day, "0d": 0, "100000d": 100_000 * day,
	} {
		got, err := ParseAge(in)
		if err != nil || time.Duration(got) != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, time.Duration(got), err, want)
		}
	}
	for in, says := range map[string]string{
		"-1d": "whole number of days", "1.5d": "whole number of days", "d": "whole number of days",
		"30": "an age like", "1w": "an age like", "-5m": "negative", "1d-1h": "negative",
		"100001d": "at most 100000d", "1d\x00": "an age like",
	} {
		if _, err := ParseAge(in); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("ParseAge(%q): %v, want an error saying %q", in, err, says)
		}
	}
}

func TestAgeString(t *testing.T) {
	for in, want := range map[string]string{"30d": "30d", "1d12h": "1d12h0m0s", "36h": "1d12h0m0s", "90m": "1h30m0s", "0": "0"} {
		a, err := ParseAge(in)
		if err != nil {
			t.Fatal(err)
		}
		if a.String() != want {
			t.Errorf("ParseAge(%q).String() = %q, want %q", in, a.String(), want)
		}
		if back, err := ParseAge(a.String()); err != nil || back != a {
			t.Errorf("ParseAge(%q) does not read back: %v, %v", a.String(), back, err)
		}
	}
}

func TestRetentionFromEnv(t *testing.T) {
	t.Setenv("CASARE_RETAIN_JOBS", "30d")
	t.Setenv("CASARE_RETAIN_LOGS", "7d")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	keep := cfg.Retention()
	if keep.Jobs != 30*24*time.Hour || keep.Logs != 7*24*time.Hour || keep.Artifacts != 0 {
		t.Errorf("retention from the environment = %+v", keep)
	}
	t.Setenv("CASARE_RETAIN_ARTIFACTS", "soon")
	if _, err := ConfigFromEnv(); err == nil || !strings.Contains(err.Error(), "CASARE_RETAIN_ARTIFACTS") {
		t.Errorf("CASARE_RETAIN_ARTIFACTS=soon: %v, want an error naming it", err)
	}
}
