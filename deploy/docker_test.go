package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// parseDockerfile parses a Dockerfile as BuildKit does and returns its
// stages; BuildKit's lint warnings (`docker build --check`) are errors.
func parseDockerfile(path string) ([]instructions.Stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ast, err := parser.Parse(f)
	if err != nil {
		return nil, err
	}
	var warnings []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		warnings = append(warnings, fmt.Sprintf("%s: %s (line %d)", rule, msg, loc[0].Start.Line))
	}})
	stages, _, err := instructions.Parse(ast.AST, lint)
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("lint: %s", strings.Join(warnings, "; "))
	}
	return stages, nil
}

func TestDockerfiles(t *testing.T) {
	tests := []struct {
		file        string
		binary      string // the image's program, whose subcommands its HEALTHCHECK uses
		healthcheck string // the subcommand the HEALTHCHECK runs
	}{
		{"docker/Dockerfile.server", "casare-server", "casare-server health"},
		{"docker/Dockerfile.agent", "casare-agent", "casare-agent cert status"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			stages, err := parseDockerfile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if len(stages) < 2 || !strings.HasPrefix(stages[0].BaseName, "golang:") {
				t.Fatalf("want a multi-stage build from the golang image, got %d stages from %q", len(stages), stages[0].BaseName)
			}
			final := stages[len(stages)-1]
			var user string
			var health *instructions.HealthCheckCommand
			labels := map[string]string{}
			for _, c := range final.Commands {
				switch c := c.(type) {
				case *instructions.UserCommand:
					user = c.User
				case *instructions.HealthCheckCommand:
					health = c
				case *instructions.LabelCommand:
					for _, kv := range c.Labels {
						labels[kv.Key] = strings.Trim(kv.Value, `"`)
					}
				}
			}
			if name, _, _ := strings.Cut(user, ":"); name == "" || name == "root" || name == "0" {
				t.Errorf("the final stage runs as %q, want a non-root USER", user)
			}
			if health == nil || len(health.Health.Test) < 2 || health.Health.Test[0] == "NONE" {
				t.Fatalf("the final stage has no HEALTHCHECK")
			}
			// exec form, so it needs no shell; the command is the image's binary.
			cmd := health.Health.Test
			if cmd[0] != "CMD" || filepath.Base(cmd[1]) != tt.binary {
				t.Errorf("HEALTHCHECK %q, want the exec form running %s", cmd, tt.binary)
			}
			words := strings.Fields(tt.healthcheck)
			if !slices.Equal(cmd[2:2+len(words)-1], words[1:]) {
				t.Errorf("HEALTHCHECK %q, want %s", cmd, tt.healthcheck)
			}
			checkFlags(t, tt.file+" HEALTHCHECK", tt.healthcheck, cmd[2:])
			if v := labels["org.opencontainers.image.version"]; v != "${VERSION}" {
				t.Errorf("label org.opencontainers.image.version is %q, want the build's VERSION", v)
			}
		})
	}
}

// TestDockerignore: the build context holds what the images compile from
// and none of the checkout's history or build output.
func TestDockerignore(t *testing.T) {
	f, err := os.Open("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	for path, wantIgnored := range map[string]bool{
		"go.mod":                          false,
		"go.sum":                          false,
		"cmd/casare-server/main.go":       false,
		"sql/migrations/migrations.go":    false,
		"agent/step/browser/page.js":      false,
		"rpc/casare/v1/job.pb.go":         false,
		".git/HEAD":                       true,
		"bin/casare-server":               true,
		"casare-data/admin.token":         true,
		"deploy/helm/casare/values.yaml":  true,
		"server/registry/testdata/x.json": true,
	} {
		ignored, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		if ignored != wantIgnored {
			t.Errorf(".dockerignore: %s ignored %v, want %v", path, ignored, wantIgnored)
		}
	}
}
