// Package builtin holds the specs of every step this build's robots know,
// as plain data generated from the step families of agent/step (go
// generate ./agent/step/library; a test there fails when it is stale). The
// control plane and casarectl validate workflows against Steps, so that
// neither links the code that runs the steps: a browser driver, a
// spreadsheet library. It imports nothing of agent/ but its spec package.
package builtin
