// Package shell holds the shell.run step: it runs one program, without a
// shell in between unless the workflow names one (command: sh, args: [-c,
// ...]), in a clean environment, and returns its exit code and output. The
// step needs the shell capability, which a robot advertises only when its
// operator allows it, because a program can do anything the robot's user
// can.
package shell

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/files"
)

const (
	// MaxOutput is how much of stdout and of stderr the outputs keep.
	MaxOutput = 1 << 20
	// defaultTimeout bounds a program that names no timeout.
	defaultTimeout = 10 * time.Minute
	// waitDelay is how long Wait waits, after the program exits or is
	// killed, for children that inherited its output to let go of it.
	waitDelay = 2 * time.Second
	// tailLines is how much of stderr a failure message quotes.
	tailLines = 5
	// maxLogLine keeps one runaway line from swamping the job log.
	maxLogLine = 4096
)

// Actions returns the shell.* steps.
func Actions() []*step.Action {
	return []*step.Action{runAction}
}

type runParams struct {
	Command     string            `json:"command" step:"required" doc:"Program to run: a name looked up in PATH, or a path (relative to dir). No shell is involved; for pipes and globs run sh -c or cmd /c."`
	Args        []string          `json:"args" doc:"Arguments, each passed as is."`
	Env         map[string]string `json:"env" doc:"Environment variables, added to a minimal environment (PATH, HOME and what the platform needs); the robot's own variables are not passed."`
	Dir         string            `json:"dir" doc:"Working directory, confined like file paths. Default: the job's work directory."`
	Timeout     step.Duration     `json:"timeout" doc:"How long the program may run before it and its children are killed. Default 10m."`
	Stdin       *string           `json:"stdin" doc:"Text given to the program's standard input; without it the input is empty."`
	OkExitCodes []int             `json:"ok_exit_codes" doc:"Exit codes besides 0 that count as success (grep exits 1 when nothing matches)."`
}

type runOutputs struct {
	ExitCode int    `json:"exit_code" doc:"The program's exit code."`
	Stdout   string `json:"stdout" doc:"Standard output, up to 1 MiB, with a note at the end when more was cut."`
	Stderr   string `json:"stderr" doc:"Standard error, up to 1 MiB, with a note at the end when more was cut."`
}

var runAction = step.Define("shell.run", "Runs a program and returns its exit code and output.",
	run,
	step.NeedsCapability("shell"),
	step.Rejects("the program is not found or dir is outside the job's work directory and the allowed roots"),
	step.Fails("the program exits with a code that is not 0 or in ok_exit_codes"),
	step.Fails("the program runs longer than the timeout"),
	step.Fails("the program cannot be started"))

func run(ctx context.Context, env *step.Env, p runParams) (runOutputs, error) {
	if strings.TrimSpace(p.Command) == "" {
		return runOutputs{}, step.Businessf("with.command: required")
	}
	dir := p.Dir
	if dir == "" {
		dir = "."
	}
	dir, err := files.ResolveParam(env, "dir", dir)
	if err != nil {
		return runOutputs{}, err
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return runOutputs{}, step.Businessf("with.dir: %s is not a directory", p.Dir)
	}
	timeout := p.Timeout.D()
	if timeout == 0 {
		timeout = defaultTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, p.Command, p.Args...)
	if errors.Is(cmd.Err, exec.ErrNotFound) || errors.Is(cmd.Err, exec.ErrDot) {
		return runOutputs{}, step.Businessf("with.command: %s", cmd.Err)
	}
	cmd.Dir = dir
	cmd.Env = environment(p.Env)
	if p.Stdin != nil {
		cmd.Stdin = strings.NewReader(*p.Stdin)
	}
	stdout := &output{env: env, level: "info"}
	stderr := &output{env: env, level: "warn"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	killGroup(cmd)
	cmd.WaitDelay = waitDelay

	err = cmd.Run()
	stdout.flush()
	stderr.flush()
	out := runOutputs{ExitCode: -1, Stdout: stdout.text(), Stderr: stderr.text()}
	if cmd.ProcessState != nil {
		out.ExitCode = cmd.ProcessState.ExitCode()
	}
	name := p.Command
	switch {
	case cmd.Process == nil:
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			return runOutputs{}, step.Businessf("with.command: %s not found", p.Command)
		}
		return runOutputs{}, step.Failf("start %s: %w", name, err)
	case ctx.Err() != nil:
		return runOutputs{}, step.Failf("%s: stopped: %w", name, ctx.Err())
	case errors.Is(runCtx.Err(), context.DeadlineExceeded):
		return runOutputs{}, step.Failf("%s did not finish within %s; it was killed%s", name, timeout, stderr.tail())
	case errors.Is(err, exec.ErrWaitDelay):
		// The program finished; a child it left running still holds its
		// output. The result stands.
		env.Logf("warn", "shell.run: %s exited but a process it started kept its output open; stopped reading after %s", name, waitDelay)
	case err != nil && out.ExitCode < 0:
		return runOutputs{}, step.Failf("%s: %v%s", name, err, stderr.tail())
	}
	if out.ExitCode != 0 && !slices.Contains(p.OkExitCodes, out.ExitCode) {
		return runOutputs{}, step.Failf("%s exited with code %d%s", name, out.ExitCode, stderr.tail())
	}
	return out, nil
}

