package registry

import (
	"context"
	"encoding/base64"
	"fmt"

	"github.com/casarerpa/casare/server/vault"
)

// VaultStore is the registry as the vault's store of data keys.
func (r *Registry) VaultStore() vault.Store { return vaultStore{r} }

type vaultStore struct{ r *Registry }

func (s vaultStore) DataKeys(ctx context.Context) ([]vault.SealedKey, error) {
	rows, err := s.r.VaultKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]vault.SealedKey, len(rows))
	for i, row := range rows {
		sealed, err := base64.StdEncoding.DecodeString(row.Sealed)
		if err != nil {
			return nil, fmt.Errorf("data key %s: stored seal is not base64: %w", row.ID, err)
		}
		out[i] = vault.SealedKey{ID: row.ID, KEKID: row.KEKID, Sealed: sealed, CreatedAt: row.CreatedAt}
	}
	return out, nil
}

func (s vaultStore) AddDataKey(ctx context.Context, k vault.SealedKey) error {
	return s.r.AddVaultKey(ctx, &VaultKey{ID: k.ID, KEKID: k.KEKID, Sealed: base64.StdEncoding.EncodeToString(k.Sealed), CreatedAt: k.CreatedAt})
}

func (s vaultStore) ResealDataKeys(ctx context.Context, keys []vault.SealedKey) error {
	rows := make([]VaultKey, len(keys))
	for i, k := range keys {
		rows[i] = VaultKey{ID: k.ID, KEKID: k.KEKID, Sealed: base64.StdEncoding.EncodeToString(k.Sealed)}
	}
	return s.r.ResealVaultKeys(ctx, rows)
}

var (
	_ vault.Sealed = AssetSeals{}
	_ vault.Sealed = JobSecretSeals{}
)
