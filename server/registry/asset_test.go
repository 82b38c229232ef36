package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/casarerpa/casare/server/vault"
)

func TestAssets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		put := func(a Asset) bool {
			t.Helper()
			a.UpdatedBy = "tester"
			created, err := r.PutAsset(ctx, &a, &AuditEvent{Actor: "tester", Action: "put", Target: "asset/" + a.Name, Outcome: "ok"})
			if err != nil {
				t.Fatal(err)
			}
			return created
		}
		if !put(Asset{Name: "mail", Type: AssetText, Value: "mail.example.com"}) {
			t.Error("first put did not create")
		}
		put(Asset{Name: "mail", Selector: "site=hq", Type: AssetText, Value: "hq.example.com"})
		if put(Asset{Name: "mail", Selector: "site=hq", Type: AssetText, Value: "hq2.example.com"}) {
			t.Error("second put of an override created a row")
		}
		put(Asset{Name: "sap", Type: AssetCredential, Username: "robot", Sealed: "v1.dk-1.xxx", KeyID: "dk-1"})

		_, err := r.PutAsset(ctx, &Asset{Name: "mail", Selector: "site=lab", Type: AssetNumber, Value: "1"}, nil)
		if !errors.Is(err, ErrConflict) {
			t.Errorf("an override of another type = %v; want ErrConflict", err)
		}

		rows, err := r.AssetRows(ctx, "mail", "nothing")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 || rows[0].Selector != "" || rows[1].Value != "hq2.example.com" {
			t.Errorf("AssetRows = %+v", rows)
		}
		counts, err := r.CountAssets(ctx)
		if err != nil || counts[AssetText] != 1 || counts[AssetCredential] != 1 {
			t.Errorf("CountAssets = %v, %v; want 1 text (with its override) and 1 credential", counts, err)
		}

		first, next, err := r.ListAssets(ctx, Page{Size: 2})
		if err != nil || len(first) != 2 || next == "" {
			t.Fatalf("ListAssets page 1 = %d, %q, %v", len(first), next, err)
		}
		rest, next, err := r.ListAssets(ctx, Page{Size: 2, Token: next})
		if err != nil || len(rest) != 1 || next != "" || rest[0].Name != "sap" {
			t.Fatalf("ListAssets page 2 = %+v, %q, %v", rest, next, err)
		}

		if _, err := r.DeleteAsset(ctx, "mail", "site=lab", false, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete of a missing override = %v; want ErrNotFound", err)
		}
		if n, err := r.DeleteAsset(ctx, "mail", "site=hq", false, nil); err != nil || n != 1 {
			t.Errorf("delete of the override = %d, %v", n, err)
		}
		if n, err := r.DeleteAsset(ctx, "mail", "", true, nil); err != nil || n != 1 {
			t.Errorf("delete of the asset = %d, %v", n, err)
		}
	})
}

// TestVaultOnRegistry seals assets and a job's secret inputs through the
// registry's store, rotates, and checks that the plaintext is nowhere in
// the SQLite file.
func TestVaultOnRegistry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		oldKey, newKey := vault.NewKey(), vault.NewKey()
		src := func(keys ...[]byte) vault.Text {
			var lines []string
			for _, k := range keys {
				lines = append(lines, vault.FormatKey(k))
			}
			return vault.Text{Name: "test key", Value: strings.Join(lines, "\n")}
		}
		v, err := vault.Open(ctx, src(oldKey), r.VaultStore())
		if err != nil {
			t.Fatal(err)
		}
		const password = "correct-horse-battery-staple"
		sealed, err := v.Seal([]byte(password), AssetSealContext("sap", "site=hq"))
		if err != nil {
			t.Fatal(err)
		}
		keyID, _ := vault.KeyOf(sealed)
		if _, err := r.PutAsset(ctx, &Asset{Name: "sap", Selector: "site=hq", Type: AssetCredential, Username: "u", Sealed: sealed, KeyID: keyID}, nil); err != nil {
			t.Fatal(err)
		}
		job := newJob("w")
		const secretInput = "s3cr3t-input-value"
		job.SecretInputs, err = v.Seal([]byte(`{"pin":"`+secretInput+`"}`), JobSecretSealContext(job.ID))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.CreateJob(ctx, job, nil); err != nil {
			t.Fatal(err)
		}

		if _, err := vault.Open(ctx, src(newKey), r.VaultStore()); !errors.Is(err, vault.ErrWrongKey) {
			t.Fatalf("open with another key = %v; want ErrWrongKey", err)
		}
		both, err := vault.Open(ctx, src(newKey, oldKey), r.VaultStore())
		if err != nil {
			t.Fatal(err)
		}
		res, err := both.Rotate(ctx, AssetSeals{r}, JobSecretSeals{r})
		if err != nil {
			t.Fatal(err)
		}
		if res.Values != 2 {
			t.Errorf("rotation re-sealed %d values, want 2", res.Values)
		}
		only, err := vault.Open(ctx, src(newKey), r.VaultStore())
		if err != nil {
			t.Fatal(err)
		}
		rows, _ := r.AssetRows(ctx, "sap")
		if rows[0].KeyID != res.DataKey {
			t.Errorf("asset key id = %s, want %s", rows[0].KeyID, res.DataKey)
		}
		got, err := only.Open(ctx, rows[0].Sealed, AssetSealContext("sap", "site=hq"))
		if err != nil || string(got) != password {
			t.Errorf("asset after rotation = %q, %v", got, err)
		}
		stored, err := r.GetJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err = only.Open(ctx, stored.SecretInputs, JobSecretSealContext(job.ID))
		if err != nil || !strings.Contains(string(got), secretInput) {
			t.Errorf("secret inputs after rotation = %q, %v", got, err)
		}

		// What the database holds, as text: neither plaintext is there.
		for _, table := range []string{"assets", "jobs", "vault_keys", "audit_events"} {
			rows, err := r.db.QueryContext(ctx, "SELECT * FROM "+table)
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				text := fmt.Sprint(vals...)
				for _, plain := range []string{password, secretInput} {
					if strings.Contains(text, plain) {
						t.Errorf("table %s holds %q in plain text", table, plain)
					}
				}
			}
			rows.Close()
		}
	})
}

// TestSQLiteFileHoldsNoPlaintext searches the raw bytes of the SQLite
// files for a sealed password.
func TestSQLiteFileHoldsNoPlaintext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	r, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, vault.Text{Name: "test key", Value: vault.FormatKey(vault.NewKey())}, r.VaultStore())
	if err != nil {
		t.Fatal(err)
	}
	const password = "correct-horse-battery-staple"
	sealed, _ := v.Seal([]byte(password), AssetSealContext("sap", ""))
	keyID, _ := vault.KeyOf(sealed)
	if _, err := r.PutAsset(ctx, &Asset{Name: "sap", Type: AssetCredential, Username: "u", Sealed: sealed, KeyID: keyID}, nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(password)) {
			t.Errorf("%s holds the password in plain text", f)
		}
	}
}
