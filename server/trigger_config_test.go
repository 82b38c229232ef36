package server

import (
	"strings"
	"testing"
)

// The trigger flags come from the environment and Check names the one out
// of bounds.
func TestTriggerConfig(t *testing.T) {
	t.Setenv("CASARE_TRIGGER_RATE", "2.5")
	t.Setenv("CASARE_TRIGGER_MAX_BODY_BYTES", "65536")
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil || cfg.TriggerRate != 2.5 || cfg.TriggerMaxBodyBytes != 65536 {
		t.Fatalf("config %g, %d, %v", cfg.TriggerRate, cfg.TriggerMaxBodyBytes, err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"RateZero", func(c *Config) { c.TriggerRate = 0 }, "--trigger-rate"},
		{"RateHuge", func(c *Config) { c.TriggerRate = 1e9 }, "--trigger-rate"},
		{"BodyTiny", func(c *Config) { c.TriggerMaxBodyBytes = 10 }, "--trigger-max-body-bytes"},
		{"BodyOverTheServersLimit", func(c *Config) { c.TriggerMaxBodyBytes = int64(c.MaxRequestBytes) * 4 }, "--trigger-max-body-bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			tt.change(&c)
			if err := c.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want %s named", err, tt.want)
			}
		})
	}
}

// Left at its default, the trigger body limit follows a lowered
// --max-request-bytes instead of refusing to start.
func TestTriggerBodyLimitFollowsTheRequestLimit(t *testing.T) {
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.TriggerBodyLimit(); got != 1<<20 {
		t.Errorf("default limit %d, want 1 MiB", got)
	}
	cfg.MaxRequestBytes = 64 << 10
	if err := cfg.Check(); err != nil {
		t.Fatalf("Check with a lowered --max-request-bytes: %v", err)
	}
	if got := cfg.TriggerBodyLimit(); got != 64<<10 {
		t.Errorf("limit %d, want --max-request-bytes' 65536", got)
	}
	cfg.TriggerMaxBodyBytes = 100 << 10
	if got := cfg.TriggerBodyLimit(); got != 100<<10 {
		t.Errorf("limit %d, want the flag's 102400", got)
	}
}