// environment builds the program's environment from scratch: the robot's
// own variables may hold secrets (its enrollment, cloud credentials) that
// a workflow has no business reading.
func environment(extra map[string]string) []string {
	vars := map[string]string{}
	for _, name := range baseEnv {
		if v, ok := os.LookupEnv(name); ok {
			vars[name] = v
		}
	}
	for name, v := range extra {
		vars[name] = v
	}
	out := make([]string, 0, len(vars))
	for name, v := range vars {
		out = append(out, name+"="+v)
	}
	slices.Sort(out)
	return out
}

// output captures a stream up to MaxOutput and writes each complete line to
// the job log as it comes. It is safe for the one goroutine exec copies the
// stream with, and for the reads after Wait.
type output struct {
	env   *step.Env
	level string

	mu      sync.Mutex
	kept    bytes.Buffer
	dropped int64
	line    []byte
	logged  int64
	muted   bool
	last    []string // the last tailLines lines, for error messages
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := MaxOutput - o.kept.Len(); room > 0 {
		o.kept.Write(b[:min(room, len(b))])
		o.dropped += int64(len(b) - min(room, len(b)))
	} else {
		o.dropped += int64(len(b))
	}
	for data := b; len(data) > 0; {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(o.line) < maxLogLine {
				o.line = append(o.line, data[:min(len(data), maxLogLine-len(o.line))]...)
			}
			break
		}
		if len(o.line) < maxLogLine {
			o.line = append(o.line, data[:min(i, maxLogLine-len(o.line))]...)
		}
		o.emit()
		data = data[i+1:]
	}
	return len(b), nil
}

// emit logs the line gathered so far and remembers it for the tail.
func (o *output) emit() {
	line := strings.TrimRight(string(o.line), "\r")
	o.line = o.line[:0]
	o.last = append(o.last, line)
	if len(o.last) > tailLines {
		o.last = o.last[1:]
	}
	// The log gets what the outputs keep, and then one line saying the
	// rest is not there.
	if o.muted {
		return
	}
	if o.logged += int64(len(line)) + 1; o.logged > MaxOutput {
		o.muted = true
		o.env.Logf(o.level, "shell.run: more output than %d bytes; the rest is not logged", MaxOutput)
		return
	}
	o.env.Logf(o.level, "%s", line)
}

func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.line) > 0 {
		o.emit()
	}
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.kept.String()
	if o.dropped > 0 {
		s += fmt.Sprintf("\n[%d more bytes not kept]", o.dropped)
	}
	return s
}

// tail is the last lines, formatted to end an error message.
func (o *output) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var lines []string
	for _, l := range o.last {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.Join(lines, "\n")
}
