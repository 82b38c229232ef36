package asset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	casarev1 "github.com/casarerpa/casare/rpc/casare/v1"
	"github.com/casarerpa/casare/server/dispatch"
	"github.com/casarerpa/casare/server/registry"
	"github.com/casarerpa/casare/server/vault"
)

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "Empty", in: "", want: ""},
		{name: "Sorted", in: " site=hq , env=prod", want: "env=prod,site=hq"},
		{name: "EmptyValue", in: "gpu=", want: "gpu="},
		{name: "NoEquals", in: "site", err: `"site" is not key=value`},
		{name: "BadKey", in: "=hq", err: "label key"},
		{name: "BadValue", in: "site=h q", err: "label value"},
		{name: "Twice", in: "site=a,site=b", err: "label site is given twice"},
		{name: "TooMany", in: strings.Repeat("k=v,", 16) + "z=1", err: "label k is given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := ParseSelector(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseSelector(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSelector(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	var many []string
	for i := range 17 {
		many = append(many, fmt.Sprintf("k%d=v", i))
	}
	if _, _, err := ParseSelector(strings.Join(many, ",")); err == nil || !strings.Contains(err.Error(), "17 labels, the limit is 16") {
		t.Errorf("17 labels = %v", err)
	}
}

func TestCheckValue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		t     registry.AssetType
		value string
		err   string
	}{
		{name: "Number", t: registry.AssetNumber, value: "2.5"},
		{name: "NotNumber", t: registry.AssetNumber, value: "abc", err: `"abc" is not a number`},
		{name: "NaN", t: registry.AssetNumber, value: "NaN", err: "not a number"},
		{name: "Bool", t: registry.AssetBool, value: "true"},
		{name: "NotBool", t: registry.AssetBool, value: "yes", err: "not a bool"},
		{name: "JSON", t: registry.AssetJSON, value: `{"a":[1]}`},
		{name: "NotJSON", t: registry.AssetJSON, value: `{a}`, err: "not valid JSON"},
		{name: "Text", t: registry.AssetText, value: "anything"},
		{name: "TooLarge", t: registry.AssetText, value: strings.Repeat("x", MaxValueBytes+1), err: "65537 bytes, the limit is 65536 (64 KiB)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckValue(tc.t, tc.value)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("CheckValue = %v; want %q", err, tc.err)
			}
		})
	}
}

func TestPick(t *testing.T) {
	rows := []registry.Asset{
		{Name: "mail", Selector: "", Value: "default"},
		{Name: "mail", Selector: "site=hq", Value: "hq"},
		{Name: "mail", Selector: "env=prod,site=hq", Value: "hq-prod"},
		{Name: "mail", Selector: "env=lab", Value: "lab"},
		{Name: "mail", Selector: "tier=1", Value: "tier"},
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{name: "NoLabels", labels: nil, want: "default"},
		{name: "One", labels: map[string]string{"site": "hq"}, want: "hq"},
		{name: "MostSpecific", labels: map[string]string{"site": "hq", "env": "prod"}, want: "hq-prod"},
		{name: "OtherValue", labels: map[string]string{"site": "lab"}, want: "default"},
		// env=lab and tier=1 match one label each: env=lab sorts first.
		{name: "TieBySelector", labels: map[string]string{"env": "lab", "tier": "1"}, want: "lab"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Pick(rows, tc.labels)
			if got == nil || got.Value != tc.want {
				t.Fatalf("Pick = %+v; want %s", got, tc.want)
			}
			// Independent of the order of the rows.
			reversed := make([]registry.Asset, len(rows))
			for i := range rows {
				reversed[len(rows)-1-i] = rows[i]
			}
			if got := Pick(reversed, tc.labels); got == nil || got.Value != tc.want {
				t.Fatalf("Pick on reversed rows = %+v; want %s", got, tc.want)
			}
		})
	}
	if got := Pick(rows[1:2], map[string]string{"site": "lab"}); got != nil {
		t.Errorf("Pick with no default and no match = %+v; want nil", got)
	}
}

// memStore holds asset rows.
type memStore []registry.Asset

func (m memStore) AssetRows(_ context.Context, names ...string) ([]registry.Asset, error) {
	var out []registry.Asset
	for _, row := range m {
		for _, n := range names {
			if row.Name == n {
				out = append(out, row)
				break
			}
		}
	}
	return out, nil
}

type memKeys struct{ keys []vault.SealedKey }

func (m *memKeys) DataKeys(context.Context) ([]vault.SealedKey, error) { return m.keys, nil }
func (m *memKeys) AddDataKey(_ context.Context, k vault.SealedKey) error {
	m.keys = append(m.keys, k)
	return nil
}
func (m *memKeys) ResealDataKeys(context.Context, []vault.SealedKey) error { return nil }

