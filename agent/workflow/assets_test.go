package workflow

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
)

func TestAssetUses(t *testing.T) {
	wf := &casarev1.Workflow{}
	src := `{"name":"w","steps":[
	  {"id":"a","uses":"log","with":{"message":"${{ assets.mail }} as ${{ credentials.sap.username }}"}},
	  {"id":"b","uses":"log","if":"credentials.sap.password != ''","with":{"message":"x","list":["${{ assets.mail + assets.port }}"]}},
	  {"id":"c","uses":"log","with":{"message":"${{ credentials.sap }}"},"on_error":[{"id":"d","uses":"log","with":{"message":"${{ assets.oops }}"}}]}
	],"outputs":{"o":"${{ assets.out }}"}}`
	if err := protojson.Unmarshal([]byte(src), wf); err != nil {
		t.Fatal(err)
	}
	want := []AssetUse{
		{Path: "steps[0].with.message", Name: "mail"},
		{Path: "steps[0].with.message", Name: "sap", Credential: true, Field: "username"},
		{Path: "steps[1].if", Name: "sap", Credential: true, Field: "password"},
		{Path: "steps[1].with.list[0]", Name: "port"},
		{Path: "steps[2].with.message", Name: "sap", Credential: true},
		{Path: "steps[2].on_error[0].with.message", Name: "oops"},
		{Path: "outputs.o", Name: "out"},
	}
	if diff := cmp.Diff(want, AssetUses(wf)); diff != "" {
		t.Errorf("AssetUses (-want +got):\n%s", diff)
	}
	assets, creds := AssetNames(AssetUses(wf))
	if strings.Join(assets, ",") != "mail,oops,out,port" || strings.Join(creds, ",") != "sap" {
		t.Errorf("AssetNames = %v, %v", assets, creds)
	}
}

func TestValidateCredentialField(t *testing.T) {
	wf := &casarev1.Workflow{}
	src := `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"${{ credentials.sap.pasword }}"}}]}`
	if err := protojson.Unmarshal([]byte(src), wf); err != nil {
		t.Fatal(err)
	}
	err := Validate(wf, nil)
	if err == nil || !strings.Contains(err.Error(), "steps[0].with.message: ${{ credentials.sap.pasword }}: credentials.sap.pasword: a credential has only username and password") {
		t.Fatalf("Validate = %v", err)
	}
}
