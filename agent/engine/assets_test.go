package engine

import (
	"context"
	"reflect"
	"testing"

	"github.com/casarerpa/casare/agent/step"
	"github.com/casarerpa/casare/agent/step/core"
	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestAssetsAndCredentials(t *testing.T) {
	wf := withOutputs(&casarev1.Workflow{
		Steps: []*casarev1.Step{
			logStep("say", "mail ${{ assets.mail }} as ${{ credentials.sap.username }} with ${{ credentials.sap.password }} pin ${{ assets.pin }}"),
			logStep("derived", "tail ${{ credentials.sap.password.substring(1) }} loud ${{ assets.pin.reverse() }} user ${{ credentials.sap.username.upperAscii() }}"),
		},
	}, map[string]string{
		"user":     "${{ credentials.sap.username }}",
		"port":     "${{ assets.port + 1.0 }}",
		"right_pw": "${{ credentials.sap.password == 'hq-pass' }}",
	})
	e := New(step.NewCatalogue(core.Actions()...), Options{})
	r := &recorder{}
	assets := Assets{
		Values:      map[string]any{"mail": "hq.example.com", "port": 586.0, "pin": "4711"},
		Credentials: map[string]map[string]string{"sap": {"username": "hq-robot", "password": "hq-pass"}},
		Secrets:     []string{"hq-pass", "4711"},
	}
	out, err := e.RunWithAssets(context.Background(), wf, nil, assets, nil, r)
	if err != nil {
		t.Fatal(err)
	}
	// An output computed from a password is a secret, as one computed
	// from a secret input is.
	want := map[string]any{"user": "hq-robot", "port": 587.0, "right_pw": "***"}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("outputs = %v, want %v", out, want)
	}
	if got, want := r.logged(), []string{"info say: mail hq.example.com as hq-robot with *** pin ***", "info derived: tail *** loud *** user HQ-ROBOT"}; !reflect.DeepEqual(got, want) {
		t.Errorf("log = %q, want %q", got, want)
	}
}