func newVault(t testing.TB) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), vault.Text{Name: "test", Value: vault.FormatKey(vault.NewKey())}, &memKeys{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sealedRow(t testing.TB, v *vault.Vault, row registry.Asset, secret string) registry.Asset {
	t.Helper()
	s, err := v.Seal([]byte(secret), registry.AssetSealContext(row.Name, row.Selector))
	if err != nil {
		t.Fatal(err)
	}
	row.Sealed = s
	row.KeyID, _ = vault.KeyOf(s)
	return row
}

func workflowOf(t testing.TB, src string) *casarev1.Workflow {
	t.Helper()
	wf := &casarev1.Workflow{}
	if err := protojson.Unmarshal([]byte(src), wf); err != nil {
		t.Fatal(err)
	}
	return wf
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	v := newVault(t)
	store := memStore{
		{Name: "mail", Type: registry.AssetText, Value: "mail.example.com"},
		{Name: "mail", Selector: "site=hq", Type: registry.AssetText, Value: "hq.example.com"},
		{Name: "port", Type: registry.AssetNumber, Value: "587"},
		sealedRow(t, v, registry.Asset{Name: "sap", Type: registry.AssetCredential, Username: "robot"}, "default-pass"),
		sealedRow(t, v, registry.Asset{Name: "sap", Selector: "site=hq", Type: registry.AssetCredential, Username: "hq-robot"}, "hq-pass"),
		sealedRow(t, v, registry.Asset{Name: "pin", Type: registry.AssetSecret}, "1234"),
	}
	wf := workflowOf(t, `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"${{ assets.mail }}:${{ assets.port }} ${{ credentials.sap.username }} ${{ credentials.sap.password }} ${{ assets.pin }}"}}]}`)
	r := &Resolver{Store: store, Vault: v}
	got, err := r.Resolve(ctx, wf, map[string]string{"site": "hq"})
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(got)
	for _, want := range []string{"hq.example.com", "587", "hq-robot", "hq-pass", "1234"} {
		if !strings.Contains(text, want) {
			t.Errorf("resolved for site=hq = %s; want %s in it", text, want)
		}
	}
	got, err = r.Resolve(ctx, wf, map[string]string{"site": "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if text := fmt.Sprint(got); !strings.Contains(text, "default-pass") || !strings.Contains(text, "mail.example.com") {
		t.Errorf("resolved for site=lab = %s; want the defaults", text)
	}

	missing := workflowOf(t, `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"${{ assets.gone }}"}}]}`)
	if _, err := r.Resolve(ctx, missing, nil); !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Resolve of a missing asset = %v; want ErrUnresolved naming it", err)
	}
}

func TestCheckUses(t *testing.T) {
	ctx := context.Background()
	store := memStore{
		{Name: "mail", Type: registry.AssetText},
		{Name: "sap", Type: registry.AssetCredential},
	}
	ok := workflowOf(t, `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"${{ assets.mail }} ${{ credentials.sap.password }}"}}]}`)
	if err := CheckUses(ctx, store, ok); err != nil {
		t.Errorf("CheckUses = %v", err)
	}
	bad := workflowOf(t, `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"${{ credentials.mail.password }} ${{ assets.nope }} ${{ assets.sap }}"}}]}`)
	err := CheckUses(ctx, store, bad)
	var perr *ProblemsError
	if !errors.As(err, &perr) || len(perr.Problems) != 3 {
		t.Fatalf("CheckUses = %v; want three problems", err)
	}
	for _, want := range []string{
		"workflow.steps[0].with.message: credentials.mail.password: asset mail is text, not a credential",
		`workflow.steps[0].with.message: assets.nope: no asset named "nope"`,
		"workflow.steps[0].with.message: assets.sap: asset sap is a credential",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckUses = %v; want %q", err, want)
		}
	}
}

// BenchmarkResolve20 resolves 20 assets for a job, half of them sealed,
// each with an override (the target: at most 1 ms).
func BenchmarkResolve20(b *testing.B) {
	ctx := context.Background()
	v := newVault(b)
	var store memStore
	var refs []string
	for i := range 10 {
		name := fmt.Sprintf("text%d", i)
		store = append(store, registry.Asset{Name: name, Type: registry.AssetText, Value: "default"},
			registry.Asset{Name: name, Selector: "site=hq", Type: registry.AssetText, Value: "hq"})
		refs = append(refs, "${{ assets."+name+" }}")
		cred := fmt.Sprintf("cred%d", i)
		store = append(store, sealedRow(b, v, registry.Asset{Name: cred, Type: registry.AssetCredential, Username: "u"}, "p"),
			sealedRow(b, v, registry.Asset{Name: cred, Selector: "site=hq", Type: registry.AssetCredential, Username: "u"}, "hq"))
		refs = append(refs, "${{ credentials."+cred+".password }}")
	}
	wf := workflowOf(b, `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"`+strings.Join(refs, " ")+`"}}]}`)
	r := &Resolver{Store: store, Vault: v}
	robot := map[string]string{"site": "hq", "os": "linux"}
	for b.Loop() {
		got, err := r.Resolve(ctx, wf, robot)
		if err != nil || len(got) != 20 {
			b.Fatal(len(got), err)
		}
	}
}

