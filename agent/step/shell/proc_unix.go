//go:build unix

package shell

import (
	"os/exec"
	"syscall"
)

// baseEnv names the robot's variables a program inherits: enough to find
// other programs and a home directory.
var baseEnv = []string{"PATH", "HOME"}

// killGroup starts the program in a process group of its own and makes
// cancellation kill the whole group, so that a child it started (sh -c
// 'sleep 600 &') does not outlive a cancelled or timed out job.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
