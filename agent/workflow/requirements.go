package workflow

import (
	"maps"
	"slices"

	"github.com/casarerpa/casare/agent/workflow/spec"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

// Requirements returns what a robot needs to run wf: the capabilities of
// every action it uses (nested steps and error handlers included) added to
// those it declares, and its declared labels. Unknown actions add nothing;
// Validate reports them.
func Requirements(wf *casarev1.Workflow, cat spec.Catalogue) *casarev1.Requirements {
	caps := slices.Clone(wf.GetRequires().GetCapabilities())
	var walk func([]*casarev1.Step)
	walk = func(steps []*casarev1.Step) {
		for _, s := range steps {
			if a, ok := cat[s.GetUses()]; ok && a.Capability != "" {
				caps = append(caps, a.Capability)
			}
			walk(s.GetSteps())
			walk(s.GetOnError())
		}
	}
	walk(wf.GetSteps())
	walk(wf.GetOnError())
	slices.Sort(caps)
	out := &casarev1.Requirements{Capabilities: slices.Compact(caps)}
	if labels := wf.GetRequires().GetLabels(); len(labels) > 0 {
		out.Labels = maps.Clone(labels)
	}
	return out
}
