package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnits runs systemd-analyze verify and security on the units,
// with their ExecStart pointing at binaries built from this checkout.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing (Debian package systemd); .ci/run installs it")
	}
	tests := []struct {
		unit    string
		command string // the subcommand of ExecStart whose flags it passes
		// Highest exposure `systemd-analyze security` may give, in tenths
		// (0 best, 100 worst): the agent runs Chromium, which needs more.
		exposure int
	}{
		{"casare-server.service", "casare-server", 20},
		{"casare-agent.service", "casare-agent run", 45},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("systemd", tt.unit))
			if err != nil {
				t.Fatal(err)
			}
			unit := string(b)
			for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=", "Restart=on-failure"} {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(unit) {
					t.Errorf("%s lacks %s", tt.unit, want)
				}
			}
			if !regexp.MustCompile(`(?m)^(DynamicUser=yes|User=\S+)$`).MatchString(unit) {
				t.Errorf("%s runs as root: want DynamicUser=yes or User=", tt.unit)
			}
			start := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindStringSubmatch(unit)
			if start == nil || start[1] != "/usr/local/bin/"+strings.Fields(tt.command)[0] {
				t.Fatalf("%s: ExecStart %q, want /usr/local/bin/%s", tt.unit, start, strings.Fields(tt.command)[0])
			}
			checkFlags(t, tt.unit, tt.command, strings.Fields(start[2]))
			if tt.command == "casare-server" {
				var env []string
				for _, m := range regexp.MustCompile(`CASARE_[A-Z_]+=`).FindAllString(unit, -1) {
					env = append(env, strings.TrimSuffix(m, "="))
				}
				checkEnv(t, tt.unit, "casare-server", env)
			}

			// systemd-analyze needs the programs where ExecStart says.
			dir := t.TempDir()
			local := filepath.Join(dir, tt.unit)
			if err := os.WriteFile(local, []byte(strings.ReplaceAll(unit, "/usr/local/bin/", bin+"/")), 0o644); err != nil {
				t.Fatal(err)
			}
			// verify warns (unknown keys, bad values) on stderr and still
			// exits 0: any output is a failure.
			out, err := runAnalyze(analyze, "verify", local)
			if err != nil || strings.TrimSpace(out) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", tt.unit, err, out)
			}
			out, err = runAnalyze(analyze, "security", "--offline=yes", "--threshold="+strconv.Itoa(tt.exposure), local)
			if err != nil {
				t.Errorf("systemd-analyze security %s: exposure above %d.%d: %v\n%s", tt.unit, tt.exposure/10, tt.exposure%10, err, lastLines(out, 3))
			}
		})
	}
}

func runAnalyze(analyze string, args ...string) (string, error) {
	cmd := exec.Command(analyze, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
