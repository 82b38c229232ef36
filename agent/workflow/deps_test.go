package workflow_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/casarerpa/casare/"

// deps lists what the packages link, as go list sees them from the module
// root (go test puts the go command first on PATH).
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if exit, ok := err.(*exec.ExitError); ok {
			stderr = string(exit.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(pkgs, " "), err, stderr)
	}
	return strings.Fields(string(out))
}

// inWorkflow reports whether pkg is agent/workflow or below it.
func inWorkflow(pkg string) bool {
	return pkg == module+"agent/workflow" || strings.HasPrefix(pkg, module+"agent/workflow/")
}

// The control plane and casarectl validate workflows with the language
// package alone: linking a step family would bring a browser driver and a
// spreadsheet library into binaries that run no step.
func TestServerAndCLILinkNoStepFamily(t *testing.T) {
	list := deps(t, "./cmd/casare-server", "./cmd/casarectl")
	for _, pkg := range list {
		switch {
		case strings.Contains(pkg, "chromedp") || strings.Contains(pkg, "excelize"):
			t.Errorf("casare-server or casarectl links %s", pkg)
		case strings.HasPrefix(pkg, module+"agent/") && !inWorkflow(pkg):
			t.Errorf("casare-server or casarectl links %s: only agent/workflow is shared with them", pkg)
		}
	}
	if !slices.Contains(list, module+"agent/workflow/builtin") {
		t.Errorf("casare-server and casarectl do not link agent/workflow/builtin: what do they validate with?")
	}
}

// The language imports nothing else of agent/, so that importing it never
// brings the robot along.
func TestWorkflowImportsNothingElseOfAgent(t *testing.T) {
	for _, pkg := range deps(t, "./agent/workflow/...") {
		if strings.HasPrefix(pkg, module+"agent/") && !inWorkflow(pkg) {
			t.Errorf("agent/workflow/... imports %s", pkg)
		}
	}
}
