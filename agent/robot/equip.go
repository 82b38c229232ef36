package robot

import (
	"log/slog"
	"slices"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/browser"
	"github.com/casarerpa/casare/agent/step/library"
)

// Abilities is what the robot's machine and its operator let it run.
type Abilities struct {
	// AllowShell lets shell.run run commands; it is what gives the robot
	// the shell capability.
	AllowShell bool
	// Chromium is the browser to drive; empty searches the usual names
	// and places.
	Chromium string
	// NoBrowser keeps browser steps off this robot even when it has a
	// Chromium.
	NoBrowser bool
	// FileRoots are directories file steps may reach besides the job's
	// own work directory.
	FileRoots []string
}

// capabilities that step families give; a robot advertises them only when
// it can really run those steps.
var familyCapabilities = []string{browserCapability, "shell"}

// browserCapability is what browser steps need: a Chromium that starts.
const browserCapability = "browser"

// equip builds the step catalogue and works out the capabilities the robot
// really has, so that the control plane never routes a job to a robot that
// cannot run it: browser only when a Chromium starts, shell only when
// allowed. extra are capabilities the operator names for other reasons
// (an installed application, say); family capabilities among them are
// dropped unless the robot has them.
func equip(a Abilities, extra []string, log *slog.Logger) (step.Catalogue, []string) {
	var caps []string
	for _, c := range extra {
		if !slices.Contains(familyCapabilities, c) {
			caps = append(caps, c)
		}
	}
	if a.AllowShell {
		caps = append(caps, "shell")
	} else if slices.Contains(extra, "shell") {
		log.Warn("not advertising shell: the robot was not started with --allow-shell")
	}
	cfg := library.Config{Browser: browser.Config{Headless: true}}
	if !a.NoBrowser {
		path, err := browser.Find(a.Chromium)
		if err == nil {
			cfg.Browser.Chromium = path
			caps = append(caps, browserCapability)
			log.Info("browser steps run with Chromium", "path", path)
		} else {
			log.Info("no browser steps on this robot", "reason", err)
		}
	}
	slices.Sort(caps)
	return library.Catalogue(cfg), slices.Compact(caps)
}
