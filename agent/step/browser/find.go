package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// probeTimeout bounds the trial start of a candidate browser. A cold start
// of Chromium on a busy two-core machine takes a few seconds; a binary that
// needs longer than this to render about:blank is of no use to a robot.
const probeTimeout = 20 * time.Second

// Find returns the path of a Chromium or Chrome that starts headless on this
// machine. With an explicit path it checks only that binary; with "" it
// tries chromium, chromium-browser, google-chrome and google-chrome-stable
// on PATH, then the usual install locations on Windows and macOS, and
// returns the first that works. A robot advertises the browser capability
// only when Find succeeds. The error says which binaries were tried and why
// each failed.
func Find(path string) (string, error) {
	if path != "" {
		resolved, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("chromium %s: %w", path, err)
		}
		if err := probe(resolved); err != nil {
			return "", fmt.Errorf("chromium %s: %w", resolved, err)
		}
		return resolved, nil
	}
	found := candidates()
	if len(found) == 0 {
		return "", fmt.Errorf("no chromium found: looked for %s on PATH%s; install chromium or give its path",
			strings.Join(binaryNames, ", "), installHint())
	}
	var problems []error
	for _, p := range found {
		err := probe(p)
		if err == nil {
			return p, nil
		}
		problems = append(problems, fmt.Errorf("%s: %w", p, err))
	}
	return "", fmt.Errorf("no working chromium: %w", errors.Join(problems...))
}

// binaryNames are the names Chromium and Chrome install under on PATH.
var binaryNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// candidates lists the existing browser binaries in the order Find tries
// them, without starting any.
func candidates() []string {
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, name := range binaryNames {
		if p, err := exec.LookPath(name); err == nil {
			add(p)
		}
	}
	for _, p := range installPaths(runtime.GOOS) {
		if info, err := os.Stat(p); err == nil && !info.IsDir() {
			add(p)
		}
	}
	return out
}

// installPaths are where the installers of Chrome and Chromium put the
// browser on systems that do not add it to PATH.
func installPaths(goos string) []string {
	switch goos {
	case "windows":
		var out []string
		for _, base := range []string{os.Getenv("ProgramFiles"), os.Getenv("ProgramFiles(x86)"), os.Getenv("LocalAppData")} {
			if base == "" {
				continue
			}
			out = append(out,
				filepath.Join(base, `Google\Chrome\Application\chrome.exe`),
				filepath.Join(base, `Chromium\Application\chrome.exe`),
			)
		}
		return out
	case "darwin":
		return []string{
			"/Applications/Chromium.app/Contents/MacOS/Chromium",
			"/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
		}
	}
	return nil
}

func installHint() string {
	if paths := installPaths(runtime.GOOS); len(paths) > 0 {
		return " and in " + strings.Join(paths, ", ")
	}
	return ""
}

// probe starts the binary headless on about:blank and checks that it prints
// the page: --version alone would pass for a browser that cannot run here
// (a missing library, a sandbox it cannot set up).
func probe(path string) error {
	dir, err := os.MkdirTemp("", "casare-chromium-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-dev-shm-usage", "--user-data-dir=" + dir}
	if needsNoSandbox() {
		args = append(args, "--no-sandbox")
	}
	args = append(args, "--dump-dom", "about:blank")
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The browser's helpers can inherit the output pipes and outlive it;
	// do not let them hold Wait open past the kill.
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("did not render about:blank headless within %s", probeTimeout)
	}
	if err != nil {
		return fmt.Errorf("does not start headless: %v%s", err, lastLine(stderr.String()))
	}
	if !strings.Contains(strings.ToLower(stdout.String()), "<html") {
		return fmt.Errorf("started headless but printed no page%s", lastLine(stderr.String()))
	}
	return nil
}

// needsNoSandbox reports whether Chromium must run without its sandbox:
// it refuses to start as root with it, which is the usual case in a
// container. Elsewhere the sandbox stays on.
func needsNoSandbox() bool { return os.Geteuid() == 0 }

// lastLine is the last non-empty line of a browser's error output, the one
// that usually says what went wrong, ready to append to a message.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return ": " + last
	}
	return ""
}
