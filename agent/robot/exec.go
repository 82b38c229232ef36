package robot

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/casarerpa/casare/agent/engine"
	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/workflow"
	"github.com/casarerpa/casare/agent/workflow/spec"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Exit codes of casare-agent exec, the same as casarectl's for a job it
// waited for.
const (
	ExecOK     = 0 // the workflow succeeded
	ExecFailed = 1 // the workflow failed or was cancelled
	ExecError  = 2 // usage: an unreadable or invalid workflow, bad inputs
)

// ExecOptions configures Exec.
type ExecOptions struct {
	// File is the workflow, JSON or YAML; - reads standard input.
	File string
	// Inputs are key=value pairs; a value that parses as JSON is taken
	// as JSON, otherwise as text.
	Inputs []string
	// Abilities say which step families may run; browser steps run when a
	// Chromium is found, shell steps only when allowed.
	Abilities Abilities
	// WorkDir is the job's directory, kept afterwards; empty means a new
	// temporary one, removed afterwards.
	WorkDir string
	// Debug shows the debug lines of the log too.
	Debug bool

	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ExitError carries the exit code Exec wants.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the process exit code.
func (e *ExitError) ExitCode() int { return e.Code }

// Exec runs a workflow here, without a control plane: the log goes to
// Stderr as it happens and the outputs to Stdout as JSON. It returns nil
// when the workflow succeeded and otherwise an *ExitError whose code says
// whether the workflow failed (ExecFailed) or could not start (ExecError).
func Exec(ctx context.Context, opts ExecOptions) error {
	usage := func(format string, args ...any) error {
		return &ExitError{Code: ExecError, Err: fmt.Errorf(format, args...)}
	}
	var data []byte
	var err error
	if opts.File == "-" {
		data, err = io.ReadAll(opts.Stdin)
	} else {
		data, err = os.ReadFile(opts.File)
	}
	if err != nil {
		return usage("read workflow: %w", err)
	}
	wf, err := workflow.Parse(data)
	if err != nil {
		return usage("%s: %w", opts.File, err)
	}
	// Starting a Chromium to see that it works takes seconds: a workflow
	// without browser steps is checked and run without one.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	abilities := opts.Abilities
	abilities.NoBrowser = true
	cat, caps := equip(abilities, nil, quiet)
	specs := cat.Specs()
	if err := workflow.Validate(wf, specs); err != nil {
		return usage("%s: %w", opts.File, err)
	}
	if !opts.Abilities.NoBrowser && needsBrowser(wf, specs) {
		cat, caps = equip(opts.Abilities, nil, quiet)
	}
	inputs := map[string]any{}
	for _, kv := range opts.Inputs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usage("--input: want key=value, got %q", kv)
		}
		var parsed any
		if json.Unmarshal([]byte(v), &parsed) == nil {
			inputs[k] = parsed
		} else {
			inputs[k] = v
		}
	}

	dir := opts.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "casare-exec-"); err != nil {
			return usage("make a work directory: %w", err)
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return usage("--workdir: %w", err)
	}

	out := &execReporter{w: opts.Stderr, debug: opts.Debug}
	env := &step.Env{JobID: "local", WorkDir: dir, Roots: opts.Abilities.FileRoots, Log: func(level, message string) { out.Log(level, "", message) }}
	defer env.Close()
	// A local run may do what a robot on this machine could: browser steps
	// when it has a Chromium, commands only when allowed.
	e := engine.New(cat, engine.Options{Capabilities: caps})
	outputs, err := e.Run(ctx, wf, inputs, env, out)
	if err != nil {
		return &ExitError{Code: ExecFailed, Err: err}
	}
	enc := json.NewEncoder(opts.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(outputs); err != nil {
		return &ExitError{Code: ExecFailed, Err: fmt.Errorf("write outputs: %w", err)}
	}
	return nil
}

// needsBrowser says whether wf has browser steps or asks for the browser
// capability itself.
func needsBrowser(wf *casarev1.Workflow, cat spec.Catalogue) bool {
	return slices.Contains(workflow.Requirements(wf, cat).GetCapabilities(), browserCapability)
}

// execReporter writes the log as lines "level step: message".
type execReporter struct {
	mu    sync.Mutex
	w     io.Writer
	debug bool
}

func (r *execReporter) Log(level, stepID, message string) {
	if level == "debug" && !r.debug {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if stepID == "" {
		fmt.Fprintf(r.w, "%-5s %s\n", level, message)
		return
	}
	fmt.Fprintf(r.w, "%-5s %s: %s\n", level, stepID, message)
}

func (r *execReporter) Progress(string, int32, string) {}