func TestForAssign(t *testing.T) {
	ctx := context.Background()
	v := newVault(t)
	store := memStore{
		{Name: "mail", Type: registry.AssetText, Value: "default"},
		{Name: "mail", Selector: "site=hq", Type: registry.AssetText, Value: "hq"},
		sealedRow(t, v, registry.Asset{Name: "sap", Type: registry.AssetCredential, Username: "u"}, "pw"),
	}
	var audits []*registry.AuditEvent
	a := NewAssigner(AssignerOptions{Store: store, Vault: v, Audit: func(_ context.Context, e *registry.AuditEvent) error {
		audits = append(audits, e)
		return nil
	}})
	job := &registry.Job{ID: "j1", Attempt: 2, Workflow: `{"name":"w","inputs":{"pin":{"type":"string","secret":true}},"steps":[{"id":"a","uses":"log","with":{"message":"${{ assets.mail }} ${{ credentials.sap.password }} ${{ inputs.pin }}"}}]}`}
	var err error
	job.SecretInputs, err = v.Seal([]byte(`{"pin":"1234"}`), registry.JobSecretSealContext(job.ID))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		inputs, assets, err := a.ForAssign(ctx, job, dispatch.AssignTarget{ID: "r1", Name: "hq1", Labels: map[string]string{"site": "hq"}})
		if err != nil {
			t.Fatal(err)
		}
		if inputs["pin"].GetStringValue() != "1234" {
			t.Errorf("secret inputs = %v", inputs)
		}
		if text := fmt.Sprint(assets); !strings.Contains(text, `"hq"`) || !strings.Contains(text, `"pw"`) {
			t.Errorf("assets = %s", text)
		}
	}
	if len(audits) != 2 || audits[0].Actor != "robot/hq1" || !strings.Contains(audits[0].Details, `"assets":["mail","sap"]`) || strings.Contains(audits[0].Details, "pw") {
		t.Errorf("audit events = %+v", audits)
	}

	// A secret input sealed for another job does not open.
	other := *job
	other.ID = "j2"
	if _, _, err := a.ForAssign(ctx, &other, dispatch.AssignTarget{Name: "hq1"}); !errors.Is(err, vault.ErrCorrupt) {
		t.Errorf("another job's secret inputs = %v; want ErrCorrupt", err)
	}
}

// BenchmarkForAssign20 is what an assignment adds for a job that reads 20
// assets, half of them sealed, each with an override: the uses of its
// workflow (cached after the first job), the rows, the opening and the
// audit event (the target: at most 1 ms).
func BenchmarkForAssign20(b *testing.B) {
	ctx := context.Background()
	v := newVault(b)
	var store memStore
	var refs []string
	for i := range 10 {
		name := fmt.Sprintf("text%d", i)
		store = append(store, registry.Asset{Name: name, Type: registry.AssetText, Value: "default"},
			registry.Asset{Name: name, Selector: "site=hq", Type: registry.AssetText, Value: "hq"})
		refs = append(refs, "${{ assets."+name+" }}")
		cred := fmt.Sprintf("cred%d", i)
		store = append(store, sealedRow(b, v, registry.Asset{Name: cred, Type: registry.AssetCredential, Username: "u"}, "p"),
			sealedRow(b, v, registry.Asset{Name: cred, Selector: "site=hq", Type: registry.AssetCredential, Username: "u"}, "hq"))
		refs = append(refs, "${{ credentials."+cred+".password }}")
	}
	a := NewAssigner(AssignerOptions{Store: store, Vault: v, Audit: func(context.Context, *registry.AuditEvent) error { return nil }})
	job := &registry.Job{ID: "j", Workflow: `{"name":"w","steps":[{"id":"a","uses":"log","with":{"message":"` + strings.Join(refs, " ") + `"}}]}`}
	robot := dispatch.AssignTarget{Name: "r", Labels: map[string]string{"site": "hq", "os": "linux"}}
	for b.Loop() {
		_, got, err := a.ForAssign(ctx, job, robot)
		if err != nil || len(got) != 20 {
			b.Fatal(len(got), err)
		}
	}
}
