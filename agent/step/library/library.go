// Package library gathers every step family this build knows into one
// catalogue: the robot runs it and checks workflows against its specs, and
// the schema, CATALOGUE.md and the spec table of agent/workflow/builtin
// (which the control plane and casarectl check workflows against) are
// generated from it.
package library

//go:generate go run ./gen -schema ../../workflow/workflow.schema.json -catalogue CATALOGUE.md -table ../../workflow/builtin/steps.go

import (
	"slices"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/artifact"
	"github.com/casarerpa/casare/agent/step/browser"
	"github.com/casarerpa/casare/agent/step/core"
	"github.com/casarerpa/casare/agent/step/files"
	"github.com/casarerpa/casare/agent/step/httpreq"
	"github.com/casarerpa/casare/agent/step/sheets"
	"github.com/casarerpa/casare/agent/step/shell"
	"github.com/casarerpa/casare/agent/step/workqueue"
)

// Config is the robot configuration the families need. The zero Config
// gives every family at its defaults, which is what validation needs: it
// only reads the definitions. Shell commands are not configured here: the
// shell.run step needs the shell capability, which a robot advertises only
// when its operator allows it.
type Config struct {
	// Browser configures the browser family: which Chromium, headless.
	Browser browser.Config
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
		httpreq.Actions(),
		shell.Actions(),
		sheets.Actions(),
		browser.Actions(cfg.Browser),
		artifact.Actions(),
		workqueue.Actions(),
	)
}
