package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/casarerpa/casare/server/vault"
)

// AssetSealContext is the context an asset's sealed value is bound to, so
// a sealed value copied to another asset or override does not open.
func AssetSealContext(name, selector string) string {
	return "asset/" + name + "/" + selector
}

// PutAsset stores a, creating or replacing the row of its name and
// selector, with the audit event. ErrConflict when other rows of the name
// have another type: the overrides of an asset share its type.
func (r *Registry) PutAsset(ctx context.Context, a *Asset, audit *AuditEvent) (created bool, err error) {
	at := now()
	a.UpdatedAt = at
	err = r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var rows []Asset
		if err := tx.NewSelect().Model(&rows).Column("selector", "type", "created_at").
			Where("name = ?", a.Name).Scan(ctx); err != nil {
			return err
		}
		created = true
		a.CreatedAt = at
		for _, row := range rows {
			if row.Type != a.Type {
				return fmt.Errorf("%w: asset %s is of type %s; delete it to change its type", ErrConflict, a.Name, row.Type)
			}
			if row.Selector == a.Selector {
				created = false
				a.CreatedAt = row.CreatedAt
			}
		}
		if _, err := tx.NewInsert().Model(a).
			On("CONFLICT (name, selector) DO UPDATE").
			Set("type = EXCLUDED.type").
			Set("value = EXCLUDED.value").
			Set("username = EXCLUDED.username").
			Set("sealed = EXCLUDED.sealed").
			Set("key_id = EXCLUDED.key_id").
			Set("updated_at = EXCLUDED.updated_at").
			Set("updated_by = EXCLUDED.updated_by").
			Exec(ctx); err != nil {
			return err
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return false, fmt.Errorf("put asset %s: %w", a.Name, err)
	}
	return created, nil
}

// AssetRows returns every row of each name (the value and its overrides),
// ordered by name then selector, the value without a selector first.
// Names without rows are left out.
func (r *Registry) AssetRows(ctx context.Context, names ...string) ([]Asset, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var rows []Asset
	err := r.db.NewSelect().Model(&rows).Where("name IN (?)", bun.In(names)).
		OrderExpr("name, selector").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("read assets: %w", err)
	}
	return rows, nil
}

// ListAssets returns the rows of every asset, ordered by name then
// selector.
func (r *Registry) ListAssets(ctx context.Context, p Page) ([]Asset, string, error) {
	query := []any{"assets"}
	after, err := decodePageToken(p.Token, query...)
	if err != nil {
		return nil, "", fmt.Errorf("list assets: %w", err)
	}
	var rows []Asset
	q := r.db.NewSelect().Model(&rows)
	if after != "" {
		name, selector, _ := strings.Cut(after, "\x00")
		q = q.Where("name > ? OR (name = ? AND selector > ?)", name, name, selector)
	}
	size := p.size()
	if err := q.OrderExpr("name, selector").Limit(int64(size + 1)).Scan(ctx); err != nil {
		return nil, "", fmt.Errorf("list assets: %w", err)
	}
	next := ""
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1]
		next = encodePageToken(last.Name+"\x00"+last.Selector, query...)
	}
	return rows, next, nil
}

// DeleteAsset deletes the override of name for selector, or with all set
// the asset with every override, and writes the audit event. ErrNotFound
// when nothing matched.
func (r *Registry) DeleteAsset(ctx context.Context, name, selector string, all bool, audit *AuditEvent) (int, error) {
	var n int64
	err := r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewDelete().Model((*Asset)(nil)).Where("name = ?", name)
		if !all {
			q = q.Where("selector = ?", selector)
		}
		res, err := q.Exec(ctx)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return insertAudit(ctx, tx, audit)
	})
	if err != nil {
		return 0, fmt.Errorf("delete asset %s: %w", name, err)
	}
	return int(n), nil
}

// CountAssets counts assets (names, not overrides) by type.
func (r *Registry) CountAssets(ctx context.Context) (map[AssetType]int, error) {
	var rows []struct {
		Type AssetType `bun:"type"`
		N    int       `bun:"n"`
	}
	err := r.db.NewSelect().Model((*Asset)(nil)).ColumnExpr("type, COUNT(DISTINCT name) AS n").
		Group("type").Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("count assets: %w", err)
	}
	out := make(map[AssetType]int, len(rows))
	for _, row := range rows {
		out[row.Type] = row.N
	}
	return out, nil
}

// AssetSeals re-seals the assets' sealed values (vault.Sealed).
type AssetSeals struct{ R *Registry }

