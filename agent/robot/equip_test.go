package robot

import (
	"io"
	"log/slog"
	"slices"
	"testing"
)

func TestRobotAdvertisesWhatItCanRun(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		a     Abilities
		extra []string
		want  []string
	}{
		{"a Chromium and shell allowed", Abilities{AllowShell: true}, []string{"sap"}, []string{"browser", "sap", "shell"}},
		{"shell named but not allowed", Abilities{}, []string{"shell", "sap"}, []string{"browser", "sap"}},
		{"browser named, Chromium missing", Abilities{Chromium: "/nonexistent/chromium"}, []string{"browser"}, nil},
		{"browser turned off", Abilities{NoBrowser: true, AllowShell: true}, nil, []string{"shell"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cat, caps := equip(tc.a, tc.extra, quiet)
			if !slices.Equal(caps, tc.want) {
				t.Fatalf("capabilities %v, want %v", caps, tc.want)
			}
			// The catalogue knows every step either way, so that a
			// workflow is judged the same on every robot; the capabilities
			// decide what runs.
			for _, name := range []string{"browser.navigate", "shell.run", "log"} {
				if _, err := cat.Lookup(name); err != nil {
					t.Errorf("catalogue: %v", err)
				}
			}
		})
	}
}
