package dispatch

import (
	"slices"
	"testing"
	"time"

	"github.com/casarerpa/casare/server/registry"
)

func TestExplain(t *testing.T) {
	now := time.Now()
	old := now.Add(-time.Hour)
	robots := []registry.Robot{
		{ID: "1", Name: "eu-browser", Status: "idle", MaxJobs: 1, LastSeen: &now, Capabilities: `["browser"]`, Labels: `{"region":"eu"}`},
		{ID: "2", Name: "us-browser", Status: "idle", MaxJobs: 1, LastSeen: &now, Capabilities: `["browser"]`, Labels: `{"region":"us"}`},
		{ID: "3", Name: "eu-plain", Status: "idle", MaxJobs: 1, LastSeen: &now, Capabilities: `[]`, Labels: `{"region":"eu"}`},
		{ID: "4", Name: "eu-busy", Status: "busy", MaxJobs: 2, LastSeen: &now, Capabilities: `["browser"]`, Labels: `{"region":"eu"}`},
		{ID: "5", Name: "eu-gone", Status: "idle", MaxJobs: 1, LastSeen: &old, Capabilities: `["browser"]`, Labels: `{"region":"eu"}`},
		{ID: "6", Name: "eu-draining", Status: "draining", MaxJobs: 1, LastSeen: &now, Capabilities: `["browser"]`, Labels: `{"region":"eu"}`},
	}
	req, err := JobRequirements(&registry.Job{ID: "j", Requires: `{"capabilities":["browser"],"labels":{"region":"eu"}}`})
	if err != nil {
		t.Fatal(err)
	}
	fits, summary := Explain(req, robots, map[string]int{"4": 2}, now.Add(-time.Minute))
	want := map[string][]string{
		"eu-browser":  nil,
		"us-browser":  {"label region=eu (has us)"},
		"eu-plain":    {"missing capability browser"},
		"eu-busy":     {"busy (2 of 2 slots)"},
		"eu-gone":     {"offline"},
		"eu-draining": {"draining"},
	}
	for _, f := range fits {
		if !slices.Equal(f.Reasons, want[f.RobotName]) || f.Eligible != (want[f.RobotName] == nil) {
			t.Errorf("%s: eligible %v, reasons %q; want %q", f.RobotName, f.Eligible, f.Reasons, want[f.RobotName])
		}
	}
	if summary != "1 robots can take it now; it is about to be assigned" {
		t.Errorf("summary %q", summary)
	}
	_, summary = Explain(Requirements{Labels: map[string]string{"region": "mars"}}, robots, nil, now.Add(-time.Minute))
	if summary != "no registered robot can run this job: it needs label region=mars" {
		t.Errorf("summary %q", summary)
	}
}

func TestRequirementKeys(t *testing.T) {
	a, _ := JobRequirements(&registry.Job{ID: "j", Requires: `{"capabilities":["shell","browser"],"labels":{"a":"1","b":"2"}}`})
	b, _ := JobRequirements(&registry.Job{ID: "j", Requires: `{"capabilities":["browser","shell"],"labels":{"b":"2","a":"1"}}`})
	c, _ := JobRequirements(&registry.Job{ID: "j", Requires: `{"capabilities":["browser"],"labels":{"a":"1","b":"2"}}`})
	if a.key() != b.key() || a.key() == c.key() {
		t.Errorf("keys: %q %q %q", a.key(), b.key(), c.key())
	}
	if _, err := JobRequirements(&registry.Job{ID: "j", Requires: `{"capabilities":`}); err == nil {
		t.Error("bad requirements parsed")
	}
}
