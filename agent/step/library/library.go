// Package library gathers every step family this build knows into one
// catalogue: the robot runs it, the validator checks workflows against it
// and the schema and CATALOGUE.md are generated from it.
package library

import (
	"slices"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/step/files"
)

// Config is the robot configuration the families need. The zero Config
// gives the full catalogue with every family at its defaults, which is
// what validation needs: it only reads the definitions.
type Config struct {
	// AllowShell lets shell.run run; without it the action is still
	// defined (workflows using it validate) but refuses to run.
	AllowShell bool
	// Roots are directories file steps may reach besides the job's.
	Roots []string
}

// Catalogue returns the actions of every family, configured by cfg.
func Catalogue(cfg Config) step.Catalogue {
	return step.NewCatalogue(Actions(cfg)...)
}

// Actions lists the actions of every family.
func Actions(cfg Config) []*step.Action {
	return slices.Concat(
		core.Actions(),
		files.Actions(),
		// httpreq, sheets, shell and browser join here as they land.
	)
}
