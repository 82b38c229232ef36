// Package e2e holds the end-to-end tests: they build the real binaries and
// drive them as processes on loopback, as operators and scripts do.
package e2e