// Reseal re-seals every sealed asset value, each row in its own
// transaction that rereads it, so a value changed meanwhile is kept.
func (s AssetSeals) Reseal(ctx context.Context, reseal func(sealed, context string) (string, error)) (int, error) {
	var keys []Asset
	if err := s.R.db.NewSelect().Model(&keys).Column("name", "selector").
		Where("sealed <> ''").OrderExpr("name, selector").Scan(ctx); err != nil {
		return 0, fmt.Errorf("list sealed assets: %w", err)
	}
	n := 0
	for _, k := range keys {
		err := s.R.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			row := new(Asset)
			err := s.R.lockRow(ctx, tx.NewSelect().Model(row).Where("name = ? AND selector = ?", k.Name, k.Selector))
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if row.Sealed == "" {
				return nil
			}
			out, err := reseal(row.Sealed, AssetSealContext(row.Name, row.Selector))
			if err != nil {
				return fmt.Errorf("asset %s (%s): %w", row.Name, row.Selector, err)
			}
			keyID, err := vault.KeyOf(out)
			if err != nil {
				return err
			}
			_, err = tx.NewUpdate().Model((*Asset)(nil)).Set("sealed = ?", out).Set("key_id = ?", keyID).
				Where("name = ? AND selector = ?", row.Name, row.Selector).Exec(ctx)
			if err == nil {
				n++
			}
			return err
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// JobSecretSeals re-seals the jobs' secret inputs (vault.Sealed).
type JobSecretSeals struct{ R *Registry }

// JobSecretSealContext is the context a job's secret inputs are sealed
// with.
func JobSecretSealContext(jobID string) string { return "job/" + jobID + "/secret-inputs" }

// Reseal re-seals the secret inputs of every job that has them.
func (s JobSecretSeals) Reseal(ctx context.Context, reseal func(sealed, context string) (string, error)) (int, error) {
	n, after := 0, ""
	for {
		var jobs []Job
		q := s.R.db.NewSelect().Model(&jobs).Column("id", "secret_inputs").Where("secret_inputs <> ''")
		if after != "" {
			q = q.Where("id > ?", after)
		}
		if err := q.OrderExpr("id").Limit(500).Scan(ctx); err != nil {
			return n, fmt.Errorf("list jobs with secret inputs: %w", err)
		}
		if len(jobs) == 0 {
			return n, nil
		}
		for _, j := range jobs {
			out, err := reseal(j.SecretInputs, JobSecretSealContext(j.ID))
			if err != nil {
				return n, fmt.Errorf("job %s: %w", j.ID, err)
			}
			// Only if unchanged since it was read: the sealed text is
			// written once at submit, so this guards a retention delete.
			if _, err := s.R.db.NewUpdate().Model((*Job)(nil)).Set("secret_inputs = ?", out).
				Where("id = ? AND secret_inputs = ?", j.ID, j.SecretInputs).Exec(ctx); err != nil {
				return n, fmt.Errorf("job %s: %w", j.ID, err)
			}
			n++
		}
		after = jobs[len(jobs)-1].ID
	}
}

// VaultKeys stores the vault's data keys (vault.Store through an adapter
// in the server, which keeps this package free of the vault's types).
func (r *Registry) VaultKeys(ctx context.Context) ([]VaultKey, error) {
	var keys []VaultKey
	if err := r.db.NewSelect().Model(&keys).OrderExpr("created_at, id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("read data keys: %w", err)
	}
	return keys, nil
}

// AddVaultKey stores a new data key.
func (r *Registry) AddVaultKey(ctx context.Context, k *VaultKey) error {
	k.CreatedAt = normalize(k.CreatedAt)
	if _, err := r.db.NewInsert().Model(k).Exec(ctx); err != nil {
		return fmt.Errorf("store data key %s: %w", k.ID, err)
	}
	return nil
}

// ResealVaultKeys replaces the seal of each key, in one transaction.
func (r *Registry) ResealVaultKeys(ctx context.Context, keys []VaultKey) error {
	return r.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, k := range keys {
			res, err := tx.NewUpdate().Model((*VaultKey)(nil)).Set("kek_id = ?", k.KEKID).Set("sealed = ?", k.Sealed).
				Where("id = ?", k.ID).Exec(ctx)
			if err != nil {
				return fmt.Errorf("re-seal data key %s: %w", k.ID, err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return fmt.Errorf("re-seal data key %s: %w", k.ID, ErrNotFound)
			}
		}
		return nil
	})
}
