//go:build windows

package shell

import "os/exec"

// baseEnv names the robot's variables a program inherits: PATH and the
// profile, and what Windows programs fail without.
var baseEnv = []string{"PATH", "PATHEXT", "USERPROFILE", "HOME", "SystemRoot", "SystemDrive", "ComSpec", "TEMP", "TMP", "WINDIR"}

// killGroup kills the program when the job is cancelled or times out.
// Windows has no process groups to signal; children the program started
// outlive it unless it stops them itself.
func killGroup(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return cmd.Process.Kill() }
}
