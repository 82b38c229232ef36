//go:build windows

package workflowtest

import (
	"time"

	"golang.org/x/sys/windows"
)

// processCPU is the CPU time this process has used, user and system.
func processCPU() (time.Duration, error) {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &creation, &exit, &kernel, &user); err != nil {
		return 0, err
	}
	return span(kernel) + span(user), nil
}

// span reads a FILETIME that holds a duration, in 100 ns units; its
// Nanoseconds method reads a date.
func span(f windows.Filetime) time.Duration {
	return time.Duration(int64(f.HighDateTime)<<32|int64(f.LowDateTime)) * 100
}
