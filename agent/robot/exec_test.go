package robot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExec(t *testing.T) {
	const wf = `
inputs: {n: {type: integer, default: 2}, pass: {type: string, secret: true, default: hunter2}}
steps:
  - {id: say, uses: log, with: {message: "n is ${{ inputs.n }}, pass ${{ inputs.pass }}"}}
  - {id: keep, uses: set, with: {double: "${{ inputs.n * 2 }}"}}
  - {id: gate, uses: assert, with: {condition: "vars.double < 10", message: "too big: ${{ vars.double }}"}}
outputs: {double: "${{ vars.double }}"}
`
	for _, tc := range []struct {
		name      string
		file      string
		inputs    []string
		code      int
		stdout    string
		stderrHas string
		errHas    string
	}{
		{name: "Succeeds", file: wf, code: ExecOK, stdout: "{\n  \"double\": 4\n}\n", stderrHas: "info  say: n is 2, pass ***\n"},
		{name: "InputAsJSON", file: wf, inputs: []string{"n=3"}, code: ExecOK, stdout: "{\n  \"double\": 6\n}\n"},
		{name: "Fails", file: wf, inputs: []string{"n=7"}, code: ExecFailed, errHas: "step gate: too big: 14"},
		{name: "WrongInputType", file: wf, inputs: []string{"n=x"}, code: ExecFailed, errHas: `input n: want integer, got "x"`},
		{name: "BadInputFlag", file: wf, inputs: []string{"n"}, code: ExecError, errHas: `--input: want key=value, got "n"`},
		{name: "Invalid", file: "steps: [{id: a, uses: lg}]", code: ExecError, errHas: `steps[0].uses: unknown step "lg"; did you mean "log"?`},
		{name: "NoDeclaredInputs", file: "steps: [{id: a, uses: log, with: {message: x}}]", code: ExecOK},
		{name: "QueueStepsNeedAControlPlane", file: "steps: [{id: loop, uses: queue.process, with: {queue: q}, steps: [{id: a, uses: log, with: {message: x}}]}]",
			code: ExecFailed, errHas: "step loop: queue steps need a control plane: run this workflow as a job"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "wf.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := Exec(context.Background(), ExecOptions{File: path, Inputs: tc.inputs, Stdout: &stdout, Stderr: &stderr})
			code := ExecOK
			var exit *ExitError
			if errors.As(err, &exit) {
				code = exit.Code
			} else if err != nil {
				t.Fatalf("err = %v (%T), want an *ExitError", err, err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d (err %v)", code, tc.code, err)
			}
			if tc.stdout != "" && stdout.String() != tc.stdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr = %q, want %q in it", stderr.String(), tc.stderrHas)
			}
			if tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("err = %v, want %q in it", err, tc.errHas)
			}
		})
	}
}

func TestExecWorkDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "job")
	path := filepath.Join(t.TempDir(), "wf.yaml")
	if err := os.WriteFile(path, []byte("steps: [{id: a, uses: log, with: {message: x}}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := Exec(context.Background(), ExecOptions{File: path, WorkDir: dir, Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("--workdir was not kept: %v", err)
	}
}

func TestExecShellNeedsAllowing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wf.yaml")
	doc := "steps: [{id: run, uses: shell.run, with: {command: sh, args: [-c, 'echo hi']}}]\noutputs: {said: \"${{ steps.run.outputs }}\"}\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := Exec(context.Background(), ExecOptions{File: path, Stdout: &stdout, Stderr: &stderr})
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Code != ExecFailed || !strings.Contains(err.Error(), `"shell" capability`) {
		t.Fatalf("without --allow-shell: %v", err)
	}
	if err := Exec(context.Background(), ExecOptions{File: path, Abilities: Abilities{AllowShell: true}, Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatalf("with --allow-shell: %v (%s)", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "hi") {
		t.Errorf("outputs = %s", stdout.String())
	}
}

// TestExecStartsChromiumOnlyForBrowserSteps: finding out whether a
// Chromium works means starting one, which takes seconds; a local run
// does it only when the workflow has browser steps or asks for the
// browser capability. The "Chromium" here is a script that notes each
// start and is no browser, so browser steps stay refused.
func TestExecStartsChromiumOnlyForBrowserSteps(t *testing.T) {
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	chromium := filepath.Join(dir, "chromium")
	if err := os.WriteFile(chromium, []byte("#!/bin/sh\necho started >> '"+starts+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		file    string
		starts  bool
		code    int
		errHas  string
		noProbe bool
	}{
		{name: "NoBrowserSteps", file: "steps: [{id: a, uses: log, with: {message: x}}]", code: ExecOK},
		{name: "BrowserStep", file: "steps: [{id: open, uses: browser.navigate, with: {url: 'about:blank'}}]", starts: true, code: ExecFailed, errHas: `"browser" capability`},
		{name: "NestedBrowserStep", file: "steps: [{id: g, steps: [{id: open, uses: browser.navigate, with: {url: 'about:blank'}}]}]", starts: true, code: ExecFailed},
		{name: "RequiresBrowser", file: "requires: {capabilities: [browser]}\nsteps: [{id: a, uses: log, with: {message: x}}]", starts: true, code: ExecOK},
		{name: "NoBrowserFlag", file: "steps: [{id: open, uses: browser.navigate, with: {url: 'about:blank'}}]", noProbe: true, code: ExecFailed, errHas: `"browser" capability`},
		{name: "Invalid", file: "steps: [{id: open, uses: browser.navigat}]", code: ExecError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(starts)
			path := filepath.Join(t.TempDir(), "wf.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := Exec(context.Background(), ExecOptions{File: path, Abilities: Abilities{Chromium: chromium, NoBrowser: tc.noProbe}, Stdout: &stdout, Stderr: &stderr})
			code := ExecOK
			var exit *ExitError
			if errors.As(err, &exit) {
				code = exit.Code
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d (err %v)", code, tc.code, err)
			}
			if tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("err = %v, want %q in it", err, tc.errHas)
			}
			_, statErr := os.Stat(starts)
			if started := statErr == nil; started != tc.starts {
				t.Errorf("Chromium started: %v, want %v", started, tc.starts)
			}
		})
	}
}
